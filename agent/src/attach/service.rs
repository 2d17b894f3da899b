//! The CNI commands as the agent performs them: ADD plans the pod's networks from the
//! cluster state and runs them as one sandbox, then publishes network-status; DEL, CHECK
//! and GC work from the per-sandbox cache alone. Requests for the same container never
//! overlap; delegate work runs on blocking threads, at most `maxConcurrent` at once.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, Weak},
};

use k8s_openapi::api::core::v1::Pod;
use netwarden_cni::{
    cache::{AttachmentRecord, Cache},
    exec::PluginRunner,
    network::{is_dns1123_label, is_dns1123_subdomain},
    plan::{self, ClusterNetwork, PlanContext},
    protocol::{Command, ConfList, ContainerId, Request, Version, VersionInfo},
    resolve::{DeviceAllocations, Isolation, NadSpec},
    sandbox::{self, SandboxError, SandboxSpec, PLUGIN_TIMEOUT},
    status::build_network_status,
    InterfaceName, NetworkRef,
};
use serde_json::Value;
use tokio::sync::{OwnedMutexGuard, Semaphore};

use super::{
    error::AttachError,
    guard::InboundGuard,
    stages::{Stage, Stopwatch},
};
use crate::{
    agent::{AgentConfig, AgentState},
    cluster::{
        source::{ClusterSource, PodRef},
        store::Store,
    },
};

/// The runtime's GC key listing the attachments it still wants.
const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

pub struct AttachService<S> {
    config: AgentConfig,
    /// The enforcement an ADD waits for, and the metrics it reports to.
    agent: Arc<AgentState>,
    store: Store,
    source: S,
    runner: PluginRunner,
    cache: Cache,
    isolation: Isolation,
    /// Permits to run delegates.
    running: Arc<Semaphore>,
    /// One lock per container ID with a request in flight.
    sandboxes: Mutex<HashMap<ContainerId, Weak<tokio::sync::Mutex<()>>>>,
}

impl<S> AttachService<S> {
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    pub fn agent(&self) -> &AgentState {
        &self.agent
    }
}

