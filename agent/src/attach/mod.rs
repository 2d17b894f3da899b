//! The attach service: the agent's side of `netwarden-cni`. It reads the cluster state
//! from a [`crate::cluster::store::Store`], listens on a root-only unix socket, and performs
//! ADD (cluster network first, then each requested network; the new interfaces enforced on
//! before network-status is written through the cluster source), DEL, CHECK, STATUS and GC
//! for the runtime. [`crate::agent::run`] runs it.
pub mod error;
pub mod guard;
pub mod server;
pub mod service;
pub mod stages;

pub use error::AttachError;
pub use service::AttachService;
