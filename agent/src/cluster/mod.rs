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

use kube::api::ObjectMeta;

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

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::Namespace(_) => Kind::Namespace,
            Object::NetworkAttachmentDefinition(_) => Kind::NetworkAttachmentDefinition,
            Object::MultiNetworkPolicy(_) => Kind::MultiNetworkPolicy,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Pod(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::NetworkAttachmentDefinition(o) => &o.metadata,
            Object::MultiNetworkPolicy(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
        }
    }

    /// The key naming this object (an object without a name has an empty one).
    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey {
            kind: self.kind(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
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
