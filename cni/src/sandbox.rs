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
    protocol::{CniArgs, Command, ContainerId, ErrorCode, Request},
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

/// One step that failed, with the cause: an attachment's delegate, or a step of the
/// sandbox as a whole (the default-route change, the cache).
#[derive(Debug)]
pub struct AttachmentFailure {
    /// "network dev/macvlan-conf (net1)", "default-route", "the cache".
    pub subject: String,
    pub error: String,
}

impl fmt::Display for AttachmentFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.error)
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

impl SandboxError {
    /// The CNI error code to report: a cache that cannot be read needs a person
    /// (I/O error); delegates that failed may succeed when retried.
    pub fn cni_code(&self) -> ErrorCode {
        match self {
            Self::Cache(_) => ErrorCode::Io,
            Self::Unknown { .. } => ErrorCode::UnknownContainer,
            Self::NoContainerId => ErrorCode::InvalidEnvironment,
            _ => ErrorCode::TryAgainLater,
        }
    }
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
            subject: format!("network {} ({})", self.network, self.ifname),
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

/// ADD: runs `attachments` (results empty) in order for the sandbox, once the cache durably
/// names them all. Returns the record with every result, the default-route request applied,
/// as the cache now holds it. On failure nothing stays attached and the cache is gone,
/// unless deleting also failed: then the cache is kept for a later DEL.
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
            // Kept in memory: the durable record already reaches this delegate on DEL.
            Ok(result) => record.attachments[index].result = Some(result),
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
        .and_then(|()| cache.update(&record).map_err(|e| e.to_string()));
    if let Err(error) = written {
        let last = record.attachments.len() - 1;
        let failure = AttachmentFailure {
            subject: "default-route".into(),
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
        cache.update(record)
    };
    if let Err(error) = cache_result {
        leaked.push(AttachmentFailure {
            subject: "the cache".into(),
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

#[cfg(test)]
mod tests {
    //! The ordering guarantees, proven with small shell plugins that look at the cache
    //! while they run; the reference plugins are driven in tests/tests/cni_delegates.rs.
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::{
        delegate::{Delegate, DelegateRequest},
        protocol::ConfList,
    };

    struct Fixture {
        dir: tempfile::TempDir,
        cache: Cache,
        runner: PluginRunner,
        spec: SandboxSpec,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let cache = Cache::new(dir.path().join("cache"));
            let spec = SandboxSpec {
                container_id: "c1".parse().unwrap(),
                netns: "/run/netns/unused".into(),
                args: CniArgs::parse(
                    "K8S_POD_NAMESPACE=dev;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=c1",
                )
                .unwrap(),
                cni_path: vec![dir.path().to_owned()],
            };
            let cache_file = cache.path(&spec.container_id);
            let root = dir.path().display().to_string();
            // ADD: snapshot the cache as the plugin sees it, answer with an address.
            // DEL: log the interface; fail while `<dir>/fail-<ifname>` exists.
            let body = format!(
                r#"cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  cp {cache} {root}/seen-$CNI_IFNAME.json || exit 9
  echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.0.0.1/24"}}]}}'
else
  echo $CNI_IFNAME >> {root}/dels.log
  if [ -e {root}/fail-$CNI_IFNAME ]; then echo '{{"cniVersion":"1.0.0","code":11,"msg":"busy"}}'; exit 1; fi
fi"#,
                cache = cache_file.display(),
            );
            let plugin = dir.path().join("recorder");
            std::fs::write(&plugin, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
            let runner = PluginRunner::new(vec![dir.path().to_owned()], Duration::from_secs(10));
            Self {
                dir,
                cache,
                runner,
                spec,
            }
        }

        fn attachments(&self, ifnames: &[&str]) -> Vec<AttachmentRecord> {
            ifnames
                .iter()
                .map(|ifname| AttachmentRecord {
                    network: format!("dev/{ifname}"),
                    ifname: ifname.parse().unwrap(),
                    is_default: false,
                    default_route: vec![],
                    delegate: Delegate::new(
                        ConfList::parse(r#"{"cniVersion":"1.0.0","type":"recorder"}"#, Some("n"))
                            .unwrap(),
                        DelegateRequest::default(),
                    )
                    .unwrap(),
                    result: None,
                })
                .collect()
        }

        fn seen(&self, ifname: &str) -> SandboxRecord {
            let text = std::fs::read(self.dir.path().join(format!("seen-{ifname}.json"))).unwrap();
            serde_json::from_slice(&text).unwrap()
        }

        fn dels(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("dels.log")).unwrap_or_default()
        }
    }

    #[test]
    fn the_cache_names_every_delegate_before_the_first_runs_and_ends_with_every_result() {
        let f = Fixture::new();
        let record = add(
            &f.runner,
            &f.cache,
            &f.spec,
            f.attachments(&["net1", "net2"]),
        )
        .unwrap();
        let first = f.seen("net1");
        assert_eq!(first.attachments.len(), 2);
        assert!(first.attachments.iter().all(|a| a.result.is_none()));
        assert_eq!(f.seen("net2"), first);
        assert!(record.attachments.iter().all(|a| a.result.is_some()));
        assert_eq!(f.cache.read(&f.spec.container_id).unwrap(), Some(record));

        let err = add(&f.runner, &f.cache, &f.spec, f.attachments(&["net1"])).unwrap_err();
        assert!(matches!(err, SandboxError::AlreadyAdded { .. }), "{err}");
    }

    #[test]
    fn del_goes_on_past_failures_reports_them_and_keeps_the_cache() {
        let f = Fixture::new();
        add(
            &f.runner,
            &f.cache,
            &f.spec,
            f.attachments(&["net1", "net2", "net3"]),
        )
        .unwrap();
        std::fs::write(f.dir.path().join("fail-net2"), "").unwrap();
        std::fs::write(f.dir.path().join("fail-net3"), "").unwrap();

        let err = del(&f.runner, &f.cache, &f.spec.container_id, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            f.dels(),
            "net3\nnet2\nnet1\n",
            "not every delegate was tried, in reverse"
        );
        assert!(
            err.contains("pod dev/p")
                && err.contains("2 of 3")
                && err.contains("dev/net2 (net2)")
                && err.contains("dev/net3 (net3)")
                && err.contains("busy"),
            "{err}"
        );
        assert!(
            f.cache.read(&f.spec.container_id).unwrap().is_some(),
            "cache dropped after a failed DEL"
        );

        std::fs::remove_file(f.dir.path().join("fail-net2")).unwrap();
        std::fs::remove_file(f.dir.path().join("fail-net3")).unwrap();
        del(&f.runner, &f.cache, &f.spec.container_id, None).unwrap();
        assert!(f.cache.read(&f.spec.container_id).unwrap().is_none());
        del(&f.runner, &f.cache, &f.spec.container_id, None).unwrap();
    }

    #[test]
    fn check_reports_attachments_that_never_completed() {
        let f = Fixture::new();
        let mut record = SandboxRecord::new(
            f.spec.container_id.clone(),
            None,
            f.spec.args.clone(),
            vec![],
            f.attachments(&["net1"]),
        );
        f.cache.write(&record).unwrap();
        let err = check(
            &f.runner,
            &f.cache,
            &f.spec.container_id,
            "/run/netns/x".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("never completed"), "{err}");
        record.container_id = "c2".parse().unwrap();
        let err = check(
            &f.runner,
            &f.cache,
            &record.container_id,
            "/run/netns/x".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("nothing is cached"), "{err}");
    }
}
