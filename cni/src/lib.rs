//! netwarden's attach component: the types and duties of the CNI side.
pub mod ifname;

pub use ifname::InterfaceName;
