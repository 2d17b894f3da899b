//! Map key and value layouts shared by the eBPF programs (`ebpf/programs`) and the agent.
//!
//! Every type here is `#[repr(C)]`, has no implicit padding and is plain data: the kernel
//! copies these bytes between the maps and userspace, so both sides must agree byte for
//! byte. Explicit `_pad` fields must be zero (they are part of hash and LPM keys).
//!
//! # How a verdict is reached (per packet, constant number of lookups)
//! 1. `ENDPOINTS[(netns cookie, ifindex)]` -> [`EndpointConfig`]: which endpoint this is,
//!    which directions are isolated, the active table generation, the policy revision.
//!    No entry: the interface is attached but not yet programmed -> drop (fail closed).
//! 2. `CONNTRACK[flow]`: a tracked flow admitted under the current revision passes.
//! 3. New flow, isolated direction: `PEERS` (LPM on the peer address) -> a peer class;
//!    the class either allows all traffic or `PORTS` (LPM on the port) decides.
//!    Except-carving and the union of rules are computed in userspace, so the kernel
//!    never loops over rules.
//!
//! Addresses are 16 bytes: IPv6 as is, IPv4 as the v4-mapped `::ffff:a.b.c.d`, so one
//! trie serves both families (an IPv4 /n is a /(96+n) there).
#![no_std]

/// Names of the maps and programs in the eBPF object, so both sides spell them once.
pub mod names {
    /// Classifier on the pod interface's tc ingress: traffic towards the pod.
    pub const PROG_INGRESS: &str = "netwarden_ingress";
    /// Classifier on the pod interface's tc egress: traffic leaving the pod.
    pub const PROG_EGRESS: &str = "netwarden_egress";
    /// A classifier that passes every packet untouched: the benchmark's floor.
    pub const PROG_PASSTHROUGH: &str = "netwarden_passthrough";
    /// Globals the loader sets in each endpoint's program instance: the [`EndpointKey`]
    /// of the one interface that instance is attached to.
    ///
    /// [`EndpointKey`]: super::EndpointKey
    pub const GLOBAL_NETNS_COOKIE: &str = "ENDPOINT_NETNS_COOKIE";
    pub const GLOBAL_IFINDEX: &str = "ENDPOINT_IFINDEX";
    /// aya-log's ring buffer, pinned so every program instance logs into one reader.
    pub const MAP_LOGS: &str = "AYA_LOGS";
    pub const MAP_ENDPOINTS: &str = "ENDPOINTS";
    pub const MAP_PEERS: &str = "PEERS";
    pub const MAP_PORTS: &str = "PORTS";
    pub const MAP_ADDRESSES: &str = "ADDRESSES";
    pub const MAP_CONNTRACK: &str = "CONNTRACK";
    pub const MAP_EVENTS: &str = "EVENTS";
    pub const MAP_EVENT_BUDGET: &str = "EVENT_BUDGET";
    pub const MAP_COUNTERS: &str = "COUNTERS";
    /// IPv4 sources the first classifier drops (issue 2; replaced by the policy maps).
    pub const MAP_DENY_SOURCES_V4: &str = "DENY_SOURCES_V4";
}

/// An IPv4 address as the packet carries it, as a map key (issue 2's first classifier).
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

/// A 16-byte address: IPv6, or IPv4 v4-mapped (`::ffff:a.b.c.d`).
pub type Addr = [u8; 16];

/// Bits of [`PeerKey`] before the address: always part of the LPM prefix.
pub const PEER_KEY_HEADER_BITS: u32 = 64;
/// Bits of [`PortKey`] before the port: always part of the LPM prefix.
pub const PORT_KEY_HEADER_BITS: u32 = 96;

/// Packet direction as seen from the pod (tc ingress = towards the pod).
pub mod direction {
    pub const INGRESS: u8 = 0;
    pub const EGRESS: u8 = 1;
}

/// [`EndpointConfig::flags`].
pub mod endpoint_flags {
    pub const INGRESS_ISOLATED: u32 = 1 << 0;
    pub const EGRESS_ISOLATED: u32 = 1 << 1;
    /// Drop egress packets whose source is not one of the endpoint's `ADDRESSES`.
    pub const ANTI_SPOOF: u32 = 1 << 2;
    /// Also report allowed new flows as events (denies are always reported).
    pub const REPORT_ALLOWS: u32 = 1 << 3;
}

