//! A sandbox's attachments as one unit: ADD every network in order (cache written before
//! the first delegate, updated after each; on a failure every added network is deleted
//! again, in reverse), DEL every cached network in reverse past failures, CHECK them all.
use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    cache::{AttachmentRecord, Cache, CacheError, SandboxRecord},
    delegate::DelegateError,
    exec::PluginRunner,
    protocol::{CniArgs, Command, ContainerId, Request},
    routes::{self, RouteError},
};

/// How long one plugin execution may take before it is killed.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The sandbox an ADD attaches to.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    pub container_id: ContainerId,
    pub netns: PathBuf,
    pub args: CniArgs,
    pub cni_path: Vec<PathBuf>,
}

/// One network that failed, with the cause.
#[derive(Debug)]
pub struct AttachmentFailure {
    pub network: String,
    pub ifname: String,
    pub error: String,
}

impl fmt::Display for AttachmentFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network {} ({}): {}",
            self.network, self.ifname, self.error
        )
    }
}

fn list(failures: &[AttachmentFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    Cache(#[from] CacheError),
    #[error("{sandbox}: already has cached attachments; DEL it before adding again")]
    AlreadyAdded { sandbox: String },
    #[error("{sandbox}: ADD failed at {failure}{}{}", rollback_text(.rollback), incomplete_text(.incomplete))]
    Add {
        sandbox: String,
        failure: Box<AttachmentFailure>,
        /// DELs of completed attachments that failed: the cache is kept for them.
        rollback: Vec<AttachmentFailure>,
        /// DEL of the attachment whose ADD failed, when that failed too.
        incomplete: Vec<AttachmentFailure>,
    },
    #[error("{sandbox}: DEL failed for {} of {total} networks (the cache is kept so DEL can be retried): {}", .failures.len(), list(.failures))]
    Del {
        sandbox: String,
        total: usize,
        failures: Vec<AttachmentFailure>,
    },
    #[error("{sandbox}: CHECK failed: {}", list(.failures))]
    Check {
        sandbox: String,
        failures: Vec<AttachmentFailure>,
    },
    #[error("{sandbox}: CHECK: nothing is cached for this sandbox (was it ever added?)")]
    Unknown { sandbox: String },
    #[error("DEL from the cache: the request has no CNI_CONTAINERID")]
    NoContainerId,
}

fn rollback_text(rollback: &[AttachmentFailure]) -> String {
    if rollback.is_empty() {
        "; everything added before was deleted again".into()
    } else {
        format!(
            "; deleting what was added also failed (the cache is kept for DEL): {}",
            list(rollback)
        )
    }
}

fn incomplete_text(incomplete: &[AttachmentFailure]) -> String {
    if incomplete.is_empty() {
        String::new()
    } else {
        format!(
            " (DEL of the failing network itself failed too: {})",
            list(incomplete)
        )
    }
}

/// "pod ns/name (container id)" when CNI_ARGS names the pod, else "container id".
fn describe(container_id: &ContainerId, args: &CniArgs) -> String {
    match args.pod() {
        Some(pod) => format!(
            "pod {}/{} (container {container_id})",
            pod.namespace, pod.name
        ),
        None => format!("container {container_id}"),
    }
}

impl AttachmentRecord {
    fn request(&self, record: &SandboxRecord, command: Command, netns: Option<PathBuf>) -> Request {
        Request {
            command,
            container_id: Some(record.container_id.clone()),
            netns,
            ifname: Some(self.ifname.clone()),
            args: record.args.clone(),
            path: record.cni_path.clone(),
        }
    }

    fn failure(&self, error: impl fmt::Display) -> AttachmentFailure {
        AttachmentFailure {
            network: self.network.clone(),
            ifname: self.ifname.to_string(),
            error: error.to_string(),
        }
    }

    fn del(
        &self,
        runner: &PluginRunner,
        record: &SandboxRecord,
        netns: Option<PathBuf>,
    ) -> Result<(), DelegateError> {
        self.delegate.del(
            runner,
            &self.request(record, Command::Del, netns),
            self.result.as_ref(),
        )
    }
}

/// ADD: runs `attachments` (results empty) in order for the sandbox. Returns the record with
/// every result, the default-route request applied. On failure nothing stays attached and
/// the cache is gone, unless deleting also failed: then the cache is kept for a later DEL.
pub fn add(
    runner: &PluginRunner,
    cache: &Cache,
    spec: &SandboxSpec,
    attachments: Vec<AttachmentRecord>,
) -> Result<SandboxRecord, SandboxError> {
    let sandbox = describe(&spec.container_id, &spec.args);
    if cache.read(&spec.container_id)?.is_some() {
        return Err(SandboxError::AlreadyAdded { sandbox });
    }
    let mut record = SandboxRecord::new(
        spec.container_id.clone(),
        Some(spec.netns.clone()),
        spec.args.clone(),
        spec.cni_path.clone(),
        attachments,
    );
    cache.write(&record)?;
    for index in 0..record.attachments.len() {
        let attachment = &record.attachments[index];
        let request = attachment.request(&record, Command::Add, Some(spec.netns.clone()));
        match attachment.delegate.add(runner, &request) {
            Ok(result) => {
                record.attachments[index].result = Some(result);
                if let Err(error) = cache.write(&record) {
                    let failure = record.attachments[index].failure(&error);
                    return Err(roll_back(runner, cache, &record, index, failure, sandbox));
                }
            }
            Err(error) => {
                let failure = attachment.failure(&error);
                return Err(roll_back(runner, cache, &record, index, failure, sandbox));
            }
        }
    }
    let changes = routes::plan(&mut record.attachments);
    let applied: Result<(), RouteError> = routes::apply(&spec.netns, &changes);
    let written = applied
        .map_err(|e| e.to_string())
        .and_then(|()| cache.write(&record).map_err(|e| e.to_string()));
    if let Err(error) = written {
        let last = record.attachments.len() - 1;
        let failure = AttachmentFailure {
            network: "default-route".into(),
            ifname: String::new(),
            error,
        };
        return Err(roll_back(runner, cache, &record, last, failure, sandbox));
    }
    Ok(record)
}

/// Deletes attachments `0..=failed` in reverse after `failure`. The failing attachment is
/// deleted too (a chain may have run part way); when that DEL fails as well it is reported
/// but does not keep the cache: a delegate that failed both ADD and DEL usually cannot load
/// its configuration at all (a missing master or binary), and a cache entry for it would
/// make every later DEL of the pod fail. Failed DELs of completed attachments keep the
/// cache, so a later DEL retries them.
fn roll_back(
    runner: &PluginRunner,
    cache: &Cache,
    record: &SandboxRecord,
    failed: usize,
    failure: AttachmentFailure,
    sandbox: String,
) -> SandboxError {
    let mut leaked = Vec::new();
    let mut incomplete = Vec::new();
    for attachment in record.attachments[..=failed].iter().rev() {
        if let Err(error) = attachment.del(runner, record, record.netns.clone()) {
            match attachment.result {
                Some(_) => leaked.push(attachment.failure(error)),
                None => incomplete.push(attachment.failure(error)),
            }
        }
    }
    let cache_result = if leaked.is_empty() {
        cache.remove(&record.container_id)
    } else {
        cache.write(record)
    };
    if let Err(error) = cache_result {
        leaked.push(AttachmentFailure {
            network: "cache".into(),
            ifname: String::new(),
            error: error.to_string(),
        });
    }
    SandboxError::Add {
        sandbox,
        failure: Box::new(failure),
        rollback: leaked,
        incomplete,
    }
}

/// DEL: every cached attachment in reverse order, each tried whatever happened to the
/// others. The cache goes only when every delegate succeeded. No cache: nothing to do.
/// `netns` is the runtime's CNI_NETNS for this DEL (None when the sandbox is gone).
pub fn del(
    runner: &PluginRunner,
    cache: &Cache,
    container_id: &ContainerId,
    netns: Option<PathBuf>,
) -> Result<(), SandboxError> {
    let Some(record) = cache.read(container_id)? else {
        return Ok(());
    };
    let failures: Vec<AttachmentFailure> = record
        .attachments
        .iter()
        .rev()
        .filter_map(|a| {
            a.del(runner, &record, netns.clone())
                .err()
                .map(|e| a.failure(e))
        })
        .collect();
    if failures.is_empty() {
        cache.remove(container_id)?;
        return Ok(());
    }
    Err(SandboxError::Del {
        sandbox: describe(container_id, &record.args),
        total: record.attachments.len(),
        failures,
    })
}

/// CHECK: every cached attachment, all failures reported.
pub fn check(
    runner: &PluginRunner,
    cache: &Cache,
    container_id: &ContainerId,
    netns: PathBuf,
) -> Result<(), SandboxError> {
    let Some(record) = cache.read(container_id)? else {
        return Err(SandboxError::Unknown {
            sandbox: format!("container {container_id}"),
        });
    };
    let failures: Vec<AttachmentFailure> = record
        .attachments
        .iter()
        .filter_map(|a| {
            let Some(result) = &a.result else {
                return Some(a.failure("its ADD never completed"));
            };
            let request = a.request(&record, Command::Check, Some(netns.clone()));
            a.delegate
                .check(runner, &request, result)
                .err()
                .map(|e| a.failure(e))
        })
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    Err(SandboxError::Check {
        sandbox: describe(container_id, &record.args),
        failures,
    })
}

/// A full DEL from the on-disk cache, without the agent: what `netwarden-cni` does when
/// the agent is unreachable.
pub fn delete_from_cache(
    request: &Request,
    cache_dir: &Path,
    bin_dirs: &[PathBuf],
) -> Result<(), SandboxError> {
    let container_id = request
        .container_id
        .as_ref()
        .ok_or(SandboxError::NoContainerId)?;
    let runner = PluginRunner::new(bin_dirs.to_vec(), PLUGIN_TIMEOUT);
    del(
        &runner,
        &Cache::new(cache_dir),
        container_id,
        request.netns.clone(),
    )
}
