//! The attach service: the agent's side of `netwarden-cni`. It keeps the cluster state in a
//! [`Store`], listens on a root-only unix socket, and performs ADD (cluster network first,
//! then each requested network, network-status written through the cluster source), DEL,
//! CHECK, STATUS and GC for the runtime.
pub mod config;
pub mod error;
pub mod server;
pub mod service;

use std::{collections::BTreeSet, sync::Arc};

use futures::StreamExt;

pub use config::AttachConfig;
pub use error::AttachError;
pub use service::AttachService;

use crate::cluster::{
    source::{ClusterSource, SourceError},
    store::Store,
    ClusterEvent, Kind,
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cluster state: the source ended before listing {0:?}")]
    SourceEnded(Vec<Kind>),
    #[error("attach socket {socket}: {source}")]
    Socket {
        socket: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Follows `source` into a store, and once pods, namespaces and NADs are listed (so the
/// agent answers pings only when it can serve an ADD), serves the socket until it fails.
pub async fn run<S: ClusterSource + Send + Sync + 'static>(
    config: AttachConfig,
    source: S,
) -> Result<(), RunError> {
    let store = Store::new();
    let mut events = source.events();
    let mut unlisted = BTreeSet::from([
        Kind::Pod,
        Kind::Namespace,
        Kind::NetworkAttachmentDefinition,
    ]);
    while !unlisted.is_empty() {
        match events.next().await {
            Some(Ok(event)) => {
                if let ClusterEvent::Resynced(kind, _) = &event {
                    unlisted.remove(kind);
                }
                store.apply(event);
            }
            Some(Err(problem)) => log_problem(&problem),
            None => return Err(RunError::SourceEnded(unlisted.into_iter().collect())),
        }
    }
    let following = store.clone();
    tokio::spawn(async move { following.follow(events).await });
    let socket = config.socket.clone();
    let socket_error = |source| RunError::Socket {
        socket: socket.clone(),
        source,
    };
    let listener = server::bind(&socket).map_err(socket_error)?;
    tracing::info!("attach service listening on {}", socket.display());
    let service = Arc::new(AttachService::new(config, store, source));
    server::serve(service, listener).await.map_err(socket_error)
}

fn log_problem(problem: &SourceError) {
    tracing::warn!("cluster state: {problem}");
}
