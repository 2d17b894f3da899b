//! A naive evaluator written straight from SPEC-NOTES section 6, for tests only: per
//! connection it reads the raw Kubernetes objects (no views, no indexes, no compiled
//! tables) and checks isolation and every rule directly.
use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use k8s_openapi::{
    api::{
        core::v1::Pod,
        networking::v1::{NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use crate::cluster::{crd::POLICY_FOR_ANNOTATION, Object};

/// A rule as the API has it: its peers (`from`/`to`) and ports.
type RawRule<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

/// The other end of a connection.
#[derive(Debug, Clone, Copy)]
pub enum Party<'a> {
    Pod(&'a Pod, IpAddr),
    External(IpAddr),
}

impl Party<'_> {
    fn address(&self) -> IpAddr {
        match self {
            Self::Pod(_, a) | Self::External(a) => *a,
        }
    }

    fn pod(&self) -> Option<&Pod> {
        match self {
            Self::Pod(p, _) => Some(p),
            Self::External(_) => None,
        }
    }
}

pub struct Reference<'a> {
    pub objects: &'a [Object],
    /// Networks (`ns/name`) where NetworkPolicy applies.
    pub standard_networks: &'a BTreeSet<String>,
}

impl Reference<'_> {
    /// Does `src`'s egress on `network` let it reach `dst`?
    pub fn egress_allows(
        &self,
        src: &Pod,
        network: &str,
        dst: Party,
        protocol: &str,
        port: u16,
    ) -> bool {
        self.allows(src, network, false, dst, protocol, port)
    }

    /// Does `dst`'s ingress on `network` let `src` reach it?
    pub fn ingress_allows(
        &self,
        dst: &Pod,
        network: &str,
        src: Party,
        protocol: &str,
        port: u16,
    ) -> bool {
        self.allows(dst, network, true, src, protocol, port)
    }

    /// Whether some policy (of either kind) lists `network`.
    pub fn covers(&self, network: &str) -> bool {
        self.policies()
            .any(|(_, networks, _)| networks.iter().any(|n| n == network))
    }

    fn allows(
        &self,
        subject: &Pod,
        network: &str,
        ingress: bool,
        other: Party,
        protocol: &str,
        port: u16,
    ) -> bool {
        let subject_ns = subject.metadata.namespace.as_deref().unwrap();
        let mut isolated = false;
        for (policy_ns, networks, spec) in self.policies() {
            if policy_ns != subject_ns || !networks.iter().any(|n| n == network) {
                continue;
            }
            let selects = spec
                .pod_selector
                .as_ref()
                .is_none_or(|s| selector_matches(s, &labels(subject)));
            if !selects {
                continue;
            }
            let has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            let types = spec.policy_types.clone().unwrap_or_else(|| {
                let mut t = vec!["Ingress".to_owned()];
                if has_egress {
                    t.push("Egress".to_owned());
                }
                t
            });
            let direction = if ingress { "Ingress" } else { "Egress" };
            if !types.iter().any(|t| t == direction) {
                continue;
            }
            isolated = true;
            let rules: Vec<RawRule> = if ingress {
                spec.ingress
                    .iter()
                    .flatten()
                    .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                    .collect()
            } else {
                spec.egress
                    .iter()
                    .flatten()
                    .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                    .collect()
            };
            // The destination's container ports name the numbers.
            let destination = if ingress { Some(subject) } else { other.pod() };
            for (peers, ports) in rules {
                if self.peers_match(policy_ns, peers, other)
                    && ports_match(ports, protocol, port, destination)
                {
                    return true;
                }
            }
        }
        !isolated
    }

    fn policies(&self) -> impl Iterator<Item = (&str, Vec<String>, &NetworkPolicySpec)> {
        self.objects.iter().filter_map(|o| match o {
            Object::MultiNetworkPolicy(p) => {
                let ns = p.metadata.namespace.as_deref().unwrap();
                let networks = p
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(POLICY_FOR_ANNOTATION))
                    .map(|v| {
                        v.split(',')
                            .map(|item| {
                                let item = item.trim();
                                if item.contains('/') {
                                    item.to_owned()
                                } else {
                                    format!("{ns}/{item}")
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Some((ns, networks, &p.spec.policy))
            }
            Object::NetworkPolicy(p) => Some((
                p.metadata.namespace.as_deref().unwrap(),
                self.standard_networks.iter().cloned().collect(),
                p.spec.as_ref().unwrap(),
            )),
            _ => None,
        })
    }

    fn peers_match(
        &self,
        policy_ns: &str,
        peers: Option<&Vec<NetworkPolicyPeer>>,
        other: Party,
    ) -> bool {
        let Some(peers) = peers.filter(|p| !p.is_empty()) else {
            return true;
        };
        peers.iter().any(|peer| {
            if let Some(block) = &peer.ip_block {
                let address = other.address();
                let cidr: IpNet = block.cidr.parse().unwrap();
                return cidr.contains(&address)
                    && !block
                        .except
                        .iter()
                        .flatten()
                        .any(|e| e.parse::<IpNet>().unwrap().contains(&address));
            }
            let Some(pod) = other.pod() else {
                return false;
            };
            let pod_ns = pod.metadata.namespace.as_deref().unwrap();
            let namespace_ok = match &peer.namespace_selector {
                None => pod_ns == policy_ns,
                Some(selector) => selector_matches(selector, &self.namespace_labels(pod_ns)),
            };
            namespace_ok
                && peer
                    .pod_selector
                    .as_ref()
                    .is_none_or(|s| selector_matches(s, &labels(pod)))
        })
    }

    fn namespace_labels(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        let mut labels: std::collections::BTreeMap<String, String> = self
            .objects
            .iter()
            .find_map(|o| match o {
                Object::Namespace(n) if n.metadata.name.as_deref() == Some(name) => {
                    Some(n.metadata.labels.clone().unwrap_or_default())
                }
                _ => None,
            })
            .unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), name.into());
        labels
    }
}

fn ports_match(
    ports: Option<&Vec<NetworkPolicyPort>>,
    protocol: &str,
    port: u16,
    destination: Option<&Pod>,
) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|entry| {
        if entry.protocol.as_deref().unwrap_or("TCP") != protocol {
            return false;
        }
        match &entry.port {
            None => true,
            Some(IntOrString::Int(first)) => {
                let last = entry.end_port.unwrap_or(*first);
                (*first..=last).contains(&i32::from(port))
            }
            Some(IntOrString::String(name)) => destination.is_some_and(|pod| {
                pod.spec
                    .iter()
                    .flat_map(|s| &s.containers)
                    .flat_map(|c| c.ports.iter().flatten())
                    .any(|p| {
                        p.name.as_deref() == Some(name.as_str())
                            && p.protocol.as_deref().unwrap_or("TCP") == protocol
                            && p.container_port == i32::from(port)
                    })
            }),
        }
    })
}

fn labels(pod: &Pod) -> std::collections::BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

fn selector_matches(
    selector: &LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("test clusters use valid operators, not {other}"),
        }
    });
    by_labels && by_expressions
}

/// `pod`'s addresses on `network` (`ns/name`), read from its network-status JSON.
pub fn addresses(pod: &Pod, network: &str) -> Vec<IpAddr> {
    let Some(status) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(netwarden_cni::status::NETWORK_STATUS_ANNOTATION))
    else {
        return Vec::new();
    };
    let entries: Vec<serde_json::Value> = serde_json::from_str(status).unwrap();
    entries
        .iter()
        .filter(|e| e["name"] == network)
        .flat_map(|e| e["ips"].as_array().cloned().unwrap_or_default())
        .map(|ip| ip.as_str().unwrap().parse().unwrap())
        .collect()
}
