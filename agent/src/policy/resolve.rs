//! Compiles the policy of one pod on one network into datapath rules: which policies
//! isolate it, and what each of their rules allows once selectors, named ports and
//! addresses are resolved against the cluster.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    rc::Rc,
};

use netwarden_cni::NetworkRef;

use super::{state::ClusterState, DirectionProvenance, Provenance, RuleOrigin};
use crate::{
    cluster::objects::{
        NamespaceScope, Peer, PodKey, PodView, PolicyView, PortEntry, PortSpec, RulePeers,
        RulePorts, RuleView,
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
        .filter_map(|key| state.policies.get(key))
        .filter(move |p| p.networks.contains(network) && p.pod_selector.matches(&pod.labels))
}

/// The host blocks of selector peers on a network, resolved once per batch of compiles
/// over one unchanging state: the same peer (say `env: prod`) recurs across policies and
/// endpoints, and resolving it walks every pod it may select. Keyed by the namespace an
/// `Own`-scoped peer looks in (None for selected namespaces), the peer and the network.
#[derive(Default)]
pub(crate) struct PeerCache<'a> {
    resolved: HashMap<PeerOnNetwork<'a>, Rc<Vec<PeerBlock>>>,
}

type PeerOnNetwork<'a> = (Option<&'a str>, &'a Peer, &'a NetworkRef);

impl<'a> PeerCache<'a> {
    fn hosts(
        &mut self,
        state: &'a ClusterState,
        policy: &'a PolicyView,
        peer: &'a Peer,
        network: &'a NetworkRef,
    ) -> Rc<Vec<PeerBlock>> {
        let scope = match peer {
            Peer::Pods {
                namespaces: NamespaceScope::Own,
                ..
            } => Some(policy.key.namespace.as_str()),
            _ => None,
        };
        self.resolved
            .entry((scope, peer, network))
            .or_insert_with(|| {
                // Sorted, so that normalizing a rule's peers mostly merges sorted runs.
                Rc::new(normalized(
                    peer_pods(state, policy, peer)
                        .flat_map(|pod| pod.addresses_on(network).collect::<Vec<_>>())
                        .map(PeerBlock::host)
                        .collect(),
                ))
            })
            .clone()
    }
}

/// `pod`'s tables on `network`, with the origin of every rule.
pub(crate) fn compile<'a>(
    state: &'a ClusterState,
    pod: &'a PodView,
    network: &'a NetworkRef,
    cache: &mut PeerCache<'a>,
) -> (EndpointPolicy, Provenance) {
    let mut policy = EndpointPolicy::default();
    let mut provenance = Provenance::default();
    for direction in [Direction::Ingress, Direction::Egress] {
        let mut isolated_by = Vec::new();
        let mut rules = Vec::new();
        let mut origins = Vec::new();
        for p in applicable(state, pod, network).filter(|p| p.isolates(direction)) {
            isolated_by.push(p.key.clone());
            for rule in p.rules(direction) {
                let origin = RuleOrigin {
                    policy: p.key.clone(),
                    direction,
                    rule: rule.index,
                };
                for compiled in compile_rule(state, p, rule, direction, pod, network, cache) {
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

/// One policy rule as datapath rules: one, or none when it can match nothing, or (egress
/// with named ports) one per group of destination pods whose ports resolve alike.
fn compile_rule<'a>(
    state: &'a ClusterState,
    policy: &'a PolicyView,
    rule: &'a RuleView,
    direction: Direction,
    pod: &PodView,
    network: &'a NetworkRef,
    cache: &mut PeerCache<'a>,
) -> Vec<Rule> {
    let entries = match &rule.ports {
        RulePorts::Any => {
            return vec![Rule {
                peers: peers(state, policy, &rule.peers, network, cache),
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
                peers: peers(state, policy, &rule.peers, network, cache),
                ports: Ports::Matches(normalized(numbered)),
            }]
        }
        Direction::Egress => {
            let mut compiled = Vec::new();
            if !numbered.is_empty() {
                compiled.push(Rule {
                    peers: peers(state, policy, &rule.peers, network, cache),
                    ports: Ports::Matches(normalized(numbered)),
                });
            }
            if !named.is_empty() {
                compiled.extend(named_egress(state, policy, &rule.peers, &named, network));
            }
            compiled
        }
    }
}

/// Egress named ports resolve against each destination pod: destination addresses are
/// grouped by the port set they resolve to. Addresses that are no pod's (of an ipBlock)
/// resolve to nothing.
fn named_egress(
    state: &ClusterState,
    policy: &PolicyView,
    rule_peers: &RulePeers,
    named: &[(&PortEntry, &str)],
    network: &NetworkRef,
) -> Vec<Rule> {
    // Destination pod addresses the rule's peers admit.
    let mut destinations: BTreeMap<&PodKey, BTreeSet<IpAddr>> = BTreeMap::new();
    let on_network = || {
        state
            .pods_by_network
            .get(network)
            .into_iter()
            .flatten()
            .filter_map(|k| state.pods.get(k))
    };
    match rule_peers {
        RulePeers::Any => {
            for pod in on_network() {
                destinations
                    .entry(&pod.key)
                    .or_default()
                    .extend(pod.addresses_on(network));
            }
        }
        RulePeers::Listed(list) => {
            for peer in list {
                match peer {
                    Peer::Block(block) => {
                        for pod in on_network() {
                            destinations
                                .entry(&pod.key)
                                .or_default()
                                .extend(pod.addresses_on(network).filter(|a| block.contains(*a)));
                        }
                    }
                    Peer::Pods { .. } => {
                        for pod in peer_pods(state, policy, peer) {
                            destinations
                                .entry(&pod.key)
                                .or_default()
                                .extend(pod.addresses_on(network));
                        }
                    }
                }
            }
        }
    }
    let mut groups: BTreeMap<Vec<PortMatch>, Vec<PeerBlock>> = BTreeMap::new();
    for (key, addresses) in destinations {
        let pod = &state.pods[key];
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

/// The addresses a rule's peers stand for on `network`.
fn peers<'a>(
    state: &'a ClusterState,
    policy: &'a PolicyView,
    rule_peers: &'a RulePeers,
    network: &'a NetworkRef,
    cache: &mut PeerCache<'a>,
) -> Peers {
    let RulePeers::Listed(list) = rule_peers else {
        return Peers::Any;
    };
    let mut blocks = Vec::new();
    for peer in list {
        match peer {
            Peer::Block(block) => blocks.push(block.clone()),
            Peer::Pods { .. } => {
                blocks.extend(cache.hosts(state, policy, peer, network).iter().cloned())
            }
        }
    }
    Peers::Blocks(normalized(blocks))
}

/// The pods a selector peer of `policy` selects, on any network.
pub(crate) fn peer_pods<'a>(
    state: &'a ClusterState,
    policy: &'a PolicyView,
    peer: &'a Peer,
) -> Box<dyn Iterator<Item = &'a PodView> + 'a> {
    let Peer::Pods { namespaces, pods } = peer else {
        return Box::new(std::iter::empty());
    };
    let namespace_names: Vec<&String> = match namespaces {
        NamespaceScope::Own => vec![&policy.key.namespace],
        NamespaceScope::Selected(selector) => state
            .namespace_names()
            .into_iter()
            .filter(|n| selector.matches(&state.namespace(n).labels))
            .collect(),
    };
    Box::new(
        namespace_names
            .into_iter()
            .filter_map(|n| state.pods_by_namespace.get(n))
            .flatten()
            .filter_map(|k| state.pods.get(k))
            .filter(move |p| pods.matches(&p.labels)),
    )
}

fn normalized<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items.dedup();
    items
}
