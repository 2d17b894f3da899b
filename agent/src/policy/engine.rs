//! The incremental engine: applies events to its cluster state, works out which
//! endpoints the change can affect, recompiles only those and reports what changed.
use std::collections::{BTreeMap, BTreeSet};

use netwarden_cni::{InterfaceName, NetworkRef};

use super::{
    explain::{self, Explanation, Flow},
    resolve::{self, PeerCache},
    state::{ClusterState, Touched},
    EndpointChange, EndpointId, EndpointTables,
};
use crate::cluster::{
    objects::{
        NamespaceScope, NamespaceView, ObjectError, Peer, PodKey, PodView, PolicyView, PortSpec,
        RulePeers, RulePorts,
    },
    ClusterEvent,
};
use crate::datapath::rules::Direction;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// This node's name: endpoints are the interfaces of pods scheduled here.
    pub node: String,
    /// Networks on which networking.k8s.io/v1 NetworkPolicy applies too.
    pub standard_policy_networks: BTreeSet<NetworkRef>,
}

/// Above this many changed objects in one event, every local endpoint is recompiled.
const WHOLESALE: usize = 64;

/// A pod on a network: the unit of recompilation (all its interfaces there share tables
/// but for their addresses).
type Attachment = (PodKey, NetworkRef);

#[derive(Debug)]
pub struct Engine {
    node: String,
    state: ClusterState,
    emitted: BTreeMap<Attachment, BTreeMap<InterfaceName, EndpointTables>>,
    /// The pods on this node, by namespace: a policy's endpoints are among its
    /// namespace's local pods, a few of the namespace's pods.
    local_by_namespace: BTreeMap<String, BTreeSet<PodKey>>,
    /// [`WHOLESALE`]; tests lower it to exercise both paths on small clusters.
    wholesale_above: usize,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            node: config.node,
            state: ClusterState::new(config.standard_policy_networks),
            emitted: BTreeMap::new(),
            local_by_namespace: BTreeMap::new(),
            wholesale_above: WHOLESALE,
        }
    }

    #[cfg(test)]
    pub(super) fn set_wholesale_above(&mut self, touched: usize) {
        self.wholesale_above = touched;
    }

    /// Applies one event; returns the endpoints whose tables changed, in endpoint order.
    pub fn apply(&mut self, event: &ClusterEvent) -> Vec<EndpointChange> {
        let covered_before = self.state.covered_networks();
        let mut affected = BTreeSet::new();
        let touched = self.state.apply(event);
        for touched in &touched {
            if let Touched::Pod(old, new) = touched {
                self.index_local(old.as_ref(), new.as_ref());
            }
        }
        if touched.len() > self.wholesale_above {
            // A resync touching many objects: recompiling every local endpoint costs less
            // than finding out which ones each object affects.
            self.all_local(&mut affected);
        } else {
            for touched in &touched {
                self.affected_by(touched, &mut affected);
            }
        }
        // Interfaces on a network that started or stopped being listed by any policy
        // start or stop being endpoints.
        for network in covered_before.symmetric_difference(&self.state.covered_networks()) {
            self.local_on(network, None, &mut affected);
        }
        // Compile all first, over the same state, so that they share resolved peers.
        let mut cache = PeerCache::default();
        let compiled: Vec<_> = affected
            .iter()
            .map(|attachment| (attachment.clone(), self.compile(attachment, &mut cache)))
            .collect();
        compiled
            .into_iter()
            .flat_map(|(attachment, now)| self.emit(attachment, now))
            .collect()
    }

    /// The current output: every endpoint and its tables.
    pub fn endpoints(&self) -> impl Iterator<Item = (EndpointId, &EndpointTables)> {
        self.emitted
            .iter()
            .flat_map(|((pod, network), interfaces)| {
                interfaces.iter().map(move |(interface, tables)| {
                    (
                        EndpointId {
                            pod: pod.clone(),
                            network: network.clone(),
                            interface: interface.clone(),
                        },
                        tables,
                    )
                })
            })
    }

    /// The current tables of one endpoint; None when it is not an endpoint (not local,
    /// or no policy lists its network).
    pub fn tables(&self, endpoint: &EndpointId) -> Option<&EndpointTables> {
        self.emitted
            .get(&(endpoint.pod.clone(), endpoint.network.clone()))?
            .get(&endpoint.interface)
    }

    /// Objects (or parts of them) that were ignored, and why.
    pub fn errors(&self) -> impl Iterator<Item = &ObjectError> {
        self.state.errors.values().flatten()
    }

    pub fn explain(&self, flow: &Flow) -> Explanation {
        explain::explain(&self.state, flow)
    }

    fn index_local(&mut self, old: Option<&PodView>, new: Option<&PodView>) {
        if let Some(old) = old {
            let namespace = &old.key.namespace;
            if let Some(keys) = self.local_by_namespace.get_mut(namespace) {
                keys.remove(&old.key);
                if keys.is_empty() {
                    self.local_by_namespace.remove(namespace);
                }
            }
        }
        if let Some(new) = new.filter(|p| self.is_local(p)) {
            self.local_by_namespace
                .entry(new.key.namespace.clone())
                .or_default()
                .insert(new.key.clone());
        }
    }

    fn is_local(&self, pod: &PodView) -> bool {
        pod.node.as_deref() == Some(self.node.as_str())
    }

    /// The tables `attachment`'s interfaces have now (none when it is not an endpoint).
    fn compile<'a>(
        &'a self,
        attachment: &'a Attachment,
        cache: &mut PeerCache<'a>,
    ) -> BTreeMap<InterfaceName, EndpointTables> {
        let (key, network) = attachment;
        let mut now = BTreeMap::new();
        if let Some(pod) = self.state.pods.get(key) {
            if self.is_local(pod) && self.state.is_covered(network) {
                let (policy, provenance) = resolve::compile(&self.state, pod, network, cache);
                for interface in pod.interfaces.iter().filter(|i| &i.network == network) {
                    let tables: &mut EndpointTables = now
                        .entry(interface.interface.clone())
                        .or_insert_with(|| EndpointTables {
                            addresses: Vec::new(),
                            policy: policy.clone(),
                            provenance: provenance.clone(),
                        });
                    tables.addresses.extend(&interface.ips);
                }
            }
        }
        now
    }

    /// Records `attachment`'s new tables; returns the endpoints that changed.
    fn emit(
        &mut self,
        attachment: Attachment,
        now: BTreeMap<InterfaceName, EndpointTables>,
    ) -> Vec<EndpointChange> {
        let (key, network) = &attachment;
        let before = self.emitted.remove(&attachment).unwrap_or_default();
        let id = |interface: &InterfaceName| EndpointId {
            pod: key.clone(),
            network: network.clone(),
            interface: interface.clone(),
        };
        let mut changes: Vec<EndpointChange> = before
            .keys()
            .filter(|i| !now.contains_key(*i))
            .map(|i| EndpointChange::Removed { endpoint: id(i) })
            .collect();
        changes.extend(
            now.iter()
                .filter(|(i, tables)| before.get(*i) != Some(*tables))
                .map(|(i, tables)| EndpointChange::Upsert {
                    endpoint: id(i),
                    tables: tables.clone(),
                }),
        );
        changes.sort_by(|a, b| endpoint_of(a).cmp(endpoint_of(b)));
        if !now.is_empty() {
            self.emitted.insert(attachment, now);
        }
        changes
    }

    /// Adds every attachment whose tables `touched` may change. A superset is fine (the
    /// recompiled result is compared with the last one); a missing one is a bug, which the
    /// incremental-versus-full property test looks for.
    fn affected_by(&self, touched: &Touched, affected: &mut BTreeSet<Attachment>) {
        match touched {
            Touched::Pod(old, new) => {
                for pod in old.iter().chain(new) {
                    if self.is_local(pod) {
                        for interface in &pod.interfaces {
                            affected.insert((pod.key.clone(), interface.network.clone()));
                        }
                    }
                    // As a peer, or a destination whose named ports resolve.
                    let namespace = self.state.namespace(&pod.key.namespace);
                    for network in pod.interfaces.iter().map(|i| &i.network) {
                        for policy in self.policies_on(network) {
                            if may_reference(policy, pod, &namespace, network) {
                                self.local_on(network, Some(policy), affected);
                            }
                        }
                    }
                }
            }
            Touched::Namespace(name, old, new) => {
                let labels = [
                    old.clone()
                        .unwrap_or_else(|| NamespaceView::unlabelled(name)),
                    new.clone()
                        .unwrap_or_else(|| NamespaceView::unlabelled(name)),
                ];
                for policy in self.state.policies.values() {
                    // Only the namespace's labels changed, not its pods: a selector that
                    // matched it before and after still selects the same pods.
                    let selects_it = all_peers(policy).any(|peer| match peer {
                        Peer::Pods {
                            namespaces: NamespaceScope::Selected(selector),
                            ..
                        } => {
                            selector.matches(&labels[0].labels)
                                != selector.matches(&labels[1].labels)
                        }
                        _ => false,
                    });
                    if selects_it {
                        for network in &policy.networks {
                            self.local_on(network, Some(policy), affected);
                        }
                    }
                }
            }
            Touched::Policy(old, new) => {
                for policy in old.iter().chain(new) {
                    for network in &policy.networks {
                        self.local_on(network, Some(policy), affected);
                    }
                }
            }
        }
    }

    fn policies_on<'a>(
        &'a self,
        network: &NetworkRef,
    ) -> impl Iterator<Item = &'a PolicyView> + 'a {
        self.state
            .policies_by_network
            .get(network)
            .into_iter()
            .flatten()
            .filter_map(|k| self.state.policies.get(k))
    }

    /// Every local pod interface, and every attachment emitted so far (which may have
    /// stopped being local).
    fn all_local(&self, affected: &mut BTreeSet<Attachment>) {
        affected.extend(self.emitted.keys().cloned());
        for pod in self.state.pods.values().filter(|p| self.is_local(p)) {
            for interface in &pod.interfaces {
                affected.insert((pod.key.clone(), interface.network.clone()));
            }
        }
    }

    /// Local pods with an interface on `network` (only those `policy` selects, if given).
    fn local_on(
        &self,
        network: &NetworkRef,
        policy: Option<&PolicyView>,
        affected: &mut BTreeSet<Attachment>,
    ) {
        let candidates: Box<dyn Iterator<Item = &PodKey>> = match policy {
            Some(p) => Box::new(
                self.local_by_namespace
                    .get(&p.key.namespace)
                    .into_iter()
                    .flatten(),
            ),
            None => Box::new(
                self.state
                    .pods_by_network
                    .get(network)
                    .into_iter()
                    .flatten(),
            ),
        };
        for key in candidates {
            let Some(pod) = self.state.pods.get(key) else {
                continue;
            };
            let on_network = pod.interfaces.iter().any(|i| &i.network == network);
            let selected = policy.is_none_or(|p| p.pod_selector.matches(&pod.labels));
            if on_network && selected && self.is_local(pod) {
                affected.insert((key.clone(), network.clone()));
            }
        }
    }
}

