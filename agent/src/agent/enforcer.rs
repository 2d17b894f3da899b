//! Keeps the kernel in step with the policy engine: cluster events go through the engine
//! and every changed endpoint is reprogrammed; an ADD's new interfaces are attached and
//! programmed before the pod gets them; a reconcile repairs drift.
use std::{
    collections::HashSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use netwarden_cni::{
    protocol::ContainerId,
    status::{render_network_status, NetworkStatus, NETWORK_STATUS_ANNOTATION},
};

use super::endpoints::{Desired, Endpoints};
use crate::{
    cluster::{objects::PodKey, ClusterEvent, Kind, Object},
    datapath::{
        endpoint_key, pins::PinRoot, rules::EndpointPolicy, Datapath, DatapathError, Drift,
        EndpointKey, EndpointSettings, TableSnapshot,
    },
    policy::{EndpointChange, EndpointId, Engine, Explanation, Flow},
};

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("pod {} interface {} on {}: {source}", .endpoint.pod, .endpoint.interface, .endpoint.network)]
    Endpoint {
        endpoint: Box<EndpointId>,
        #[source]
        source: Box<DatapathError>,
    },
    #[error("the pod in the CNI request has no namespace or name")]
    Unnamed,
    #[error("forgetting the interfaces of deleted sandboxes: {0}")]
    Stale(Box<DatapathError>),
    #[error("checking the kernel's tables for drift: {0}")]
    Audit(Box<DatapathError>),
}

pub struct Enforcer {
    engine: Engine,
    datapath: Datapath,
    endpoints: Endpoints,
    /// Time spent attaching and programming endpoints so far: an ADD's datapath share is
    /// the difference across its [`admit`](Self::admit).
    datapath_time: Duration,
}

impl Enforcer {
    pub fn new(engine: Engine, datapath: Datapath, endpoints: Endpoints) -> Self {
        Self {
            engine,
            datapath,
            endpoints,
            datapath_time: Duration::ZERO,
        }
    }

    /// Where the datapath pins its maps (for [`TableSnapshot::read`]).
    pub fn pins(&self) -> PinRoot {
        self.datapath.pins().clone()
    }

    pub fn datapath_time(&self) -> Duration {
        self.datapath_time
    }

    /// Feeds the engine without touching the kernel: during the initial listing, before
    /// every kind is known, the engine's output is incomplete (a policy not listed yet
    /// would look absent) and programming it would open isolated endpoints.
    pub fn learn(&mut self, event: ClusterEvent) {
        let event = self.overlay(event);
        self.engine.apply(&event);
    }

    /// Applies one event and reprograms every local endpoint whose tables changed.
    pub fn observe(&mut self, event: ClusterEvent) -> Vec<EnforceError> {
        let event = self.overlay(event);
        let changes = self.engine.apply(&event);
        changes
            .iter()
            .map(|change| match change {
                EndpointChange::Upsert { endpoint, .. } | EndpointChange::Removed { endpoint } => {
                    endpoint
                }
            })
            .filter_map(|endpoint| self.sync(endpoint).err())
            .collect()
    }

    /// Fail closed: attaches and programs every interface of a sandbox whose delegates
    /// succeeded (the secondary ones, and eth0 when the cluster network is enforced on),
    /// with the tables the engine computes for the pod once its network-status is
    /// `statuses`. An error leaves the caller to roll back ([`release`]).
    ///
    /// [`release`]: Self::release
    pub fn admit(
        &mut self,
        mut pod: Pod,
        container: &ContainerId,
        netns: PathBuf,
        statuses: &[NetworkStatus],
    ) -> Result<(), EnforceError> {
        let (Some(namespace), Some(name)) =
            (pod.metadata.namespace.clone(), pod.metadata.name.clone())
        else {
            return Err(EnforceError::Unnamed);
        };
        let key = PodKey { namespace, name };
        let new = self
            .endpoints
            .insert(container, key, netns, statuses.to_vec());
        pod.metadata.annotations.get_or_insert_default().insert(
            NETWORK_STATUS_ANNOTATION.to_owned(),
            render_network_status(statuses),
        );
        for problem in self.observe(ClusterEvent::Applied(Object::Pod(Box::new(pod)))) {
            tracing::warn!("{problem}");
        }
        for endpoint in &new {
            self.sync(endpoint)?;
        }
        Ok(())
    }

