//! Map key and value layouts shared by the eBPF programs (`ebpf/programs`) and the agent.
//!
//! Every type here is `#[repr(C)]`, has no padding and is plain data: the kernel copies
//! these bytes between the maps and userspace, so both sides must agree byte for byte.
#![no_std]

/// Names of the maps and programs in the eBPF object, so both sides spell them once.
pub mod names {
    /// Classifier attached to a pod interface.
    pub const PROG_INGRESS: &str = "netwarden_ingress";
    /// IPv4 sources the classifier drops (issue 2's first map; grows into the policy maps).
    pub const MAP_DENY_SOURCES_V4: &str = "DENY_SOURCES_V4";
}

/// An IPv4 address as the packet carries it (network byte order), as a map key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Key {
    pub addr: [u8; 4],
}

impl Ipv4Key {
    pub const fn new(octets: [u8; 4]) -> Self {
        Self { addr: octets }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), 4 bytes, no padding, every bit pattern is valid.
unsafe impl aya::Pod for Ipv4Key {}
