//! The addresses every selector peer of the current policies stands for, per network, kept
//! up to date as pods and namespaces change. A change to one pod or to one namespace's
//! labels moves a few addresses in and out of the selections it affects and names those,
//! so that only the endpoints of policies using them are recompiled; and compiling an
//! endpoint reads these addresses instead of walking the cluster's pods.
use std::{
    borrow::Borrow,
    collections::{btree_map::Entry, BTreeMap},
    net::IpAddr,
    sync::Arc,
};

use netwarden_cni::NetworkRef;

use super::state::ClusterState;
use crate::{
    cluster::objects::{
        LabelSelector, Labels, NamespaceScope, Peer, PodView, PolicyKey, PolicyView, RulePeers,
    },
    datapath::rules::{Direction, PeerBlock},
};

/// Where a selector peer looks for pods.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Scope {
    /// One namespace: the policy's own (`podSelector` alone).
    Own(String),
    /// The namespaces whose labels match.
    Selected(LabelSelector),
}

impl Scope {
    /// Where a peer of `policy` with `namespaces` looks.
    pub fn of(policy: &PolicyView, namespaces: &NamespaceScope) -> Self {
        match namespaces {
            NamespaceScope::Own => Self::Own(policy.key.namespace.clone()),
            NamespaceScope::Selected(selector) => Self::Selected(selector.clone()),
        }
    }
}

/// A selection whose addresses on a network changed.
pub(crate) type Changed = (Scope, LabelSelector, NetworkRef);

#[derive(Debug, Default)]
pub(crate) struct Selections {
    /// `Own` scopes by namespace, then pod selector.
    own: BTreeMap<String, BTreeMap<LabelSelector, Selection>>,
    /// `Selected` scopes by namespace selector, then pod selector.
    selected: BTreeMap<LabelSelector, BTreeMap<LabelSelector, Selection>>,
}

#[derive(Debug, Default)]
struct Selection {
    /// The policies using it (their current version), and how many of their peers it is.
    users: BTreeMap<PolicyKey, (Arc<PolicyView>, usize)>,
    /// The selected pods' addresses by network; None until a compile first reads them,
    /// kept up to date from then on. Changes are reported either way: egress rules with
    /// named ports depend on which pods are selected without reading these.
    members: Option<BTreeMap<NetworkRef, Addresses>>,
}

impl Selection {
    /// Updates for a pod in scope (`pods` selects among them) changing from `old` to `new`;
    /// returns the networks where the addresses changed.
    fn pod_changed(
        &mut self,
        pods: &LabelSelector,
        old: Option<&PodView>,
        new: Option<&PodView>,
    ) -> Vec<NetworkRef> {
        let before = old.filter(|p| pods.matches(&p.labels));
        let after = new.filter(|p| pods.matches(&p.labels));
        let mut networks: Vec<&NetworkRef> = before
            .into_iter()
            .chain(after)
            .flat_map(|p| p.interfaces.iter().map(|i| &i.network))
            .collect();
        networks.sort();
        networks.dedup();
        let mut changed = Vec::new();
        for network in networks {
            let on = |pod: Option<&PodView>| {
                let mut addresses: Vec<IpAddr> = pod
                    .into_iter()
                    .flat_map(|p| p.addresses_on(network))
                    .collect();
                addresses.sort();
                addresses
            };
            let (was, is) = (on(before), on(after));
            if was == is {
                continue;
            }
            if let Some(members) = &mut self.members {
                let addresses = slot(members, network);
                was.into_iter().for_each(|a| addresses.remove(a));
                is.into_iter().for_each(|a| addresses.add(a));
            }
            changed.push(network.clone());
        }
        changed
    }
}

/// The addresses of the selected pods on one network.
#[derive(Debug, Default)]
struct Addresses {
    /// How many of the pods have each address (pods may share one).
    counts: BTreeMap<IpAddr, usize>,
    /// The addresses as host blocks, in order: built when first read after a change, as
    /// every rule using the selection copies them.
    hosts: Option<Vec<PeerBlock>>,
}