    /// Forgets a sandbox after its DEL: unpins its links and frees its table entries.
    pub fn release(&mut self, container: &ContainerId) -> Vec<EnforceError> {
        let mut problems = Vec::new();
        for (endpoint, local) in self.endpoints.remove(container) {
            if let Some(key) = local.key {
                if let Err(source) = self.datapath.forget(&key) {
                    problems.push(EnforceError::Endpoint {
                        endpoint: Box::new(endpoint),
                        source: Box::new(source),
                    });
                }
            }
        }
        problems
    }

    /// Repairs drift: an interface whose links are gone (or that was recreated) is attached
    /// again; an endpoint whose configuration is missing, or whose tables in `snapshot`
    /// (read without holding the enforcer, see [`TableSnapshot::read`]) differ from what it
    /// was programmed with, is programmed again. Interfaces that no longer exist are
    /// left to the runtime's DEL.
    pub fn reconcile(
        &mut self,
        snapshot: Result<TableSnapshot, DatapathError>,
    ) -> Vec<EnforceError> {
        let mut problems = Vec::new();
        let snapshot = match snapshot {
            Ok(snapshot) => Some(snapshot),
            Err(source) => {
                problems.push(EnforceError::Audit(Box::new(source)));
                None
            }
        };
        if let Some(snapshot) = &snapshot {
            match self.datapath.remove_orphans(snapshot) {
                Ok(0) => {}
                Ok(ids) => tracing::warn!(
                    "removed the table entries of {ids} endpoint ids no interface holds (written by something other than this agent)"
                ),
                Err(source) => problems.push(EnforceError::Audit(Box::new(source))),
            }
        }
        // Every interface of a known endpoint, as it is now and as it was attached.
        let mut live: HashSet<EndpointKey> =
            self.endpoints.iter().filter_map(|(_, e)| e.key).collect();
        for id in self.endpoints.ids() {
            let Some(local) = self.endpoints.get_mut(&id) else {
                continue;
            };
            let Ok(now) = endpoint_key(&local.target) else {
                continue;
            };
            live.insert(now);
            if local.key != Some(now) || !self.datapath.is_attached(&now) {
                local.key = None;
            }
            match self.datapath.endpoint_config(&now) {
                Ok(Some(config))
                    if local
                        .programmed
                        .as_ref()
                        .is_some_and(|(id, _)| *id == config.id) =>
                {
                    if let (Some(snapshot), Some((_, desired))) = (&snapshot, &local.programmed) {
                        match self.datapath.drift(
                            snapshot,
                            &now,
                            &desired.policy,
                            &desired.addresses,
                            EndpointSettings::default(),
                        ) {
                            Ok(drift) if drift.is_empty() => {}
                            Ok(drift) => {
                                log_drift(&id, &drift);
                                local.programmed = None;
                            }
                            Err(source) => problems.push(EnforceError::Endpoint {
                                endpoint: Box::new(id.clone()),
                                source: Box::new(source),
                            }),
                        }
                    }
                }
                Ok(_) => local.programmed = None,
                Err(source) => {
                    problems.push(EnforceError::Endpoint {
                        endpoint: Box::new(id.clone()),
                        source: Box::new(source),
                    });
                    continue;
                }
            }
            if let Err(problem) = self.sync(&id) {
                problems.push(problem);
            }
        }
        // An ADD records its endpoints before attaching them, under the lock this holds:
        // anything else the datapath has is of a sandbox deleted without this agent.
        match self.datapath.forget_all_but(&live) {
            Ok(stale) if !stale.is_empty() => tracing::info!(
                "forgot the links and tables of {} interfaces whose sandboxes were deleted while the agent was not there",
                stale.len()
            ),
            Ok(_) => {}
            Err(source) => problems.push(EnforceError::Stale(Box::new(source))),
        }
        problems
    }

    fn sync(&mut self, id: &EndpointId) -> Result<(), EnforceError> {
        let started = Instant::now();
        let synced = self.bring_into_kernel(id);
        self.datapath_time += started.elapsed();
        synced
    }