impl<S: ClusterSource + Send + Sync + 'static> AttachService<S> {
    pub fn new(config: AgentConfig, store: Store, source: S, agent: Arc<AgentState>) -> Self {
        Self {
            agent,
            runner: PluginRunner::new(config.bin_dirs.clone(), PLUGIN_TIMEOUT),
            cache: Cache::new(&config.cache_dir),
            isolation: Isolation::new(
                config.namespace_isolation,
                config.global_namespaces.as_deref(),
            ),
            running: Arc::new(Semaphore::new(config.max_concurrent)),
            sandboxes: Mutex::default(),
            config,
            store,
            source,
        }
    }

    /// Performs `request` with the runtime's stdin `config`; Ok is what goes to stdout.
    pub async fn handle(
        self: &Arc<Self>,
        request: Request,
        config: &str,
    ) -> Result<Option<String>, AttachError> {
        let config: Value =
            serde_json::from_str(config).map_err(|e| AttachError::BadStdin(e.to_string()))?;
        let version = runtime_version(&config)?;
        match request.command {
            Command::Version => Ok(Some(
                serde_json::to_string(&VersionInfo::netwarden()).expect("version info serializes"),
            )),
            // Answering at all means the agent is serving, with its cluster state synced.
            Command::Status => Ok(None),
            Command::Add => {
                let id = container_id(&request)?;
                let _sandbox = self.lock(id).await;
                let started = std::time::Instant::now();
                let added = self.add(request, version).await.map(Some);
                self.agent
                    .metrics
                    .attach_seconds
                    .observe(started.elapsed().as_secs_f64());
                added
            }
            Command::Del => {
                let id = container_id(&request)?.clone();
                let _sandbox = self.lock(&id).await;
                let netns = request.netns;
                let deleting = id.clone();
                let mut watch = Stopwatch::start(&self.agent.metrics, Command::Del);
                self.blocking(move |s| sandbox::del(&s.runner, &s.cache, &deleting, netns))
                    .await?;
                watch.lap(Stage::Delegates);
                // The interfaces are gone: their links and table entries go too.
                let mut enforcer = self.agent.enforcer.lock().await;
                watch.lap(Stage::EnforcerLock);
                let problems = enforcer.release(&id);
                drop(enforcer);
                watch.lap(Stage::Datapath);
                for problem in problems {
                    tracing::warn!("DEL {id}: {problem}");
                }
                Ok(None)
            }
            Command::Check => {
                let id = container_id(&request)?.clone();
                let netns = request.netns.ok_or(AttachError::MissingEnv("CNI_NETNS"))?;
                let _sandbox = self.lock(&id).await;
                self.blocking(move |s| sandbox::check(&s.runner, &s.cache, &id, netns))
                    .await?;
                Ok(None)
            }
            Command::Gc => self.gc(&config).await.map(|()| None),
        }
    }

    async fn add(
        self: &Arc<Self>,
        request: Request,
        version: Version,
    ) -> Result<String, AttachError> {
        let identity = request.args.pod().ok_or(AttachError::NoPod)?;
        // No object can have another name: refuse before waiting for one to appear.
        if !is_dns1123_label(&identity.namespace) {
            return Err(AttachError::BadPodName {
                key: "K8S_POD_NAMESPACE",
                value: identity.namespace,
                what: "namespace",
            });
        }
        if !is_dns1123_subdomain(&identity.name) {
            return Err(AttachError::BadPodName {
                key: "K8S_POD_NAME",
                value: identity.name,
                what: "pod",
            });
        }
        let pod_ref = PodRef {
            namespace: identity.namespace,
            name: identity.name,
        };
        let mut watch = Stopwatch::start(&self.agent.metrics, Command::Add);
        let pod = self
            .store
            .wait_for_pod(&pod_ref, &identity.uid, self.config.pod_wait())
            .await?;
        watch.lap(Stage::Pod);
        let added = self
            .add_pod(request, version, pod_ref, pod.clone(), &mut watch)
            .await;
        if let Err(error) = &added {
            if let Err(problem) = self
                .source
                .report_attach_failure(&pod, &error.to_string())
                .await
            {
                tracing::warn!("{problem}");
            }
        }
        added
    }

    /// ADD once the pod is known.
    async fn add_pod(
        self: &Arc<Self>,
        request: Request,
        version: Version,
        pod_ref: PodRef,
        pod: Pod,
        watch: &mut Stopwatch<'_>,
    ) -> Result<String, AttachError> {
        let (Some(container_id), Some(netns), Some(ifname)) =
            (request.container_id, request.netns, request.ifname)
        else {
            return Err(AttachError::MissingEnv(
                "CNI_CONTAINERID, CNI_NETNS or CNI_IFNAME",
            ));
        };
        let cluster = ClusterNetwork {
            config: self.cluster_network()?,
            ifname,
        };
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let attachments = self.plan(&pod_ref, &annotations, &cluster)?;
        watch.lap(Stage::Plan);
        // Fail closed from the first moment: nothing gets in before the classifiers judge.
        let guard = self.close_inbound(&netns, &attachments).await?;
        watch.lap(Stage::Guard);
        let spec = SandboxSpec {
            container_id: container_id.clone(),
            netns: netns.clone(),
            args: request.args,
            cni_path: request.path,
        };
        let added = self
            .blocking(move |s| sandbox::add(&s.runner, &s.cache, &spec, attachments))
            .await;
        watch.lap(Stage::Delegates);
        let record = match added {
            Ok(record) => record,
            Err(error) => {
                open_inbound(guard);
                return Err(error);
            }
        };
        let entries = build_network_status(&record.attachments);
        // Fail closed: the runtime gets the interfaces only once they are enforced on.
        let current = self.store.pod(&pod_ref).unwrap_or(pod);
        let mut enforcer = self.agent.enforcer.lock().await;
        watch.lap(Stage::EnforcerLock);
        let before = enforcer.datapath_time();
        let admitted = enforcer.admit(current, &container_id, netns.clone(), &entries);
        let datapath = enforcer.datapath_time().saturating_sub(before);
        drop(enforcer);
        watch.lap_split(Stage::Engine, Some((Stage::Datapath, datapath)));
        // On failure, the guard still held: unenforced interfaces stay closed until the
        // rollback has deleted them.
        let published = match admitted {
            Err(source) => Err((AttachError::Enforce(Box::new(source)), guard)),
            Ok(()) => {
                let opened = open_now(guard).await;
                watch.lap(Stage::Guard);
                match opened {
                    Err(error) => Err((error, None)),
                    Ok(()) => {
                        let written = self.source.write_network_status(&pod_ref, &entries).await;
                        watch.lap(Stage::Status);
                        written.map_err(|source| (AttachError::Status(Box::new(source)), None))
                    }
                }
            }
        };
        if let Err((error, guard)) = published {
            let rolled_back = container_id.clone();
            let rollback = self
                .blocking(move |s| sandbox::del(&s.runner, &s.cache, &rolled_back, Some(netns)))
                .await
                .err()
                .map(Box::new);
            for problem in self.agent.enforcer.lock().await.release(&container_id) {
                tracing::warn!("rolling back ADD {container_id}: {problem}");
            }
            // What a failed rollback left stays closed.
            if rollback.is_none() {
                open_inbound(guard);
            }
            return Err(AttachError::RolledBack {
                pod: pod_ref,
                error: Box::new(error),
                rollback,
            });
        }
        let result = record.attachments[0]
            .result
            .as_ref()
            .expect("sandbox::add returns every result");
        Ok(result.to_value(version).to_string())
    }

    /// Closes the interfaces this ADD creates and enforces on (the secondary ones, and the
    /// cluster network's when NetworkPolicy is enforced there) to inbound traffic.
    async fn close_inbound(
        &self,
        netns: &std::path::Path,
        attachments: &[AttachmentRecord],
    ) -> Result<Option<InboundGuard>, AttachError> {
        let interfaces: Vec<InterfaceName> = attachments
            .iter()
            .filter(|a| !a.is_default || self.config.cluster_network_policy)
            .map(|a| a.ifname.clone())
            .collect();
        let netns = netns.to_owned();
        tokio::task::spawn_blocking(move || InboundGuard::close(&netns, &interfaces))
            .await
            .map_err(|e| AttachError::Task(e.to_string()))?
            .map_err(AttachError::Guard)
    }

    /// The pod's attachments, in order; planning is pure and quick, so it runs inline.
    fn plan(
        &self,
        pod_ref: &PodRef,
        annotations: &BTreeMap<String, String>,
        cluster: &ClusterNetwork,
    ) -> Result<Vec<AttachmentRecord>, AttachError> {
        let nads = |network: &NetworkRef| {
            let nad = self.store.network_attachment_definition(network)?;
            Some(NadSpec {
                network: network.clone(),
                config: nad.spec.config.unwrap_or_default(),
                annotations: nad.metadata.annotations.unwrap_or_default(),
            })
        };
        let context = PlanContext {
            nads: &nads,
            isolation: &self.isolation,
            config_dir: &self.config.config_dir,
        };
        // Devices allocated by a device plugin are not known to the agent yet: only a
        // `deviceID` in the pod's annotation reaches a delegate.
        plan::plan(
            &pod_ref.namespace,
            annotations,
            cluster,
            &context,
            &mut DeviceAllocations::default(),
        )
        .map_err(|source| AttachError::Plan {
            pod: pod_ref.clone(),
            source: Box::new(source),
        })
    }

    /// GC: DEL every cached sandbox the runtime no longer lists, and forget its interfaces'
    /// enforcement. A sandbox with a request in flight is left alone (its ADD may not be
    /// known to the runtime yet).
    async fn gc(self: &Arc<Self>, config: &Value) -> Result<(), AttachError> {
        let valid: BTreeSet<String> = config
            .get(VALID_ATTACHMENTS)
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|a| a.get("containerID")?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let cached = self.cache.container_ids()?;
        let mut failures = Vec::new();
        for id in cached.into_iter().filter(|id| !valid.contains(id.as_str())) {
            let Ok(_sandbox) = self.sandbox_lock(&id).try_lock_owned() else {
                continue;
            };
            let deleting = id.clone();
            let result = self
                .blocking(move |s| sandbox::del(&s.runner, &s.cache, &deleting, None))
                .await;
            match result {
                Ok(()) => {
                    for problem in self.agent.enforcer.lock().await.release(&id) {
                        tracing::warn!("GC {id}: {problem}");
                    }
                }
                Err(AttachError::Sandbox(error)) => failures.push(error),
                Err(other) => return Err(other),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(AttachError::Gc(failures))
        }
    }

    fn cluster_network(&self) -> Result<ConfList, AttachError> {
        let path = &self.config.cluster_network;
        let problem = |problem: String| AttachError::ClusterNetwork {
            path: path.clone(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
        ConfList::parse(&text, None).map_err(|e| problem(e.to_string()))
    }

    fn sandbox_lock(&self, id: &ContainerId) -> Arc<tokio::sync::Mutex<()>> {
        let mut sandboxes = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = sandboxes.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        sandboxes.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        sandboxes.insert(id.clone(), Arc::downgrade(&lock));
        lock
    }

    async fn lock(&self, id: &ContainerId) -> OwnedMutexGuard<()> {
        self.sandbox_lock(id).lock_owned().await
    }

    /// Runs delegate work on a blocking thread once a `running` permit is free.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Self) -> Result<T, SandboxError> + Send + 'static,
    ) -> Result<T, AttachError> {
        let _permit = self
            .running
            .acquire()
            .await
            .map_err(|e| AttachError::Task(e.to_string()))?;
        let service = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&service))
            .await
            .map_err(|e| AttachError::Task(e.to_string()))?
            .map_err(AttachError::from)
    }
}

