//! The attach socket: one request per connection (see `netwarden_cni::agent_link`), from
//! root only (SO_PEERCRED). At most `maxConcurrent + maxQueued` requests are admitted at
//! once; beyond that a request is refused at once with "agent busy, retry" (the runtime
//! retries), so a burst of ADDs costs bounded memory.
use std::{io, os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use netwarden_cni::{
    agent_link::{self, AgentRequest, AgentResponse, MAX_MESSAGE},
    protocol::{CniError, Version},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};
use tracing::Instrument;

use super::{error::AttachError, service::AttachService};
use crate::cluster::source::ClusterSource;

/// Binds the socket at `path`: the parent is created, a stale socket replaced, and the
/// socket made accessible to root only.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves connections until the listener fails.
pub async fn serve<S: ClusterSource + Send + Sync + 'static>(
    service: Arc<AttachService<S>>,
    listener: UnixListener,
) -> io::Result<()> {
    let config = service.config();
    let admitted = Arc::new(Semaphore::new(config.max_concurrent + config.max_queued));
    loop {
        let (stream, _) = listener.accept().await?;
        let (service, admitted) = (Arc::clone(&service), Arc::clone(&admitted));
        tokio::spawn(async move {
            if let Err(problem) = connection(service, admitted, stream).await {
                tracing::warn!("attach socket: {problem}");
            }
        });
    }
}

async fn connection<S: ClusterSource + Send + Sync + 'static>(
    service: Arc<AttachService<S>>,
    admitted: Arc<Semaphore>,
    mut stream: UnixStream,
) -> io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (reader, mut writer) = stream.split();
    let mut line = Vec::new();
    BufReader::new(reader)
        .take(MAX_MESSAGE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    let decoded = if line.len() > MAX_MESSAGE {
        Err(format!("a message longer than {MAX_MESSAGE} bytes"))
    } else {
        agent_link::decode::<AgentRequest>(&line).map_err(|e| e.to_string())
    };
    let response = match decoded {
        _ if uid != 0 => failure(Version::LATEST, &AttachError::NotRoot { uid }),
        Err(problem) => failure(Version::LATEST, &AttachError::BadRequest(problem)),
        Ok(AgentRequest::Ping) => AgentResponse::Pong,
        Ok(AgentRequest::Cni { request, config }) => {
            let version = serde_json::from_str(&config)
                .ok()
                .and_then(|c| super::service::runtime_version(&c).ok())
                .unwrap_or(Version::LATEST);
            match Arc::clone(&admitted).try_acquire_owned() {
                Err(_) => failure(
                    version,
                    &AttachError::Busy {
                        admitted: admitted_total(&service),
                    },
                ),
                Ok(_admission) => {
                    let _counted = Admitted::count(&service);
                    let command = request.command;
                    let span = tracing::info_span!(
                        "cni",
                        command = command.as_str(),
                        container = %request
                            .container_id
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    );
                    match service.handle(request, &config).instrument(span).await {
                        Ok(stdout) => AgentResponse::Success { stdout },
                        Err(error) => {
                            tracing::warn!("{command}: {error}");
                            failure(version, &error)
                        }
                    }
                }
            }
        }
    };
    writer.write_all(&agent_link::encode(&response)).await
}

/// Keeps `attach_admitted` counting a request while it is admitted.
struct Admitted<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Admitted<'a> {
    fn count<S>(service: &'a AttachService<S>) -> Self {
        let gauge = &service.agent().metrics.attach_admitted;
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn admitted_total<S>(service: &AttachService<S>) -> usize {
    service.config().max_concurrent + service.config().max_queued
}

fn failure(version: Version, error: &AttachError) -> AgentResponse {
    AgentResponse::Failure {
        error: CniError::new(version, error.code(), error.to_string()),
    }
}
