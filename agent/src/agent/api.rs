//! What the agent's HTTP endpoint answers `/explain` and `/flows` with, shared by the
//! server and the `netwarden explain` / `netwarden flows` commands.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{
    datapath::{rules::Direction, DatapathEvent, Reason, Verdict},
    policy::{self, DenyReason, Explanation, RuleOrigin},
};

/// The query of `/explain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplainQuery {
    /// `namespace/name` of the sending pod.
    pub from: String,
    /// `namespace/name` of the receiving pod.
    pub to: String,
    /// `namespace/name` of the NAD; empty or absent for the cluster network.
    #[serde(default)]
    pub network: String,
    pub port: u16,
    /// TCP, UDP or SCTP.
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainAnswer {
    pub allowed: bool,
    /// At the sender's interface.
    pub egress: SideAnswer,
    /// At the receiver's interface.
    pub ingress: SideAnswer,
}

/// One side's verdict and what decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideAnswer {
    pub allowed: bool,
    /// Why, in words.
    pub because: String,
}

impl From<&Explanation> for ExplainAnswer {
    fn from(explanation: &Explanation) -> Self {
        Self {
            allowed: explanation.allowed(),
            egress: side(&explanation.egress),
            ingress: side(&explanation.ingress),
        }
    }
}

fn side(verdict: &policy::Verdict) -> SideAnswer {
    let because = match verdict {
        policy::Verdict::SelfTraffic => "a pod's traffic to itself is always allowed".into(),
        policy::Verdict::NotOnNetwork => {
            "the pod has no interface on this network: nothing to enforce".into()
        }
        policy::Verdict::NotIsolated => "no policy selects the pod in this direction".into(),
        policy::Verdict::AllowedBy(RuleOrigin {
            policy,
            direction,
            rule,
        }) => format!(
            "allowed by {:?} {}/{} {} rule {rule}",
            policy.kind,
            policy.namespace,
            policy.name,
            direction_name(*direction)
        ),
        policy::Verdict::Denied {
            isolated_by,
            reason,
        } => {
            let policies: Vec<String> = isolated_by
                .iter()
                .map(|p| format!("{:?} {}/{}", p.kind, p.namespace, p.name))
                .collect();
            let why = match reason {
                DenyReason::NoRuleMatched => "no rule of theirs admits this peer and port",
                DenyReason::PeerHasNoAddress => {
                    "the peer has no known address on this network, so no rule can admit it"
                }
            };
            format!("denied: isolated by {}; {why}", policies.join(", "))
        }
    };
    SideAnswer {
        allowed: verdict.allows(),
        because,
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// One verdict event as `/flows` streams it (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// When the agent read it, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `namespace/name`, when the endpoint is one of this agent's.
    pub pod: Option<String>,
    pub interface: Option<String>,
    pub network: Option<String>,
    pub direction: String,
    pub verdict: String,
    pub reason: String,
    /// IP protocol number.
    pub protocol: u8,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub src_port: u16,
    pub dst_port: u16,
}

impl FlowRecord {
    pub fn new(event: &DatapathEvent, endpoint: Option<&policy::EndpointId>, time_ms: u64) -> Self {
        Self {
            time_ms,
            pod: endpoint.map(|e| e.pod.to_string()),
            interface: endpoint.map(|e| e.interface.to_string()),
            network: endpoint.map(|e| e.network.to_string()),
            direction: direction_name(event.direction).into(),
            verdict: match event.verdict {
                Verdict::Allow => "allow",
                Verdict::Deny => "deny",
            }
            .into(),
            reason: reason_name(event.reason).into(),
            protocol: event.protocol,
            src: event.src,
            dst: event.dst,
            src_port: event.src_port,
            dst_port: event.dst_port,
        }
    }

    /// One line: time, endpoint, direction, verdict, reason, src -> dst, protocol.
    pub fn line(&self) -> String {
        let seconds = self.time_ms / 1000;
        let time = format!(
            "{:02}:{:02}:{:02}.{:03}",
            seconds / 3600 % 24,
            seconds / 60 % 60,
            seconds % 60,
            self.time_ms % 1000
        );
        let endpoint = match (&self.pod, &self.interface) {
            (Some(pod), Some(interface)) => format!("{pod}/{interface}"),
            _ => "(unknown endpoint)".into(),
        };
        let address = |a: &Option<IpAddr>, port: u16| match a {
            Some(a) if port != 0 => format!("{a}:{port}"),
            Some(a) => a.to_string(),
            None => "-".into(),
        };
        let protocol = match self.protocol {
            6 => "TCP".to_owned(),
            17 => "UDP".to_owned(),
            132 => "SCTP".to_owned(),
            1 | 58 => "ICMP".to_owned(),
            n => format!("proto {n}"),
        };
        format!(
            "{time} {endpoint} {} {} ({}) {} -> {} {protocol}",
            self.direction,
            self.verdict.to_uppercase(),
            self.reason,
            address(&self.src, self.src_port),
            address(&self.dst, self.dst_port),
        )
    }
}

fn reason_name(reason: Reason) -> &'static str {
    match reason {
        Reason::NotIsolated => "not-isolated",
        Reason::Rule => "rule",
        Reason::Established => "established",
        Reason::NoMatchingRule => "no-matching-rule",
        Reason::SpoofedSource => "spoofed-source",
        Reason::Malformed => "malformed",
        Reason::Revoked => "revoked",
        Reason::NotProgrammed => "not-programmed",
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn a_flow_line_names_endpoint_verdict_and_addresses() {
        let record = FlowRecord {
            time_ms: 3_723_004,
            pod: Some("default/server".into()),
            interface: Some("net1".into()),
            network: Some("default/macvlan-conf".into()),
            direction: "ingress".into(),
            verdict: "deny".into(),
            reason: "no-matching-rule".into(),
            protocol: 6,
            src: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 201))),
            dst: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 200))),
            src_port: 40000,
            dst_port: 8080,
        };
        assert_eq!(
            record.line(),
            "01:02:03.004 default/server/net1 ingress DENY (no-matching-rule) \
             192.168.1.201:40000 -> 192.168.1.200:8080 TCP"
        );
    }
}
