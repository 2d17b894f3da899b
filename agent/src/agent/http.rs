//! The agent's HTTP endpoint: `/healthz` (alive), `/readyz` (listed, loaded, serving),
//! `/metrics` (Prometheus text), `/explain?from&to&network&port&protocol` (JSON) and
//! `/flows` (verdict events as newline-delimited JSON, until the client goes).
use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;

use super::{
    api::{ExplainAnswer, ExplainQuery},
    AgentState,
};
use crate::{
    cluster::objects::{cluster_network, PodKey},
    datapath::rules::Protocol,
    policy::Flow,
};

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/explain", get(explain))
        .route("/flows", get(flows))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AgentState>>) -> Response {
    match state.not_ready() {
        None => "ready\n".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AgentState>>) -> Response {
    let refreshed = {
        let mut enforcer = state.enforcer.lock().await;
        enforcer.refresh(&state.metrics)
    };
    if let Err(problem) = refreshed {
        tracing::warn!("metrics: reading the datapath: {problem}");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn explain(
    State(state): State<Arc<AgentState>>,
    Query(query): Query<ExplainQuery>,
) -> Response {
    let flow = match flow_of(&query) {
        Ok(flow) => flow,
        Err(problem) => return (StatusCode::BAD_REQUEST, format!("{problem}\n")).into_response(),
    };
    let explanation = state.enforcer.lock().await.explain(&flow);
    Json(ExplainAnswer::from(&explanation)).into_response()
}

fn flow_of(query: &ExplainQuery) -> Result<Flow, String> {
    let pod = |field: &str, value: &str| {
        value
            .split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
            .map(|(namespace, name)| PodKey {
                namespace: namespace.into(),
                name: name.into(),
            })
            .ok_or_else(|| format!("{field}: {value:?} is not NAMESPACE/POD"))
    };
    let protocol = match query.protocol.to_ascii_uppercase().as_str() {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        other => return Err(format!("protocol: {other:?} is not TCP, UDP or SCTP")),
    };
    if query.port == 0 {
        return Err("port: must be 1-65535".into());
    }
    Ok(Flow {
        from: pod("from", &query.from)?,
        to: pod("to", &query.to)?,
        network: if query.network.is_empty() {
            cluster_network()
        } else {
            query.network.parse().map_err(|e| format!("network: {e}"))?
        },
        protocol,
        port: query.port,
    })
}

async fn flows(State(state): State<Arc<AgentState>>) -> Response {
    let receiver = state.flows.subscribe();
    let dropped = state.metrics.flow_records_dropped.clone();
    // A heartbeat line keeps a quiet stream from looking dead to proxies; clients skip it.
    let lines = futures::stream::unfold(receiver, move |mut receiver| {
        let dropped = dropped.clone();
        async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(15), receiver.recv()).await {
                    Err(_) => return Some(("\n".to_owned(), receiver)),
                    Ok(Ok(record)) => {
                        let mut line = serde_json::to_string(&record).expect("records serialize");
                        line.push('\n');
                        return Some((line, receiver));
                    }
                    Ok(Err(RecvError::Lagged(missed))) => {
                        dropped.inc_by(missed);
                    }
                    Ok(Err(RecvError::Closed)) => return None,
                }
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(from: &str, to: &str, network: &str, port: u16, protocol: &str) -> ExplainQuery {
        ExplainQuery {
            from: from.into(),
            to: to.into(),
            network: network.into(),
            port,
            protocol: protocol.into(),
        }
    }

    #[test]
    fn an_explain_query_becomes_a_flow() {
        let flow = flow_of(&query("dev/a", "dev/b", "dev/macvlan-conf", 6379, "tcp")).unwrap();
        assert_eq!(flow.from.to_string(), "dev/a");
        assert_eq!(flow.to.to_string(), "dev/b");
        assert_eq!(flow.network.to_string(), "dev/macvlan-conf");
        assert_eq!((flow.protocol, flow.port), (Protocol::Tcp, 6379));
        let flow = flow_of(&query("dev/a", "dev/b", "", 80, "TCP")).unwrap();
        assert_eq!(
            flow.network,
            cluster_network(),
            "no network: the cluster network"
        );
    }

    #[test]
    fn a_bad_explain_query_names_the_field() {
        let cases = [
            (query("a", "dev/b", "dev/n", 80, "TCP"), "from"),
            (query("dev/a", "dev/b/c", "dev/n", 80, "TCP"), "to"),
            (query("dev/a", "dev/b", "n", 80, "TCP"), "network"),
            (query("dev/a", "dev/b", "dev/n", 0, "TCP"), "port"),
            (query("dev/a", "dev/b", "dev/n", 80, "ICMP"), "protocol"),
        ];
        for (query, field) in cases {
            let error = flow_of(&query).unwrap_err();
            assert!(error.starts_with(field), "{query:?}: {error}");
        }
    }
}
