//! `netwarden agent`: one per node. Cluster state flows through the policy engine into the
//! datapath (observe -> compute -> apply); the attach service serves `netwarden-cni` and
//! admits a pod's interfaces only once they are enforced on; a periodic reconcile repairs
//! drift; an HTTP endpoint serves health, metrics, `explain` and `flows`.
pub mod api;
pub mod client;
pub mod config;
mod endpoints;
mod enforcer;
mod http;
mod metrics;

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use netwarden_cni::cache::{Cache, CacheError};
use tokio::sync::{broadcast, Mutex};

pub use config::{AgentConfig, LogFormat, Overrides};
pub use enforcer::{EnforceError, Enforcer};
pub use metrics::Metrics;

use crate::{
    attach::{server, AttachService},
    cluster::{
        source::{ClusterSource, NodeName, SourceError},
        store::Store,
        ClusterEvent, Kind,
    },
    datapath::{
        pins::PinRoot, Datapath, DatapathError, DatapathOptions, TableSnapshot, VerdictEvents,
    },
    policy::{Engine, EngineConfig},
};
use api::FlowRecord;
use endpoints::Endpoints;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("datapath: {0}")]
    Datapath(#[from] DatapathError),
    #[error("reading the sandbox cache: {0}")]
    Cache(#[from] CacheError),
    #[error("cluster state: {0}")]
    Source(#[from] SourceError),
    #[error("cluster state: the source ended before listing {0:?}")]
    SourceEnded(Vec<Kind>),
    #[error("HTTP endpoint {address}: {source}")]
    Http {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("attach socket {socket}: {source}")]
    Socket {
        socket: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// What the agent's tasks share.
pub struct AgentState {
    pub enforcer: Mutex<Enforcer>,
    pub metrics: Metrics,
    /// Verdict events for `/flows` readers.
    pub flows: broadcast::Sender<FlowRecord>,
    listed: AtomicBool,
    serving: AtomicBool,
}

impl AgentState {
    /// Why the agent is not ready, if it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.listed.load(Ordering::Acquire) {
            Some("cluster state not listed yet")
        } else if !self.serving.load(Ordering::Acquire) {
            Some("attach socket not serving yet")
        } else {
            None
        }
    }
}

/// Runs the agent until the attach socket or the HTTP endpoint fails.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let mut datapath = Datapath::load_with(
        PinRoot::new(&config.bpffs),
        DatapathOptions {
            pool_size: config.datapath_pool_size,
        },
    )?;
    datapath.set_attach_mode(config.attach_mode);
    let verdicts = datapath.events()?;
    let cache = Cache::new(&config.cache_dir);
    // This agent is the cache's only writer, and it has not written yet.
    let abandoned = cache.remove_abandoned_writes()?;
    if abandoned > 0 {
        tracing::info!("removed {abandoned} unfinished cache writes of an earlier run");
    }
    let endpoints = Endpoints::from_cache(&cache, config.cluster_network_policy)?;
    let engine = Engine::new(EngineConfig {
        node: config.node.clone(),
        standard_policy_networks: config.standard_policy_networks(),
    });
    let state = Arc::new(AgentState {
        enforcer: Mutex::new(Enforcer::new(engine, datapath, endpoints)),
        metrics: Metrics::default(),
        flows: broadcast::channel(1024).0,
        listed: AtomicBool::new(false),
        serving: AtomicBool::new(false),
    });
    let address = config.metrics_address;
    let http_error = |source| AgentError::Http { address, source };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(http_error)?;
    let http = axum::serve(listener, http::router(Arc::clone(&state)));
    let http = tokio::spawn(async move { http.await });
    tracing::info!(%address, "HTTP endpoint serving");

    let source = config.cluster.open(NodeName(config.node.clone())).await?;
    let store = Store::new();
    let mut events = source.events();
    let mut unlisted = BTreeSet::from([
        Kind::Pod,
        Kind::Namespace,
        Kind::NetworkAttachmentDefinition,
        Kind::MultiNetworkPolicy,
        Kind::NetworkPolicy,
    ]);
    while !unlisted.is_empty() {
        match events.next().await {
            Some(Ok(event)) => {
                if let ClusterEvent::Resynced(kind, _) = &event {
                    unlisted.remove(kind);
                }
                store.apply(event.clone());
                state.enforcer.lock().await.learn(event);
            }
            Some(Err(problem)) => tracing::warn!("cluster state: {problem}"),
            None => return Err(AgentError::SourceEnded(unlisted.into_iter().collect())),
        }
    }
    // Every kind is known: adopt the interfaces of earlier runs and program them.
    reconcile(&state).await;
    state.listed.store(true, Ordering::Release);
    tracing::info!("cluster state listed; enforcing");

    tokio::spawn(follow(Arc::clone(&state), store.clone(), events));
    tokio::spawn(reconcile_every(
        Arc::clone(&state),
        config.reconcile_interval(),
    ));
    tokio::spawn(pump_flows(Arc::clone(&state), verdicts));

    let socket = config.socket.clone();
    let socket_error = |source| AgentError::Socket {
        socket: socket.clone(),
        source,
    };
    let unix_listener = server::bind(&socket).map_err(socket_error)?;
    tracing::info!(socket = %socket.display(), "attach socket serving");
    let service = Arc::new(AttachService::new(
        config,
        store,
        source,
        Arc::clone(&state),
    ));
    state.serving.store(true, Ordering::Release);
    tokio::select! {
        served = server::serve(service, unix_listener) => served.map_err(socket_error),
        served = http => match served {
            Ok(result) => result.map_err(http_error),
            Err(panicked) => Err(http_error(std::io::Error::other(panicked.to_string()))),
        },
    }
}

