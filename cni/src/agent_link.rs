//! The wire protocol between `netwarden-cni` and the agent's attach service.
//!
//! One unix-socket connection carries one exchange: the binary writes one request, the
//! agent writes one response, each a single line of JSON (serde_json never emits a raw
//! newline) at most [`MAX_MESSAGE`] bytes long. Requests are [`AgentRequest::Ping`] (the
//! readiness probe: the agent answers [`AgentResponse::Pong`] once it serves requests) or
//! [`AgentRequest::Cni`] (the runtime's environment, typed, and its stdin config); the
//! answer to the latter is what the binary prints: [`AgentResponse::Success`] (stdout,
//! exit 0) or [`AgentResponse::Failure`] (a CNI error on stdout, exit 1).
use std::{
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::protocol::{CniError, Request};

/// Where the agent listens unless the netwarden network config says `"socket"`.
pub const DEFAULT_SOCKET: &str = "/run/netwarden/cni.sock";

/// How often a client tries to connect while the agent is not listening yet.
const RETRY: Duration = Duration::from_millis(25);

/// The largest message either side accepts (a config with a big conflist fits easily).
pub const MAX_MESSAGE: usize = 4 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentRequest {
    Ping,
    Cni {
        request: Request,
        /// The runtime's stdin: the netwarden network config.
        config: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentResponse {
    Pong,
    /// Exit 0; `stdout` (when present) is printed as is.
    Success {
        stdout: Option<String>,
    },
    /// Exit 1; the error is printed as CNI error JSON.
    Failure {
        error: CniError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("agent socket {socket}: cannot connect: {source}")]
    Connect { socket: PathBuf, source: io::Error },
    #[error("agent socket {socket}: {source}")]
    Io { socket: PathBuf, source: io::Error },
    #[error("agent socket {socket}: closed without an answer")]
    Closed { socket: PathBuf },
    #[error("agent socket {socket}: not a netwarden message: {source}")]
    Decode {
        socket: PathBuf,
        source: serde_json::Error,
    },
    #[error("agent socket {socket}: the agent answered {answer:?} to a ping")]
    NotPong {
        socket: PathBuf,
        answer: AgentResponse,
    },
    #[error("agent socket {socket}: no answer to a ping within {waited:?} (last problem: {last})")]
    NotReady {
        socket: PathBuf,
        waited: Duration,
        last: Box<LinkError>,
    },
}

/// One message as it goes on the wire: JSON and a newline.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(message).expect("agent link messages always serialize");
    line.push(b'\n');
    line
}

/// Reads one line of at most [`MAX_MESSAGE`] bytes; None at end of stream.
pub fn read_line(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    reader
        .take(MAX_MESSAGE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message longer than {MAX_MESSAGE} bytes"),
        ));
    }
    Ok(Some(line))
}

/// Parses one line written by [`encode`].
pub fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(line)
}

/// The binary's side: one connection per exchange.
#[derive(Clone, Debug)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `request` and waits for the answer, however long the agent takes (the
    /// runtime bounds a CNI call itself).
    pub fn call(&self, request: &AgentRequest) -> Result<AgentResponse, LinkError> {
        let stream = self.connect()?;
        self.exchange(stream, request)
    }

    /// [`call`](Self::call) once the agent accepts a connection, trying for at most
    /// `limit`. The agent listens only once it is ready (cluster state listed, serving),
    /// so a connection is the readiness probe: a ready agent costs no extra round trip.
    pub fn call_when_ready(
        &self,
        request: &AgentRequest,
        limit: Duration,
    ) -> Result<AgentResponse, LinkError> {
        let started = Instant::now();
        loop {
            match self.connect() {
                Ok(stream) => return self.exchange(stream, request),
                Err(last) if started.elapsed() >= limit => {
                    return Err(LinkError::NotReady {
                        socket: self.socket.clone(),
                        waited: limit,
                        last: Box::new(last),
                    })
                }
                // Not listening yet (starting, restarting): the socket appears when it is.
                Err(_) => std::thread::sleep(RETRY),
            }
        }
    }

    fn connect(&self) -> Result<UnixStream, LinkError> {
        UnixStream::connect(&self.socket).map_err(|source| LinkError::Connect {
            socket: self.socket.clone(),
            source,
        })
    }

    fn exchange(
        &self,
        mut stream: UnixStream,
        request: &AgentRequest,
    ) -> Result<AgentResponse, LinkError> {
        let io = |source| LinkError::Io {
            socket: self.socket.clone(),
            source,
        };
        stream.write_all(&encode(request)).map_err(io)?;
        let line = read_line(&mut BufReader::new(&stream))
            .map_err(io)?
            .ok_or_else(|| LinkError::Closed {
                socket: self.socket.clone(),
            })?;
        decode(&line).map_err(|source| LinkError::Decode {
            socket: self.socket.clone(),
            source,
        })
    }

    /// Pings until the agent answers or `limit` has passed.
    pub fn wait_ready(&self, limit: Duration) -> Result<(), LinkError> {
        match self.call_when_ready(&AgentRequest::Ping, limit)? {
            AgentResponse::Pong => Ok(()),
            answer => Err(LinkError::NotPong {
                socket: self.socket.clone(),
                answer,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::protocol::{ErrorCode, Version};

    #[test]
    fn messages_are_one_json_line_each() {
        let request = AgentRequest::Cni {
            request: Request::from_vars(|k| (k == "CNI_COMMAND").then(|| "VERSION".into()))
                .unwrap(),
            config: "{\n\"cniVersion\": \"1.0.0\"\n}".into(),
        };
        let line = encode(&request);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(decode::<AgentRequest>(&line).unwrap(), request);
        assert_eq!(encode(&AgentRequest::Ping), b"{\"kind\":\"ping\"}\n");
        let failure = AgentResponse::Failure {
            error: CniError::new(Version::V1_0_0, ErrorCode::TryAgainLater, "busy"),
        };
        assert_eq!(decode::<AgentResponse>(&encode(&failure)).unwrap(), failure);
    }

    #[test]
    fn oversized_lines_are_refused() {
        let big = vec![b'x'; MAX_MESSAGE + 10];
        let error = read_line(&mut &big[..]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(read_line(&mut &b""[..]).unwrap(), None);
    }

    #[test]
    fn a_client_pings_and_waits_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let client = AgentClient::new(&socket);
        let error = client
            .wait_ready(Duration::from_millis(250))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("agent.sock") && error.contains("cannot connect"),
            "{error}"
        );

        let listener = UnixListener::bind(&socket).unwrap();
        let agent = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let line = read_line(&mut BufReader::new(&stream)).unwrap().unwrap();
            assert_eq!(decode::<AgentRequest>(&line).unwrap(), AgentRequest::Ping);
            (&stream).write_all(&encode(&AgentResponse::Pong)).unwrap();
        });
        client.wait_ready(Duration::from_secs(5)).unwrap();
        agent.join().unwrap();
    }
}