impl Addresses {
    fn add(&mut self, address: IpAddr) {
        *self.counts.entry(address).or_default() += 1;
        self.hosts = None;
    }

    fn remove(&mut self, address: IpAddr) {
        if let Entry::Occupied(mut count) = self.counts.entry(address) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
        self.hosts = None;
    }

    fn hosts(&mut self) -> &[PeerBlock] {
        self.hosts
            .get_or_insert_with(|| self.counts.keys().map(|&a| PeerBlock::host(a)).collect())
    }
}

impl Selections {
    /// Records `policy`'s selector peers. Add a policy's new version before removing its
    /// old one, so that the selections both use keep their addresses.
    pub fn add_users(&mut self, policy: &Arc<PolicyView>) {
        for (scope, pods) in selector_peers(policy) {
            let user = self
                .selection_mut(&scope, &pods)
                .users
                .entry(policy.key.clone())
                .or_insert_with(|| (policy.clone(), 0));
            user.0 = policy.clone();
            user.1 += 1;
        }
    }

    /// Forgets `policy`'s selector peers; a selection no policy uses any more goes.
    pub fn remove_users(&mut self, policy: &PolicyView) {
        for (scope, pods) in selector_peers(policy) {
            let scoped = match &scope {
                Scope::Own(namespace) => self.own.get_mut(namespace),
                Scope::Selected(selector) => self.selected.get_mut(selector),
            };
            let Some(scoped) = scoped else { continue };
            let Some(selection) = scoped.get_mut(&pods) else {
                continue;
            };
            if let Entry::Occupied(mut user) = selection.users.entry(policy.key.clone()) {
                user.get_mut().1 -= 1;
                if user.get().1 == 0 {
                    user.remove();
                }
            }
            if selection.users.is_empty() {
                scoped.remove(&pods);
                if scoped.is_empty() {
                    match &scope {
                        Scope::Own(namespace) => self.own.remove(namespace),
                        Scope::Selected(selector) => self.selected.remove(selector),
                    };
                }
            }
        }
    }

    /// The policies using a selection.
    pub fn users(&self, scope: &Scope, pods: &LabelSelector) -> impl Iterator<Item = &PolicyView> {
        let scoped = match scope {
            Scope::Own(namespace) => self.own.get(namespace),
            Scope::Selected(selector) => self.selected.get(selector),
        };
        scoped
            .and_then(|s| s.get(pods))
            .into_iter()
            .flat_map(|s| s.users.values().map(|(policy, _)| &**policy))
    }

    /// Moves one pod's addresses (in the namespace it is in, labelled as `state` has it)
    /// out of the selections it was in and into those it is in now.
    pub fn pod_changed(
        &mut self,
        state: &ClusterState,
        old: Option<&PodView>,
        new: Option<&PodView>,
        changed: &mut Vec<Changed>,
    ) {
        let Some(namespace) = old.or(new).map(|p| &p.key.namespace) else {
            return;
        };
        for (pods, selection) in self.own.get_mut(namespace).into_iter().flatten() {
            for network in selection.pod_changed(pods, old, new) {
                changed.push((Scope::Own(namespace.clone()), pods.clone(), network));
            }
        }
        let namespace = state.namespace(namespace);
        for (selector, scoped) in &mut self.selected {
            if !selector.matches(&namespace.labels) {
                continue;
            }
            for (pods, selection) in scoped {
                for network in selection.pod_changed(pods, old, new) {
                    changed.push((Scope::Selected(selector.clone()), pods.clone(), network));
                }
            }
        }
    }

