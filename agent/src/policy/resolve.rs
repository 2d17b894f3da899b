//! Compiles the policy of one pod on one network into datapath rules: which policies
//! isolate it, and what each of their rules allows once selectors, named ports and
//! addresses are resolved against the cluster.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use netwarden_cni::NetworkRef;

use super::{
    selections::{scope_pods, Scope, Selections},
    state::ClusterState,
    DirectionProvenance, Provenance, RuleOrigin,
};
use crate::{
    cluster::objects::{
        Peer, PodKey, PodView, PolicyKey, PolicyView, PortEntry, PortSpec, RulePeers, RulePorts,
        RuleView,
    },
    datapath::rules::{
        Direction, EndpointPolicy, Isolation, PeerBlock, Peers, PortMatch, PortRange, Ports, Rule,
    },
};

/// The policies in `pod`'s namespace that select it on `network`, in key order.
pub(crate) fn applicable<'a>(
    state: &'a ClusterState,
    pod: &'a PodView,
    network: &'a NetworkRef,
) -> impl Iterator<Item = &'a PolicyView> + 'a {
    state
        .policies_by_namespace
        .get(&pod.key.namespace)
        .into_iter()
        .flatten()
        .filter_map(|key| state.policies.get(key).map(|p| &**p))
        .filter(move |p| p.networks.contains(network) && p.pod_selector.matches(&pod.labels))
}

/// Compiles endpoints over one unchanging state. A rule's peers do not depend on the
/// endpoint, and a rule recurs across the endpoints its policy selects: each rule is
/// resolved once per resolver, on the addresses the selections keep.
pub(crate) struct Resolver<'a> {
    state: &'a ClusterState,
    selections: &'a mut Selections,
    peers: HashMap<RuleOnNetwork<'a>, Peers>,
    /// What egress rules with named ports compile to (whatever the endpoint).
    named: HashMap<RuleOnNetwork<'a>, Vec<Rule>>,
}

/// A policy's rule (by direction and position) on a network.
type RuleOnNetwork<'a> = (&'a PolicyKey, Direction, usize, &'a NetworkRef);

impl<'a> Resolver<'a> {
    pub fn new(state: &'a ClusterState, selections: &'a mut Selections) -> Self {
        Self {
            state,
            selections,
            peers: HashMap::new(),
            named: HashMap::new(),
        }
    }

    pub fn state(&self) -> &'a ClusterState {
        self.state
    }

    /// `pod`'s tables on `network`, with the origin of every rule.
    pub fn compile(
        &mut self,
        pod: &'a PodView,
        network: &'a NetworkRef,
    ) -> (EndpointPolicy, Provenance) {
        let mut policy = EndpointPolicy::default();
        let mut provenance = Provenance::default();
        for direction in [Direction::Ingress, Direction::Egress] {
            let mut isolated_by = Vec::new();
            let mut rules = Vec::new();
            let mut origins = Vec::new();
            for p in applicable(self.state, pod, network).filter(|p| p.isolates(direction)) {
                isolated_by.push(p.key.clone());
                for rule in p.rules(direction) {
                    let origin = RuleOrigin {
                        policy: p.key.clone(),
                        direction,
                        rule: rule.index,
                    };
                    for compiled in self.compile_rule(p, rule, direction, pod, network) {
                        rules.push(compiled);
                        origins.push(origin.clone());
                    }
                }
            }
            if !isolated_by.is_empty() {
                let isolation = Isolation::Isolated(rules);
                match direction {
                    Direction::Ingress => policy.ingress = isolation,
                    Direction::Egress => policy.egress = isolation,
                }
                let dp = DirectionProvenance {
                    isolated_by,
                    rules: origins,
                };
                match direction {
                    Direction::Ingress => provenance.ingress = dp,
                    Direction::Egress => provenance.egress = dp,
                }
            }
        }
        (policy, provenance)
    }

    /// One policy rule as datapath rules: one, or none when it can match nothing, or
    /// (egress with named ports) one per group of destination pods whose ports resolve
    /// alike.
    fn compile_rule(
        &mut self,
        policy: &'a PolicyView,
        rule: &'a RuleView,
        direction: Direction,
        pod: &PodView,
        network: &'a NetworkRef,
    ) -> Vec<Rule> {
        let entries = match &rule.ports {
            RulePorts::Any => {
                return vec![Rule {
                    peers: self.peers(policy, direction, rule, network),
                    ports: Ports::Any,
                }]
            }
            RulePorts::Listed(entries) => entries,
        };
        let mut numbered: Vec<PortMatch> = entries.iter().filter_map(numbered_port).collect();
        let named: Vec<(&PortEntry, &str)> = entries
            .iter()
            .filter_map(|e| match &e.port {
                PortSpec::Named(name) => Some((e, name.as_str())),
                _ => None,
            })
            .collect();
        match direction {
            // The destination is the endpoint's own pod: its container ports name the numbers.
            Direction::Ingress => {
                numbered.extend(named.iter().flat_map(|(e, name)| {
                    pod.resolve_named_port(name, e.protocol).map(|n| PortMatch {
                        protocol: e.protocol,
                        ports: PortRange::single(n),
                    })
                }));
                if numbered.is_empty() {
                    return Vec::new();
                }
                vec![Rule {
                    peers: self.peers(policy, direction, rule, network),
                    ports: Ports::Matches(normalized(numbered)),
                }]
            }
            Direction::Egress => {
                let mut compiled = Vec::new();
                if !numbered.is_empty() {
                    compiled.push(Rule {
                        peers: self.peers(policy, direction, rule, network),
                        ports: Ports::Matches(normalized(numbered)),
                    });
                }
                if !named.is_empty() {
                    let state = self.state;
                    let rules = self
                        .named
                        .entry((&policy.key, direction, rule.index, network))
                        .or_insert_with(|| {
                            named_egress(state, policy, &rule.peers, &named, network)
                        });
                    compiled.extend(rules.iter().cloned());
                }
                compiled
            }
        }
    }

    /// The addresses a rule's peers stand for on `network`.
    fn peers(
        &mut self,
        policy: &'a PolicyView,
        direction: Direction,
        rule: &'a RuleView,
        network: &'a NetworkRef,
    ) -> Peers {
        let key = (&policy.key, direction, rule.index, network);
        if let Some(peers) = self.peers.get(&key) {
            return peers.clone();
        }
        let peers = match &rule.peers {
            RulePeers::Any => Peers::Any,
            RulePeers::Listed(list) => {
                let mut blocks = Vec::new();
                for peer in list {
                    match peer {
                        Peer::Block(block) => blocks.push(block.clone()),
                        Peer::Pods { namespaces, pods } => {
                            let scope = Scope::of(policy, namespaces);
                            blocks.extend_from_slice(
                                self.selections.hosts(self.state, &scope, pods, network),
                            )
                        }
                    }
                }
                Peers::Blocks(normalized(blocks))
            }
        };
        self.peers.insert(key, peers.clone());
        peers
    }
}

