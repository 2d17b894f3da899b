//! `netwarden explain` and `netwarden flows`: plain HTTP/1.0 GETs to a running agent (no
//! chunked encoding: the answer ends when the agent closes the connection).
use std::fmt;

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use super::api::{ExplainAnswer, ExplainQuery, FlowRecord};

pub const DEFAULT_AGENT: &str = "http://127.0.0.1:9465";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--agent {0:?}: expected http://HOST:PORT")]
    BadUrl(String),
    #[error("agent at {url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("agent at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: String,
        body: String,
    },
    #[error("agent at {url} sent something that is not {what}: {problem}")]
    Decode {
        url: String,
        what: &'static str,
        problem: String,
    },
}

/// Asks the agent why a flow passes or not.
pub async fn explain(agent: &str, query: &ExplainQuery) -> Result<ExplainAnswer, ClientError> {
    let path = format!(
        "/explain?from={}&to={}&network={}&port={}&protocol={}",
        encode(&query.from),
        encode(&query.to),
        encode(&query.network),
        query.port,
        encode(&query.protocol)
    );
    let mut body = BufReader::new(get(agent, &path).await?);
    let mut text = String::new();
    body.read_to_string(&mut text).await.map_err(io(agent))?;
    serde_json::from_str(&text).map_err(|e| ClientError::Decode {
        url: agent.into(),
        what: "an explanation",
        problem: e.to_string(),
    })
}

/// Prints every verdict event the agent streams, one line each, until it closes.
pub async fn flows(agent: &str, mut out: impl FnMut(&FlowRecord)) -> Result<(), ClientError> {
    let mut lines = BufReader::new(get(agent, "/flows").await?).lines();
    while let Some(line) = lines.next_line().await.map_err(io(agent))? {
        if line.trim().is_empty() {
            continue;
        }
        let record: FlowRecord = serde_json::from_str(&line).map_err(|e| ClientError::Decode {
            url: agent.into(),
            what: "a flow record",
            problem: e.to_string(),
        })?;
        out(&record);
    }
    Ok(())
}

/// Sends the request and returns the connection positioned at the body, once the status
/// is 200.
async fn get(agent: &str, path: &str) -> Result<BufReader<TcpStream>, ClientError> {
    let authority = agent
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| ClientError::BadUrl(agent.into()))?;
    let mut stream = TcpStream::connect(authority).await.map_err(io(agent))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io(agent))?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).await.map_err(io(agent))?;
    loop {
        let mut header = String::new();
        let read = reader.read_line(&mut header).await.map_err(io(agent))?;
        if read == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let status = status.trim().to_owned();
    if status.split_whitespace().nth(1) != Some("200") {
        let mut body = String::new();
        reader.read_to_string(&mut body).await.map_err(io(agent))?;
        return Err(ClientError::Status {
            url: agent.into(),
            status,
            body: body.trim().into(),
        });
    }
    Ok(reader)
}

fn io(agent: &str) -> impl Fn(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        url: agent.into(),
        source,
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(value: &str) -> impl fmt::Display + '_ {
    struct Encoded<'a>(&'a str);
    impl fmt::Display for Encoded<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for byte in self.0.bytes() {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    write!(f, "{}", byte as char)?;
                } else {
                    write!(f, "%{byte:02X}")?;
                }
            }
            Ok(())
        }
    }
    Encoded(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("default/a b").to_string(), "default%2Fa%20b");
        assert_eq!(encode("x-y.z_~").to_string(), "x-y.z_~");
    }

    #[tokio::test]
    async fn a_url_without_http_scheme_is_refused() {
        let error = flows("127.0.0.1:9465", |_| {}).await.unwrap_err();
        assert!(
            error.to_string().contains("expected http://HOST:PORT"),
            "{error}"
        );
    }
}
