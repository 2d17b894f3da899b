//! The policy engine: a pure, deterministic function from cluster objects to the tables
//! of every local pod interface that a policy covers (see README "Policy semantics").
//!
//! [`Engine::apply`] takes one [`crate::cluster::ClusterEvent`] at a time and returns only
//! the endpoints whose tables changed; [`Engine::explain`] says why one flow passes or not.
mod engine;
mod explain;
mod resolve;
mod selections;
mod state;

use std::{net::IpAddr, sync::Arc};

use netwarden_cni::{InterfaceName, NetworkRef};

use crate::{
    cluster::objects::{PodKey, PolicyKey},
    datapath::rules::{Direction, EndpointPolicy},
};

pub use engine::{Engine, EngineConfig};
pub use explain::{DenyReason, Explanation, Flow, Verdict};

/// One pod interface on one network: the unit the datapath enforces on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId {
    pub pod: PodKey,
    pub network: NetworkRef,
    pub interface: InterfaceName,
}

/// Which policy rule a datapath rule came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleOrigin {
    pub policy: PolicyKey,
    pub direction: Direction,
    /// Position in the policy's `ingress` or `egress` list.
    pub rule: usize,
}

/// Why one direction of an endpoint looks the way it does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirectionProvenance {
    /// The policies that isolate this direction (empty: open).
    pub isolated_by: Vec<PolicyKey>,
    /// `rules[i]` produced the i-th [`crate::datapath::rules::Rule`] of this direction.
    pub rules: Vec<RuleOrigin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provenance {
    pub ingress: DirectionProvenance,
    pub egress: DirectionProvenance,
}

impl Provenance {
    pub fn direction(&self, direction: Direction) -> &DirectionProvenance {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// Everything the datapath gets for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointTables {
    /// The interface's own addresses (from network-status).
    pub addresses: Vec<IpAddr>,
    pub policy: EndpointPolicy,
    pub provenance: Provenance,
}

/// A difference in the engine's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointChange {
    /// New, or its tables changed.
    Upsert {
        endpoint: EndpointId,
        /// Shared with the engine, which keeps them as its current output.
        tables: Arc<EndpointTables>,
    },
    /// No longer an endpoint: the pod or interface is gone, moved off this node, or no
    /// policy lists its network any more.
    Removed { endpoint: EndpointId },
}

#[cfg(any(test, feature = "fuzzing"))]
pub mod fixtures;
/// The naive evaluator the engine's tests (and, with the `reference` feature, the lab's
/// end-to-end tests and the fuzz targets) compare against; never used by the agent itself.
#[cfg(any(test, feature = "reference"))]
pub mod reference;
#[cfg(test)]
mod tests_property;
#[cfg(test)]
mod tests_semantics;