/// `ENDPOINTS` key: the interface a packet is on. The netns cookie is unique per network
/// namespace for the life of the boot and the ifindex is unique inside one namespace, so
/// the pair names one interface even when pods on different networks share addresses.
/// The agent reads both in the pod's namespace (`SO_NETNS_COOKIE`, `if_nametoindex`) and
/// compiles them into the program instance it attaches there (see `ebpf/programs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub netns_cookie: u64,
    pub ifindex: u32,
    pub _pad: u32,
}

/// `ENDPOINTS` value. Replaced as a whole (hash map updates swap the element), which is
/// what makes a table update atomic: new-generation entries are written first, then this
/// value flips `generation` and bumps `revision` in one update.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointConfig {
    /// The endpoint's id in every other map.
    pub id: u32,
    /// [`endpoint_flags`].
    pub flags: u32,
    /// Which of the two table generations (0 or 1) in `PEERS`/`PORTS` is live.
    pub generation: u32,
    /// Policy revision; tracked flows admitted under an older one are re-checked.
    pub revision: u32,
}

/// `PEERS` LPM key data: (endpoint, direction, generation) exact, then the peer address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub endpoint: u32,
    pub direction: u8,
    pub generation: u8,
    pub _pad: [u8; 2],
    pub addr: Addr,
}

/// [`PeerValue::flags`].
pub mod peer_flags {
    /// The class allows every protocol and port (a rule without `ports`).
    pub const ALLOW_ALL: u32 = 1 << 0;
}

/// `PEERS` value: the class of peers sharing one allowed (protocol, port) set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerValue {
    pub class: u32,
    pub flags: u32,
}

/// `PORTS` LPM key data: (endpoint, direction, generation, protocol, class) exact, then
/// the destination port, big-endian so an aligned port range is one prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub endpoint: u32,
    pub direction: u8,
    pub generation: u8,
    pub protocol: u8,
    pub _pad: u8,
    pub class: u32,
    pub port: [u8; 2],
    pub _pad2: [u8; 2],
}

/// `PORTS` value: the port prefix is allowed for the class. `rule` is an opaque tag the
/// agent maps back to the policy rule (for events and explain).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortValue {
    pub rule: u32,
}

/// `ADDRESSES` key: an address assigned to the endpoint (anti-spoofing).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddressKey {
    pub endpoint: u32,
    pub addr: Addr,
}

/// `CONNTRACK` key: a flow as seen from one endpoint, the same for both directions
/// (`local` is the pod's side). ICMP echo uses the identifier as `local_port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub endpoint: u32,
    pub protocol: u8,
    pub _pad: [u8; 3],
    pub local: Addr,
    pub remote: Addr,
    pub local_port: u16,
    pub remote_port: u16,
}

/// [`FlowState::state`]: the low bits are the protocol state, the top bit a flag.
pub mod flow_state {
    /// TCP/SCTP: handshake seen, not yet confirmed by the peer; other protocols: live.
    pub const OPENING: u8 = 0;
    /// TCP: a packet without SYN was seen after the first; SCTP: past INIT.
    pub const ESTABLISHED: u8 = 1;
    /// TCP FIN or RST, SCTP ABORT or SHUTDOWN COMPLETE seen.
    pub const CLOSING: u8 = 2;
    /// Mask of the protocol state above.
    pub const STATE_MASK: u8 = 0x7f;
    /// The flow was admitted as portless (ICMP, a non-first fragment, another protocol):
    /// a re-check after a policy change needs a rule allowing all ports and protocols.
    pub const PORTLESS: u8 = 0x80;
}

/// Connection-tracking timeouts, checked when a flow is looked up (the LRU bounds the
/// table size; expired entries are replaced on their next packet or evicted).
pub mod flow_timeout {
    const SECOND: u64 = 1_000_000_000;
    /// TCP/SCTP before the handshake completes, and after FIN/RST (ABORT/SHUTDOWN).
    pub const TCP_TRANSIENT_NS: u64 = 60 * SECOND;
    /// TCP/SCTP established: the Linux conntrack default.
    pub const TCP_ESTABLISHED_NS: u64 = 2 * 60 * 60 * SECOND;
    pub const UDP_NS: u64 = 60 * SECOND;
    pub const ICMP_NS: u64 = 30 * SECOND;
    /// Any other protocol.
    pub const OTHER_NS: u64 = 60 * SECOND;
}

