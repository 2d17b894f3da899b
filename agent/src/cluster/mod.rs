//! Cluster state: the Kubernetes objects netwarden reads and where they come from.
pub mod crd;