/// Opens a guard on a failed ADD: whatever is left of the sandbox is rolled back anyway.
/// Lets traffic in on the guarded interfaces, off the async threads (it enters the
/// sandbox's namespace on a thread of its own).
async fn open_now(guard: Option<InboundGuard>) -> Result<(), AttachError> {
    let Some(guard) = guard else {
        return Ok(());
    };
    tokio::task::spawn_blocking(move || guard.open())
        .await
        .map_err(|e| AttachError::Task(e.to_string()))?
        .map_err(AttachError::Guard)
}

fn open_inbound(guard: Option<InboundGuard>) {
    if let Some(Err(problem)) = guard.map(InboundGuard::open) {
        tracing::warn!("{problem}");
    }
}

fn container_id(request: &Request) -> Result<&ContainerId, AttachError> {
    request
        .container_id
        .as_ref()
        .ok_or(AttachError::MissingEnv("CNI_CONTAINERID"))
}

/// The runtime's cniVersion: results and errors are written in it.
pub fn runtime_version(config: &Value) -> Result<Version, AttachError> {
    let asked = config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    asked
        .parse::<Version>()
        .ok()
        .filter(|v| Version::RUNTIME_SUPPORTED.contains(v))
        .ok_or_else(|| {
            AttachError::Version(format!(
                "network config cniVersion {asked:?} is not one of 0.3.1, 0.4.0, 1.0.0, 1.1.0"
            ))
        })
}