/// `CONNTRACK` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowState {
    pub last_seen_ns: u64,
    /// The endpoint revision the flow was last admitted under.
    pub revision: u32,
    /// [`direction`] of the flow's first packet: whose policy admitted it.
    pub origin: u8,
    /// Protocol-specific state (e.g. TCP handshake/teardown progress).
    pub state: u8,
    pub _pad: [u8; 2],
}

/// Verdict of a packet.
pub mod verdict {
    pub const ALLOW: u8 = 0;
    pub const DENY: u8 = 1;
}

/// Why a packet got its verdict ([`VerdictEvent::reason`]).
pub mod reason {
    /// Allowed: the direction is not isolated.
    pub const NOT_ISOLATED: u8 = 0;
    /// Allowed: a rule matched (new flow).
    pub const RULE: u8 = 1;
    /// Allowed: part of a tracked flow.
    pub const ESTABLISHED: u8 = 2;
    /// Denied: no rule allows it.
    pub const NO_MATCHING_RULE: u8 = 3;
    /// Denied: egress source is not the endpoint's address.
    pub const SPOOFED_SOURCE: u8 = 4;
    /// Denied: the packet could not be parsed on an isolated endpoint.
    pub const MALFORMED: u8 = 5;
    /// Denied: the flow was admitted under a policy that no longer allows it.
    pub const REVOKED: u8 = 6;
    /// Denied: the interface is attached but its endpoint has no tables yet.
    pub const NOT_PROGRAMMED: u8 = 7;
}

/// `EVENTS` ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VerdictEvent {
    pub endpoint: u32,
    pub direction: u8,
    pub verdict: u8,
    pub reason: u8,
    pub protocol: u8,
    /// 4 or 6; 0 when the packet was not IP.
    pub family: u8,
    pub _pad: [u8; 3],
    pub src: Addr,
    pub dst: Addr,
    /// TCP/UDP/SCTP ports; ICMP type and code.
    pub src_port: u16,
    pub dst_port: u16,
}

/// `EVENT_BUDGET` per-CPU token bucket bounding the event rate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EventBudget {
    pub tokens: u64,
    pub last_refill_ns: u64,
    /// Events not sent because the budget was spent.
    pub suppressed: u64,
}

/// `COUNTERS` per-CPU hash key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub endpoint: u32,
    pub direction: u8,
    pub verdict: u8,
    pub _pad: [u8; 2],
}

/// `COUNTERS` per-CPU value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    macro_rules! pod {
        ($($t:ty),*) => {$(
            // SAFETY: repr(C), no implicit padding, every bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )*};
    }
    pod!(
        Ipv4Key,
        EndpointKey,
        EndpointConfig,
        PeerKey,
        PeerValue,
        PortKey,
        PortValue,
        AddressKey,
        FlowKey,
        FlowState,
        VerdictEvent,
        EventBudget,
        CounterKey,
        Counter
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    /// Sizes are the sum of the fields: no implicit padding anywhere.
    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<EndpointKey>(), 16);
        assert_eq!(size_of::<EndpointConfig>(), 16);
        assert_eq!(size_of::<PeerKey>(), 24);
        assert_eq!(size_of::<PeerValue>(), 8);
        assert_eq!(size_of::<PortKey>(), 16);
        assert_eq!(size_of::<AddressKey>(), 20);
        assert_eq!(size_of::<FlowKey>(), 44);
        assert_eq!(size_of::<FlowState>(), 16);
        assert_eq!(size_of::<VerdictEvent>(), 48);
        assert_eq!(size_of::<CounterKey>(), 8);
        assert_eq!(
            PEER_KEY_HEADER_BITS as usize,
            8 * (size_of::<PeerKey>() - 16)
        );
        assert_eq!(PORT_KEY_HEADER_BITS, 96);
    }
}
