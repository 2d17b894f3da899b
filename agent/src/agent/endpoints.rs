//! The pod interfaces this agent attached: which kernel interface each endpoint is, the
//! network-status it published for each sandbox, and what it last programmed. Rebuilt on
//! start from the per-sandbox cache (netns path + ifname per attachment).
use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use netwarden_cni::{
    cache::{Cache, CacheError},
    protocol::ContainerId,
    status::{build_network_status, NetworkStatus},
    InterfaceName, NetworkRef,
};

use crate::{
    cluster::objects::PodKey,
    datapath::{rules::EndpointPolicy, EndpointKey, InterfaceTarget},
    policy::EndpointId,
};

/// What an endpoint's tables were last set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub policy: EndpointPolicy,
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct LocalEndpoint {
    pub container: ContainerId,
    pub target: InterfaceTarget,
    /// The interface's addresses from its delegate's result: an open endpoint still
    /// drops packets spoofing another source.
    pub addresses: Vec<IpAddr>,
    /// Known once attached by this process.
    pub key: Option<EndpointKey>,
    /// The datapath's endpoint id and the tables written, once programmed.
    pub programmed: Option<(u32, Desired)>,
}

/// One sandbox's published network-status.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub pod: PodKey,
    pub statuses: Vec<NetworkStatus>,
}

#[derive(Debug, Default)]
pub struct Endpoints {
    endpoints: BTreeMap<EndpointId, LocalEndpoint>,
    sandboxes: BTreeMap<ContainerId, Sandbox>,
}

impl Endpoints {
    /// Every cached sandbox with a network namespace; records that name no pod are skipped
    /// (they were not made through the agent).
    pub fn from_cache(cache: &Cache) -> Result<Self, CacheError> {
        let mut endpoints = Self::default();
        for id in cache.container_ids()? {
            let Some(record) = cache.read(&id)? else {
                continue;
            };
            let (Some(pod), Some(netns)) = (record.args.pod(), record.netns.clone()) else {
                continue;
            };
            let pod = PodKey {
                namespace: pod.namespace,
                name: pod.name,
            };
            let statuses = build_network_status(&record.attachments);
            endpoints.insert(&record.container_id, pod, netns, statuses);
        }
        Ok(endpoints)
    }

    /// Records a sandbox and its secondary interfaces (not yet attached).
    pub fn insert(
        &mut self,
        container: &ContainerId,
        pod: PodKey,
        netns: PathBuf,
        statuses: Vec<NetworkStatus>,
    ) -> Vec<EndpointId> {
        let mut added = Vec::new();
        for status in statuses.iter().filter(|s| !s.default) {
            let (Ok(network), Some(Ok(interface))) = (
                status.name.parse::<NetworkRef>(),
                status.interface.as_deref().map(str::parse::<InterfaceName>),
            ) else {
                continue;
            };
            let id = EndpointId {
                pod: pod.clone(),
                network,
                interface: interface.clone(),
            };
            self.endpoints.insert(
                id.clone(),
                LocalEndpoint {
                    container: container.clone(),
                    target: InterfaceTarget {
                        netns: netns.clone(),
                        ifname: interface,
                    },
                    addresses: status.ips.clone(),
                    key: None,
                    programmed: None,
                },
            );
            added.push(id);
        }
        self.sandboxes
            .insert(container.clone(), Sandbox { pod, statuses });
        added
    }

    /// Forgets a sandbox; returns its endpoints.
    pub fn remove(&mut self, container: &ContainerId) -> Vec<(EndpointId, LocalEndpoint)> {
        self.sandboxes.remove(container);
        let ids: Vec<EndpointId> = self
            .endpoints
            .iter()
            .filter(|(_, e)| &e.container == container)
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| self.endpoints.remove_entry(&id))
            .collect()
    }

    pub fn get_mut(&mut self, id: &EndpointId) -> Option<&mut LocalEndpoint> {
        self.endpoints.get_mut(id)
    }

    pub fn ids(&self) -> Vec<EndpointId> {
        self.endpoints.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&EndpointId, &LocalEndpoint)> {
        self.endpoints.iter()
    }

    /// The endpoint the datapath knows by `datapath_id`.
    pub fn by_datapath_id(&self, datapath_id: u32) -> Option<&EndpointId> {
        self.endpoints
            .iter()
            .find(|(_, e)| {
                e.programmed
                    .as_ref()
                    .is_some_and(|(id, _)| *id == datapath_id)
            })
            .map(|(id, _)| id)
    }

    /// The network-status this agent published for `pod` (its sandbox here, if any).
    pub fn statuses_of(&self, pod: &PodKey) -> Option<&[NetworkStatus]> {
        self.sandboxes
            .values()
            .find(|s| &s.pod == pod)
            .map(|s| s.statuses.as_slice())
    }
}