/// Whether `policy`'s rules on `network` may resolve differently because of `pod` (in
/// `namespace`): some rule's peers admit it, where it counts. Selector peers contribute
/// the addresses of the pods they select; ipBlocks and "any" contribute fixed addresses,
/// except that egress named ports resolve against every destination pod they admit.
fn may_reference(
    policy: &PolicyView,
    pod: &PodView,
    namespace: &NamespaceView,
    network: &NetworkRef,
) -> bool {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .flat_map(|d| policy.rules(d).iter().map(move |r| (d, r)))
        .any(|(direction, rule)| {
            let named = direction == Direction::Egress
                && matches!(&rule.ports, RulePorts::Listed(entries)
                    if entries.iter().any(|e| matches!(e.port, PortSpec::Named(_))));
            match &rule.peers {
                RulePeers::Any => named,
                RulePeers::Listed(list) => list.iter().any(|peer| match peer {
                    Peer::Pods { .. } => selects(policy, peer, pod, namespace),
                    Peer::Block(block) => {
                        named && pod.addresses_on(network).any(|a| block.contains(a))
                    }
                }),
            }
        })
}

/// Whether the selector `peer` of `policy` selects `pod` (in `namespace`).
fn selects(policy: &PolicyView, peer: &Peer, pod: &PodView, namespace: &NamespaceView) -> bool {
    let Peer::Pods { namespaces, pods } = peer else {
        return false;
    };
    let in_scope = match namespaces {
        NamespaceScope::Own => pod.key.namespace == policy.key.namespace,
        NamespaceScope::Selected(selector) => selector.matches(&namespace.labels),
    };
    in_scope && pods.matches(&pod.labels)
}

fn all_peers(policy: &PolicyView) -> impl Iterator<Item = &Peer> {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .flat_map(|d| policy.rules(d))
        .flat_map(|r| match &r.peers {
            RulePeers::Listed(list) => list.as_slice(),
            RulePeers::Any => &[],
        })
}

fn endpoint_of(change: &EndpointChange) -> &EndpointId {
    match change {
        EndpointChange::Upsert { endpoint, .. } | EndpointChange::Removed { endpoint } => endpoint,
    }
}