/// Observe -> compute -> apply: every change goes to the attach store, then through the
/// engine into the datapath.
async fn follow(
    state: Arc<AgentState>,
    store: Store,
    mut events: futures::stream::BoxStream<'static, Result<ClusterEvent, SourceError>>,
) {
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => {
                store.apply(event.clone());
                let started = Instant::now();
                let problems = state.enforcer.lock().await.observe(event);
                state
                    .metrics
                    .policy_update_seconds
                    .observe(started.elapsed().as_secs_f64());
                log_all(problems);
            }
            Err(problem) => tracing::warn!("cluster state: {problem}"),
        }
    }
    tracing::error!("cluster state: the source ended; enforcement stays as it is");
}

async fn reconcile_every(state: Arc<AgentState>, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        reconcile(&state).await;
    }
}

/// One reconcile. The kernel's tables are read first, off the async threads and without
/// holding the enforcer (at 100k entries the reading takes a third of a second: ADDs and
/// policy updates go on meanwhile); the enforcer then compares and repairs.
async fn reconcile(state: &AgentState) {
    let pins = state.enforcer.lock().await.pins();
    let snapshot = tokio::task::spawn_blocking(move || TableSnapshot::read(&pins))
        .await
        .expect("reading the tables does not panic");
    log_all(state.enforcer.lock().await.reconcile(snapshot));
}

/// Verdict events to `/flows` readers, named after their endpoints.
async fn pump_flows(state: Arc<AgentState>, mut verdicts: VerdictEvents) {
    loop {
        let event = match verdicts.next().await {
            Ok(event) => event,
            Err(problem) => {
                tracing::error!("verdict events: {problem}; /flows stays silent");
                return;
            }
        };
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let record = {
            let enforcer = state.enforcer.lock().await;
            FlowRecord::new(&event, enforcer.endpoint_named(event.endpoint), time_ms)
        };
        // No reader is fine: events are only streamed, never stored.
        let _ = state.flows.send(record);
    }
}

fn log_all(problems: Vec<EnforceError>) {
    for problem in problems {
        tracing::warn!("enforcement: {problem}");
    }
}
