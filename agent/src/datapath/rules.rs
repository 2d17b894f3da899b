//! What the datapath enforces on one endpoint (a pod interface), as plain values.
//!
//! This is the boundary between "what is allowed" (the policy engine, which knows
//! Kubernetes) and "how it is written to the kernel" (the datapath, which does not).
//! Semantics follow networking.k8s.io/v1 NetworkPolicy, per direction:
//! - [`Isolation::Open`]: the direction is not isolated; everything passes.
//! - [`Isolation::Isolated`]: only what at least one [`Rule`] allows passes (a union; an
//!   empty rule list denies everything). Replies of allowed connections always pass.
use std::net::IpAddr;

use ipnet::IpNet;

/// Traffic direction as seen from the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Packets arriving at the pod interface (from peers to the pod).
    Ingress,
    /// Packets leaving the pod through the interface (from the pod to peers).
    Egress,
}

/// The transport protocols a NetworkPolicy port can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The IP protocol number (IPv4 protocol / IPv6 next header).
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }
}

/// An inclusive port range; a single port is `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ALL: Self = Self {
        first: 0,
        last: u16::MAX,
    };

    pub const fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    pub const fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// One entry of a rule's `ports`: a protocol and the destination ports it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMatch {
    pub protocol: Protocol,
    pub ports: PortRange,
}

/// A set of peer addresses: inside `cidr` and not inside any of `except`.
/// A pod peer is its address as a host prefix (/32 or /128).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerBlock {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

impl PeerBlock {
    pub fn host(address: IpAddr) -> Self {
        Self {
            cidr: IpNet::from(address),
            except: Vec::new(),
        }
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        self.cidr.contains(&address) && !self.except.iter().any(|e| e.contains(&address))
    }
}

/// Which peers a rule admits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peers {
    /// No `from`/`to` list: every address, IPv4 and IPv6.
    Any,
    /// The union of these blocks (possibly empty: a selector that matched no pod).
    Blocks(Vec<PeerBlock>),
}

/// Which traffic to those peers a rule admits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ports {
    /// No `ports` list: every protocol (ICMP included) and every port.
    Any,
    /// The union of these (possibly empty: named ports that resolved to nothing).
    Matches(Vec<PortMatch>),
}

/// One allow rule: `peers` AND `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub peers: Peers,
    pub ports: Ports,
}

/// Whether one direction of an endpoint is isolated, and what its rules allow if so.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Isolation {
    #[default]
    Open,
    Isolated(Vec<Rule>),
}

/// Everything the datapath needs to enforce on one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointPolicy {
    pub ingress: Isolation,
    pub egress: Isolation,
}

impl EndpointPolicy {
    pub fn direction(&self, direction: Direction) -> &Isolation {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}
