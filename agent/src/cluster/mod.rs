//! Cluster state: the Kubernetes objects netwarden reads and where they come from.
//!
//! Sources (the Kubernetes API, a directory of manifests) turn what they observe into a
//! stream of [`ClusterEvent`]s over [`Object`]s; the policy engine and the attach service
//! consume those.
pub mod crd;
pub mod kube_api;
pub mod manifest_dir;
pub mod objects;
pub mod source;
pub mod store;

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};

use crd::{v1beta2::MultiNetworkPolicy, NetworkAttachmentDefinition};

/// The kinds of object netwarden reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Namespace,
    NetworkAttachmentDefinition,
    /// v1beta1 and v1beta2 both arrive as v1beta2 (the specs are identical).
    MultiNetworkPolicy,
    NetworkPolicy,
}

/// One object of a kind netwarden reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Pod(Box<Pod>),
    Namespace(Box<Namespace>),
    NetworkAttachmentDefinition(Box<NetworkAttachmentDefinition>),
    MultiNetworkPolicy(Box<MultiNetworkPolicy>),
    NetworkPolicy(Box<NetworkPolicy>),
}

/// Names one object: kind, namespace (None for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

/// A change a source observed.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    /// Created or changed.
    Applied(Object),
    /// Gone.
    Deleted(ObjectKey),
    /// The source listed everything of `kind` afresh (start, or a relist after 410 Gone):
    /// these are all the objects of that kind now; anything else of it is gone.
    Resynced(Kind, Vec<Object>),
}
