//! The incremental engine: applies events to its cluster state, works out which
//! endpoints the change can affect, recompiles only those and reports what changed.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use netwarden_cni::{InterfaceName, NetworkRef};

use super::{
    explain::{self, Explanation, Flow},
    resolve::Resolver,
    selections::{Changed, Selections},
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
    /// The addresses of the current policies' selector peers.
    selections: Selections,
    /// Shared with the changes that announced them.
    emitted: BTreeMap<Attachment, BTreeMap<InterfaceName, Arc<EndpointTables>>>,
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
            selections: Selections::default(),
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
        let mut changed = Vec::new();
        for touched in &touched {
            self.follow(touched, &mut changed);
        }
        if touched.len() > self.wholesale_above {
            // A resync touching many objects: recompiling every local endpoint costs less
            // than finding out which ones each object affects.
            self.all_local(&mut affected);
        } else {
            for touched in &touched {
                self.affected_by(touched, &mut affected);
            }
            for selection in &changed {
                self.using(selection, &mut affected);
            }
        }
        // Interfaces on a network that started or stopped being listed by any policy
        // start or stop being endpoints.
        for network in covered_before.symmetric_difference(&self.state.covered_networks()) {
            self.local_on(network, None, &mut affected);
        }
        // Compile all first, over the same state, so that they share resolved rules.
        let mut resolver = Resolver::new(&self.state, &mut self.selections);
        let compiled: Vec<_> = affected
            .into_iter()
            .map(|attachment| {
                let now = compile(&self.node, &mut resolver, &attachment);
                (attachment, now)
            })
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
                        &**tables,
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
            .map(|t| &**t)
    }

    /// Objects (or parts of them) that were ignored, and why.
    pub fn errors(&self) -> impl Iterator<Item = &ObjectError> {
        self.state.errors.values().flatten()
    }

    pub fn explain(&self, flow: &Flow) -> Explanation {
        explain::explain(&self.state, flow)
    }

    /// Keeps the local pod index and the selections in step with one changed object;
    /// collects the selections whose addresses changed.
    fn follow(&mut self, touched: &Touched, changed: &mut Vec<Changed>) {
        match touched {
            Touched::Pod(old, new) => {
                self.index_local(old.as_deref(), new.as_deref());
                self.selections
                    .pod_changed(&self.state, old.as_deref(), new.as_deref(), changed);
            }
            Touched::Namespace(name, old, new) => {
                let labels = |view: &Option<NamespaceView>| {
                    view.as_ref().map_or_else(
                        || NamespaceView::unlabelled(name).labels,
                        |v| v.labels.clone(),
                    )
                };
                self.selections.namespace_changed(
                    &self.state,
                    name,
                    &labels(old),
                    &labels(new),
                    changed,
                );
            }
            Touched::Policy(old, new) => {
                // The new version first, so that selections both use keep their addresses.
                if let Some(new) = new {
                    self.selections.add_users(new);
                }
                if let Some(old) = old {
                    self.selections.remove_users(old);
                }
            }
        }
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
        if let Some(new) = new.filter(|p| is_local(&self.node, p)) {
            self.local_by_namespace
                .entry(new.key.namespace.clone())
                .or_default()
                .insert(new.key.clone());
        }
    }

    /// Records `attachment`'s new tables; returns the endpoints that changed.
    fn emit(
        &mut self,
        attachment: Attachment,
        now: BTreeMap<InterfaceName, EndpointTables>,
    ) -> Vec<EndpointChange> {
        let (key, network) = &attachment;
        let now: BTreeMap<InterfaceName, Arc<EndpointTables>> =
            now.into_iter().map(|(i, t)| (i, Arc::new(t))).collect();
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

    /// Adds every attachment whose tables `touched` may change, but for those the
    /// selections it changed reach (see [`Self::using`]). A superset is fine (the
    /// recompiled result is compared with the last one); a missing one is a bug, which
    /// the incremental-versus-full property test looks for.
    fn affected_by(&self, touched: &Touched, affected: &mut BTreeSet<Attachment>) {
        match touched {
            Touched::Pod(old, new) => {
                for pod in old.iter().chain(new) {
                    if is_local(&self.node, pod) {
                        for interface in &pod.interfaces {
                            affected.insert((pod.key.clone(), interface.network.clone()));
                        }
                    }
                    // A destination whose named ports resolve: its ports may have changed
                    // with its addresses and selections unchanged.
                    let namespace = self.state.namespace(&pod.key.namespace);
                    for network in pod.interfaces.iter().map(|i| &i.network) {
                        for policy in self.policies_on(network) {
                            if names_ports_of(policy, pod, &namespace, network) {
                                self.local_on(network, Some(policy), affected);
                            }
                        }
                    }
                }
            }
            // Only its labels changed, not its pods: what they select is in the selections.
            Touched::Namespace(..) => {}
            Touched::Policy(old, new) => {
                for policy in old.iter().chain(new) {
                    for network in &policy.networks {
                        self.local_on(network, Some(policy), affected);
                    }
                }
            }
        }
    }

    /// Adds the endpoints of the policies that use a selection whose addresses changed.
    fn using(&self, (scope, pods, network): &Changed, affected: &mut BTreeSet<Attachment>) {
        for policy in self.selections.users(scope, pods) {
            if policy.networks.contains(network) {
                self.local_on(network, Some(policy), affected);
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
            .filter_map(|k| self.state.policies.get(k).map(|p| &**p))
    }

    /// Every local pod interface, and every attachment emitted so far (which may have
    /// stopped being local).
    fn all_local(&self, affected: &mut BTreeSet<Attachment>) {
        affected.extend(self.emitted.keys().cloned());
        for key in self.local_by_namespace.values().flatten() {
            for interface in self.state.pod(key).iter().flat_map(|p| &p.interfaces) {
                affected.insert((key.clone(), interface.network.clone()));
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
            None => Box::new(self.local_by_namespace.values().flatten()),
        };
        for key in candidates {
            let Some(pod) = self.state.pod(key) else {
                continue;
            };
            let on_network = pod.interfaces.iter().any(|i| &i.network == network);
            let selected = policy.is_none_or(|p| p.pod_selector.matches(&pod.labels));
            if on_network && selected {
                affected.insert((key.clone(), network.clone()));
            }
        }
    }
}

fn is_local(node: &str, pod: &PodView) -> bool {
    pod.node.as_deref() == Some(node)
}

/// The tables `attachment`'s interfaces have now (none when it is not an endpoint).
fn compile(
    node: &str,
    resolver: &mut Resolver<'_>,
    (key, network): &Attachment,
) -> BTreeMap<InterfaceName, EndpointTables> {
    let state = resolver.state();
    let mut now = BTreeMap::new();
    let Some(pod) = state.pod(key).filter(|p| is_local(node, p)) else {
        return now;
    };
    // The pod's own copy of the network: the resolver keeps rules by it.
    let Some(network) = pod
        .interfaces
        .iter()
        .map(|i| &i.network)
        .find(|n| *n == network)
    else {
        return now;
    };
    if !state.is_covered(network) {
        return now;
    }
    let (policy, provenance) = resolver.compile(pod, network);
    let mut addresses: BTreeMap<&InterfaceName, Vec<IpAddr>> = BTreeMap::new();
    for interface in pod.interfaces.iter().filter(|i| &i.network == network) {
        addresses
            .entry(&interface.interface)
            .or_default()
            .extend(&interface.ips);
    }
    // Usually one interface per network: it takes the tables, any other copies them.
    let mut interfaces = addresses.into_iter();
    let Some((first, addresses)) = interfaces.next() else {
        return now;
    };
    let tables = EndpointTables {
        addresses,
        policy,
        provenance,
    };
    for (interface, addresses) in interfaces {
        now.insert(
            interface.clone(),
            EndpointTables {
                addresses,
                ..tables.clone()
            },
        );
    }
    now.insert(first.clone(), tables);
    now
}

/// Whether an egress rule of `policy` with named ports on `network` admits `pod` (in
/// `namespace`), so that its container ports count.
fn names_ports_of(
    policy: &PolicyView,
    pod: &PodView,
    namespace: &NamespaceView,
    network: &NetworkRef,
) -> bool {
    policy.rules(Direction::Egress).iter().any(|rule| {
        let named = matches!(&rule.ports, RulePorts::Listed(entries)
            if entries.iter().any(|e| matches!(e.port, PortSpec::Named(_))));
        named
            && match &rule.peers {
                RulePeers::Any => true,
                RulePeers::Listed(list) => list.iter().any(|peer| match peer {
                    Peer::Pods { namespaces, pods } => {
                        let in_scope = match namespaces {
                            NamespaceScope::Own => pod.key.namespace == policy.key.namespace,
                            NamespaceScope::Selected(s) => s.matches(&namespace.labels),
                        };
                        in_scope && pods.matches(&pod.labels)
                    }
                    Peer::Block(block) => pod.addresses_on(network).any(|a| block.contains(a)),
                }),
            }
    })
}

fn endpoint_of(change: &EndpointChange) -> &EndpointId {
    match change {
        EndpointChange::Upsert { endpoint, .. } | EndpointChange::Removed { endpoint } => endpoint,
    }
}
