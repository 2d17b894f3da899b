//! Why one flow between two pods on a network passes or not: the source's egress and
//! the destination's ingress, each judged on the same compiled tables the datapath gets.
use std::net::IpAddr;

use netwarden_cni::NetworkRef;

use super::{resolve::Resolver, selections::Selections, state::ClusterState, RuleOrigin};
use crate::{
    cluster::objects::{PodKey, PolicyKey},
    datapath::rules::{Direction, Isolation, Peers, Ports, Protocol, Rule},
};

/// A connection attempt from one pod to another on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub from: PodKey,
    pub to: PodKey,
    pub network: NetworkRef,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// The direction is isolated and no rule of those policies admits the flow.
    NoRuleMatched,
    /// The other pod has no address on this network, so no peer rule can name it.
    PeerHasNoAddress,
}

/// The judgement of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A pod sending to itself: never crosses its interface, always allowed.
    SelfTraffic,
    /// The pod (unknown, or no interface on the network) has no endpoint to enforce on.
    NotOnNetwork,
    /// No policy isolates this direction.
    NotIsolated,
    AllowedBy(RuleOrigin),
    Denied {
        isolated_by: Vec<PolicyKey>,
        reason: DenyReason,
    },
}

impl Verdict {
    pub fn allows(&self) -> bool {
        !matches!(self, Self::Denied { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// At the source's interface.
    pub egress: Verdict,
    /// At the destination's interface.
    pub ingress: Verdict,
}

impl Explanation {
    pub fn allowed(&self) -> bool {
        self.egress.allows() && self.ingress.allows()
    }
}

pub(crate) fn explain(state: &ClusterState, flow: &Flow) -> Explanation {
    if flow.from == flow.to {
        return Explanation {
            egress: Verdict::SelfTraffic,
            ingress: Verdict::SelfTraffic,
        };
    }
    let side = |pod: &PodKey, peer: &PodKey, direction: Direction| {
        let Some(pod) = state.pod(pod) else {
            return Verdict::NotOnNetwork;
        };
        if !pod.interfaces.iter().any(|i| i.network == flow.network) {
            return Verdict::NotOnNetwork;
        }
        let peer_addresses: Vec<IpAddr> = state
            .pod(peer)
            .map(|p| p.addresses_on(&flow.network).collect())
            .unwrap_or_default();
        // Selections made for this flow alone: `explain` runs on the engine's state
        // without changing it.
        let mut selections = Selections::default();
        let (policy, provenance) =
            Resolver::new(state, &mut selections).compile(pod, &flow.network);
        let Isolation::Isolated(rules) = policy.direction(direction) else {
            return Verdict::NotIsolated;
        };
        let provenance = provenance.direction(direction);
        let admitting = rules.iter().zip(&provenance.rules).find(|(rule, _)| {
            peer_addresses
                .iter()
                .any(|a| rule_admits(rule, *a, flow.protocol, flow.port))
        });
        match admitting {
            Some((_, origin)) => Verdict::AllowedBy(origin.clone()),
            None => Verdict::Denied {
                isolated_by: provenance.isolated_by.clone(),
                reason: if peer_addresses.is_empty() {
                    DenyReason::PeerHasNoAddress
                } else {
                    DenyReason::NoRuleMatched
                },
            },
        }
    };
    Explanation {
        egress: side(&flow.from, &flow.to, Direction::Egress),
        ingress: side(&flow.to, &flow.from, Direction::Ingress),
    }
}

/// Whether `rule` admits traffic with `peer` on the other end to `protocol`/`port`.
pub(crate) fn rule_admits(rule: &Rule, peer: IpAddr, protocol: Protocol, port: u16) -> bool {
    let peer_ok = match &rule.peers {
        Peers::Any => true,
        Peers::Blocks(blocks) => blocks.iter().any(|b| b.contains(peer)),
    };
    let port_ok = match &rule.ports {
        Ports::Any => true,
        Ports::Matches(matches) => matches
            .iter()
            .any(|m| m.protocol == protocol && m.ports.contains(port)),
    };
    peer_ok && port_ok
}
