//! netwarden's attach component: the types and duties of the CNI side.
pub mod agent_link;
pub mod cache;
pub mod delegate;
pub mod exec;
pub mod ifname;
pub mod ifnames;
pub mod network;
pub mod plan;
pub mod protocol;
pub mod resolve;
pub mod routes;
pub mod sandbox;
pub mod selection;
pub mod status;

pub use ifname::InterfaceName;
pub use network::NetworkRef;
pub use status::NetworkStatus;