/// Egress named ports resolve against each destination pod: destination addresses are
/// grouped by the port set they resolve to. Addresses that are no pod's (of an ipBlock)
/// resolve to nothing.
fn named_egress<'a>(
    state: &'a ClusterState,
    policy: &PolicyView,
    rule_peers: &RulePeers,
    named: &[(&PortEntry, &str)],
    network: &NetworkRef,
) -> Vec<Rule> {
    // Destination pod addresses the rule's peers admit.
    let mut destinations: BTreeMap<&PodKey, (&PodView, BTreeSet<IpAddr>)> = BTreeMap::new();
    let mut admit = |pod: &'a PodView, addresses: &mut dyn Iterator<Item = IpAddr>| {
        destinations
            .entry(&pod.key)
            .or_insert_with(|| (pod, BTreeSet::new()))
            .1
            .extend(addresses)
    };
    match rule_peers {
        RulePeers::Any => {
            for pod in state.pods() {
                admit(pod, &mut pod.addresses_on(network));
            }
        }
        RulePeers::Listed(list) => {
            for peer in list {
                match peer {
                    Peer::Block(block) => {
                        for pod in state.pods() {
                            admit(
                                pod,
                                &mut pod.addresses_on(network).filter(|a| block.contains(*a)),
                            );
                        }
                    }
                    Peer::Pods { namespaces, pods } => {
                        let scope = Scope::of(policy, namespaces);
                        for pod in scope_pods(state, &scope).filter(|p| pods.matches(&p.labels)) {
                            admit(pod, &mut pod.addresses_on(network));
                        }
                    }
                }
            }
        }
    }
    let mut groups: BTreeMap<Vec<PortMatch>, Vec<PeerBlock>> = BTreeMap::new();
    for (pod, addresses) in destinations.into_values() {
        let resolved: Vec<PortMatch> = named
            .iter()
            .flat_map(|(e, name)| {
                pod.resolve_named_port(name, e.protocol).map(|n| PortMatch {
                    protocol: e.protocol,
                    ports: PortRange::single(n),
                })
            })
            .collect();
        if resolved.is_empty() || addresses.is_empty() {
            continue;
        }
        groups
            .entry(normalized(resolved))
            .or_default()
            .extend(addresses.into_iter().map(PeerBlock::host));
    }
    groups
        .into_iter()
        .map(|(ports, blocks)| Rule {
            peers: Peers::Blocks(normalized(blocks)),
            ports: Ports::Matches(ports),
        })
        .collect()
}

fn numbered_port(entry: &PortEntry) -> Option<PortMatch> {
    let ports = match &entry.port {
        PortSpec::All => PortRange::ALL,
        PortSpec::Range(range) => *range,
        PortSpec::Named(_) => return None,
    };
    Some(PortMatch {
        protocol: entry.protocol,
        ports,
    })
}

fn normalized<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items.dedup();
    items
}
