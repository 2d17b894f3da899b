//! The pod interfaces this agent attached: which kernel interface each endpoint is, the
//! network-status it published for each sandbox, and what it last programmed. Rebuilt on
//! start from the per-sandbox cache (netns path + ifname per attachment).
#[cfg(test)]
use std::path::Path;
use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use netwarden_cni::{
    cache::{Cache, CacheError},
    protocol::ContainerId,
    status::{build_network_status, NetworkStatus},
    InterfaceName, NetworkRef,
};

use crate::{
    cluster::objects::{cluster_network, PodKey},
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
    /// The cluster network's interface (eth0) is enforced on too.
    cluster_network: bool,
}

impl Endpoints {
    /// Every cached sandbox with a network namespace; records that name no pod are skipped
    /// (they were not made through the agent). With `cluster_network`, each sandbox's
    /// cluster-network interface is an endpoint too.
    pub fn from_cache(cache: &Cache, cluster_network: bool) -> Result<Self, CacheError> {
        let mut endpoints = Self {
            cluster_network,
            ..Self::default()
        };
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

    /// Records a sandbox and its interfaces to enforce on (not yet attached): the
    /// secondary ones, and the cluster network's when it is enforced on.
    pub fn insert(
        &mut self,
        container: &ContainerId,
        pod: PodKey,
        netns: PathBuf,
        statuses: Vec<NetworkStatus>,
    ) -> Vec<EndpointId> {
        let mut added = Vec::new();
        for status in &statuses {
            let network = if status.default {
                self.cluster_network.then(cluster_network)
            } else {
                status.name.parse::<NetworkRef>().ok()
            };
            let (Some(network), Some(Ok(interface))) = (
                network,
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

#[cfg(test)]
mod tests {
    use netwarden_cni::{
        cache::{AttachmentRecord, SandboxRecord},
        delegate::{Delegate, DelegateRequest},
        protocol::{CniArgs, CniResult, ConfList},
    };

    use super::*;

    fn attachment(
        network: &str,
        ifname: &str,
        is_default: bool,
        address: &str,
    ) -> AttachmentRecord {
        let config = ConfList::parse(r#"{"cniVersion":"1.0.0","type":"x"}"#, Some("n")).unwrap();
        let result = format!(
            r#"{{"cniVersion":"1.0.0","interfaces":[{{"name":"{ifname}","sandbox":"/run/netns/p"}}],
                "ips":[{{"address":"{address}/24","interface":0}}]}}"#
        );
        AttachmentRecord {
            network: network.into(),
            ifname: ifname.parse().unwrap(),
            is_default,
            default_route: vec![],
            delegate: Delegate::new(config, DelegateRequest::default()).unwrap(),
            result: Some(CniResult::parse(result.as_bytes()).unwrap().0),
        }
    }

    fn record(id: &str, args: &str, attachments: Vec<AttachmentRecord>) -> SandboxRecord {
        SandboxRecord::new(
            id.parse().unwrap(),
            Some(format!("/run/netns/{id}").into()),
            CniArgs::parse(args).unwrap(),
            vec![],
            attachments,
        )
    }

    #[test]
    fn a_restarted_agent_finds_every_enforced_interface_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache
            .write(&record(
                "c1",
                "K8S_POD_NAMESPACE=dev;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c1",
                vec![
                    attachment("cluster-net", "eth0", true, "10.244.1.5"),
                    attachment("dev/macvlan-conf", "net1", false, "192.168.1.205"),
                ],
            ))
            .unwrap();
        // Not made for a pod (no K8S_POD_* arguments): not an endpoint.
        cache
            .write(&record(
                "c2",
                "IgnoreUnknown=true",
                vec![attachment(
                    "dev/macvlan-conf",
                    "net1",
                    false,
                    "192.168.1.206",
                )],
            ))
            .unwrap();

        let with_eth0 = Endpoints::from_cache(&cache, true).unwrap();
        let networks: Vec<String> = with_eth0
            .iter()
            .map(|(id, _)| id.network.to_string())
            .collect();
        assert_eq!(networks, ["cluster-network", "dev/macvlan-conf"]);

        let endpoints = Endpoints::from_cache(&cache, false).unwrap();
        let found: Vec<_> = endpoints.iter().collect();
        assert_eq!(found.len(), 1);
        let (id, local) = found[0];
        assert_eq!(
            (
                id.pod.to_string(),
                id.network.to_string(),
                id.interface.as_str()
            ),
            ("dev/web".into(), "dev/macvlan-conf".into(), "net1")
        );
        assert_eq!(local.target.netns, Path::new("/run/netns/c1"));
        assert_eq!(
            local.addresses,
            ["192.168.1.205".parse::<IpAddr>().unwrap()]
        );
        assert!(local.key.is_none() && local.programmed.is_none());
        let web = PodKey {
            namespace: "dev".into(),
            name: "web".into(),
        };
        assert_eq!(endpoints.statuses_of(&web).map(<[_]>::len), Some(2));

        let container: ContainerId = "c1".parse().unwrap();
        let mut endpoints = endpoints;
        assert_eq!(endpoints.remove(&container).len(), 1);
        assert_eq!(endpoints.len(), 0);
        assert!(endpoints.statuses_of(&web).is_none());
    }
}