    /// Brings one local endpoint to the engine's current output (open, with anti-spoofing,
    /// when no policy covers it), attaching it first if needed.
    fn bring_into_kernel(&mut self, id: &EndpointId) -> Result<(), EnforceError> {
        let Some(local) = self.endpoints.get_mut(id) else {
            // Not attached by this agent (e.g. its sandbox is not in the cache).
            return Ok(());
        };
        let desired = match self.engine.tables(id) {
            Some(tables) => Desired {
                policy: tables.policy.clone(),
                addresses: tables.addresses.clone(),
            },
            None => Desired {
                policy: EndpointPolicy::default(),
                addresses: local.addresses.clone(),
            },
        };
        let failed = |source| EnforceError::Endpoint {
            endpoint: Box::new(id.clone()),
            source: Box::new(source),
        };
        let key = match local.key {
            Some(key) => key,
            None => {
                let key = self.datapath.attach(&local.target).map_err(failed)?;
                local.key = Some(key);
                key
            }
        };
        if local
            .programmed
            .as_ref()
            .is_some_and(|(_, programmed)| programmed == &desired)
        {
            return Ok(());
        }
        let config = self
            .datapath
            .program(
                &key,
                &desired.policy,
                &desired.addresses,
                EndpointSettings::default(),
            )
            .map_err(failed)?;
        local.programmed = Some((config.id, desired));
        Ok(())
    }

    /// Local pods carry the network-status this agent published even when the event
    /// predates it (the source may deliver an older version of the pod after an ADD): a
    /// pod seen without its interfaces would have them opened.
    fn overlay(&self, event: ClusterEvent) -> ClusterEvent {
        match event {
            ClusterEvent::Applied(Object::Pod(pod)) => {
                ClusterEvent::Applied(Object::Pod(Box::new(self.with_status(*pod))))
            }
            ClusterEvent::Resynced(Kind::Pod, pods) => ClusterEvent::Resynced(
                Kind::Pod,
                pods.into_iter()
                    .map(|object| match object {
                        Object::Pod(pod) => Object::Pod(Box::new(self.with_status(*pod))),
                        other => other,
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    fn with_status(&self, mut pod: Pod) -> Pod {
        let annotations = pod.metadata.annotations.get_or_insert_default();
        if annotations.contains_key(NETWORK_STATUS_ANNOTATION) {
            return pod;
        }
        let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            return pod;
        };
        let key = PodKey {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        if let Some(statuses) = self.endpoints.statuses_of(&key) {
            let rendered = render_network_status(statuses);
            pod.metadata
                .annotations
                .get_or_insert_default()
                .insert(NETWORK_STATUS_ANNOTATION.to_owned(), rendered);
        }
        pod
    }

    pub fn explain(&self, flow: &Flow) -> Explanation {
        self.engine.explain(flow)
    }

    /// The endpoint the datapath numbers `datapath_id`.
    pub fn endpoint_named(&self, datapath_id: u32) -> Option<&EndpointId> {
        self.endpoints.by_datapath_id(datapath_id)
    }

    /// Reads the kernel's figures into `metrics`.
    pub fn refresh(&mut self, metrics: &super::metrics::Metrics) -> Result<(), DatapathError> {
        use super::metrics::{MapLabels, VerdictLabels};
        metrics.endpoints.set(self.endpoints.len() as i64);
        for (map, entries) in self.datapath.occupancy()? {
            metrics
                .map_entries
                .get_or_create(&MapLabels { map: map.into() })
                .set(entries as i64);
        }
        let mut sums = [[0u64; 2]; 2];
        let keys: Vec<_> = self.endpoints.iter().filter_map(|(_, e)| e.key).collect();
        for key in keys {
            let Ok(counters) = self.datapath.counters(&key) else {
                continue;
            };
            for (d, direction) in [counters.ingress, counters.egress].iter().enumerate() {
                sums[d][0] += direction.allowed.packets;
                sums[d][1] += direction.denied.packets;
            }
        }
        for (d, direction) in ["ingress", "egress"].iter().enumerate() {
            for (v, verdict) in ["allow", "deny"].iter().enumerate() {
                metrics
                    .verdict_packets
                    .get_or_create(&VerdictLabels {
                        direction: (*direction).into(),
                        verdict: (*verdict).into(),
                    })
                    .set(sums[d][v] as i64);
            }
        }
        metrics
            .events_suppressed
            .set(self.datapath.events_suppressed()? as i64);
        Ok(())
    }
}

fn log_drift(id: &EndpointId, drift: &[Drift]) {
    let what: Vec<String> = drift.iter().map(ToString::to_string).collect();
    tracing::warn!(
        "pod {} interface {} on {}: {} differed from its policy in the kernel (changed by something other than this agent); rewriting them",
        id.pod,
        id.interface,
        id.network,
        what.join(", ")
    );
}