    /// Moves the addresses of namespace `name`'s pods in or out of every selection whose
    /// namespace selector matched its labels before (`old`) but not now (`new`), or the
    /// other way round.
    pub fn namespace_changed(
        &mut self,
        state: &ClusterState,
        name: &str,
        old: &Labels,
        new: &Labels,
        changed: &mut Vec<Changed>,
    ) {
        for (selector, scoped) in &mut self.selected {
            let entering = selector.matches(new);
            if selector.matches(old) == entering {
                continue;
            }
            for (pods, selection) in scoped {
                let mut networks: Vec<&NetworkRef> = Vec::new();
                for pod in state.pods_in(name).filter(|p| pods.matches(&p.labels)) {
                    for interface in &pod.interfaces {
                        if let Some(members) = &mut selection.members {
                            let addresses = slot(members, &interface.network);
                            for &address in &interface.ips {
                                if entering {
                                    addresses.add(address);
                                } else {
                                    addresses.remove(address);
                                }
                            }
                        }
                        if !interface.ips.is_empty() {
                            networks.push(&interface.network);
                        }
                    }
                }
                networks.sort();
                networks.dedup();
                changed.extend(
                    networks
                        .into_iter()
                        .map(|n| (Scope::Selected(selector.clone()), pods.clone(), n.clone())),
                );
            }
        }
    }

    /// The addresses of the pods `pods` selects in `scope` on `network` as host blocks,
    /// in order, each once. The first read of a selection walks the pods in scope.
    pub fn hosts(
        &mut self,
        state: &ClusterState,
        scope: &Scope,
        pods: &LabelSelector,
        network: &NetworkRef,
    ) -> &[PeerBlock] {
        // Explaining a flow reads selections no policy was added for: add them here too.
        let selection = self.selection_mut(scope, pods);
        let members = selection.members.get_or_insert_with(|| {
            let mut members: BTreeMap<NetworkRef, Addresses> = BTreeMap::new();
            for pod in scope_pods(state, scope).filter(|p| pods.matches(&p.labels)) {
                for interface in &pod.interfaces {
                    let addresses = slot(&mut members, &interface.network);
                    interface.ips.iter().for_each(|&a| addresses.add(a));
                }
            }
            members
        });
        members.get_mut(network).map_or(&[], Addresses::hosts)
    }

    /// The selection, added if missing (cloning the keys only then).
    fn selection_mut(&mut self, scope: &Scope, pods: &LabelSelector) -> &mut Selection {
        let scoped = match scope {
            Scope::Own(namespace) => slot(&mut self.own, namespace.as_str()),
            Scope::Selected(selector) => slot(&mut self.selected, selector),
        };
        slot(scoped, pods)
    }
}

/// `map[key]`, added as the default if missing, cloning `key` only then.
fn slot<'m, K, Q, V>(map: &'m mut BTreeMap<K, V>, key: &Q) -> &'m mut V
where
    K: Borrow<Q> + Ord,
    Q: ToOwned<Owned = K> + Ord + ?Sized,
    V: Default,
{
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above if missing")
}

/// The pods of the namespaces `scope` covers (any labels).
pub(crate) fn scope_pods<'s: 'c, 'c>(
    state: &'s ClusterState,
    scope: &'c Scope,
) -> Box<dyn Iterator<Item = &'s PodView> + 'c> {
    match scope {
        Scope::Own(namespace) => Box::new(state.pods_in(namespace)),
        Scope::Selected(selector) => Box::new(
            state
                .namespace_names()
                .into_iter()
                .filter(|n| selector.matches(&state.namespace(n).labels))
                .flat_map(|n| state.pods_in(n)),
        ),
    }
}

fn selector_peers(policy: &PolicyView) -> impl Iterator<Item = (Scope, LabelSelector)> + '_ {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .flat_map(|d| policy.rules(d))
        .flat_map(|r| match &r.peers {
            RulePeers::Listed(list) => list.as_slice(),
            RulePeers::Any => &[],
        })
        .filter_map(|peer| match peer {
            Peer::Pods { namespaces, pods } => Some((Scope::of(policy, namespaces), pods.clone())),
            Peer::Block(_) => None,
        })
}
