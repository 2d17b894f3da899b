//! Map key and value layouts shared by the eBPF programs (`ebpf/programs`) and the agent.
//!
//! Every type here is `#[repr(C)]`, has no implicit padding and is plain data: the kernel
//! copies these bytes between the maps and userspace, so both sides must agree byte for
//! byte. Explicit `_pad` fields must be zero (they are part of hash and LPM keys).
//!
//! # How a verdict is reached (per packet, constant number of lookups)
//! 1. `ENDPOINTS[slot]` -> [`EndpointSlot`]: the slot is a constant of the program
//!    instance (one instance per interface); its state word is the [`EndpointConfig`]:
//!    which directions are isolated, the active table generation, the policy revision.
//!    State 0: the interface is attached but not yet programmed -> drop (fail closed).
//! 2. `CONNTRACK[flow]`: a tracked flow admitted under the current revision passes.
//! 3. New flow, isolated direction: the peer's class from `PEER_HOSTS` (exact host
//!    addresses) or else `PEERS` (LPM on the other prefixes); the class either allows all
//!    traffic or its (protocol, port) is looked up in `PORT_EXACT` (single ports) or else
//!    `PORTS` (LPM on the aligned blocks of port ranges). Except-carving and the union of
//!    rules are computed in userspace, so the kernel never loops over rules, and a hash
//!    hit is the answer the LPM would give (a host entry is the longest prefix there is).
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
    /// Only the flow-table lookup an established packet needs: a lower bound.
    pub const PROG_FLOW_LOOKUP: &str = "netwarden_flow_lookup";
    /// Only the lookups a new flow needs (flow, peer, port): a lower bound.
    pub const PROG_NEW_FLOW_LOOKUPS: &str = "netwarden_new_flow_lookups";
    /// The new-flow lookups, then the flow's insert: a lower bound for an allowed new flow.
    pub const PROG_NEW_FLOW_ADMISSION: &str = "netwarden_new_flow_admission";
    /// Globals the loader sets in each program instance: the `ENDPOINTS` slot of the one
    /// interface the instance is (or will be) attached to, and the slot's epoch at the
    /// time (see [`EndpointSlot::epoch`]).
    ///
    /// [`EndpointSlot::epoch`]: super::EndpointSlot::epoch
    pub const GLOBAL_SLOT: &str = "ENDPOINT_SLOT";
    pub const GLOBAL_EPOCH: &str = "ENDPOINT_EPOCH";
    /// aya-log's ring buffer, pinned so every program instance logs into one reader.
    pub const MAP_LOGS: &str = "AYA_LOGS";
    pub const MAP_ENDPOINTS: &str = "ENDPOINTS";
    pub const MAP_PEER_HOSTS: &str = "PEER_HOSTS";
    pub const MAP_PEERS: &str = "PEERS";
    pub const MAP_PORT_EXACT: &str = "PORT_EXACT";
    pub const MAP_PORTS: &str = "PORTS";
    pub const MAP_ADDRESSES: &str = "ADDRESSES";
    pub const MAP_CONNTRACK: &str = "CONNTRACK";
    pub const MAP_EVENTS: &str = "EVENTS";
    pub const MAP_EVENT_BUDGET: &str = "EVENT_BUDGET";
    pub const MAP_COUNTERS: &str = "COUNTERS";
}

/// Slots of `ENDPOINTS`: how many interfaces one node can enforce on at once. Slot 0 is
/// never given out (0 means "no endpoint" in events). `COUNTERS` holds
/// [`COUNTERS_PER_SLOT`] entries per slot, per CPU: 4096 x 4 x 16 bytes = 256 KiB a CPU.
pub const MAX_SLOTS: u32 = 4096;
/// The endpoint id of the benchmark's reference programs' keys: beyond every slot, so
/// their lookups never meet an endpoint's entries.
pub const REFERENCE_ENDPOINT: u32 = u32::MAX;
/// (direction, verdict) pairs: `COUNTERS[slot * 4 + direction * 2 + verdict]`.
pub const COUNTERS_PER_SLOT: u32 = 4;

/// The `COUNTERS` index of (slot, direction, verdict).
pub const fn counter_index(slot: u32, direction: u8, verdict: u8) -> u32 {
    slot * COUNTERS_PER_SLOT + (direction as u32 & 1) * 2 + (verdict as u32 & 1)
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

/// [`EndpointConfig::flags`] (16 bits: they share the state word).
pub mod endpoint_flags {
    pub const INGRESS_ISOLATED: u32 = 1 << 0;
    pub const EGRESS_ISOLATED: u32 = 1 << 1;
    /// Drop egress packets whose source is not one of the endpoint's `ADDRESSES`.
    pub const ANTI_SPOOF: u32 = 1 << 2;
    /// Also report allowed new flows as events (denies are always reported).
    pub const REPORT_ALLOWS: u32 = 1 << 3;
    /// `PEERS` (the LPM) holds entries of this direction; without, a `PEER_HOSTS` miss
    /// is the answer and the LPM is not asked.
    pub const INGRESS_PEER_PREFIXES: u32 = 1 << 4;
    pub const EGRESS_PEER_PREFIXES: u32 = 1 << 5;
}

/// The interface a packet is on, as userspace names it. The netns cookie is unique per
/// network namespace for the life of the boot and the ifindex is unique inside one
/// namespace, so the pair names one interface even when pods on different networks share
/// addresses. The agent reads both in the pod's namespace (`SO_NETNS_COOKIE`,
/// `if_nametoindex`) and records them in the slot it gives the interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EndpointKey {
    pub netns_cookie: u64,
    pub ifindex: u32,
    pub _pad: u32,
}

/// [`EndpointSlot::flags`].
pub mod slot_flags {
    /// The slot is given to the interface in [`EndpointSlot::key`](super::EndpointSlot).
    pub const ASSIGNED: u32 = 1 << 0;
}

/// `ENDPOINTS` value (an mmap-able array indexed by slot).
///
/// The agent writes `key`, `epoch` and `flags` while the slot is not programmed (`state`
/// 0), and `state` afterwards with one atomic 8-byte store through its mapping of the
/// array: that store is what makes a table update atomic (new-generation entries are
/// written first, then `state` flips `generation` and bumps `revision` at once). The
/// classifiers read `state` with one 8-byte load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EndpointSlot {
    /// The packed [`EndpointConfig`] ([`EndpointConfig::state`]); 0: not programmed.
    pub state: u64,
    /// Which interface the slot was given to (userspace's way back, after a restart too).
    pub key: EndpointKey,
    /// Bumped each time the slot is given out. An instance loaded for the slot carries the
    /// epoch it was loaded for and answers only to a slot with that epoch, so an instance
    /// left attached somewhere after its slot was reused never reads another interface's
    /// configuration.
    pub epoch: u32,
    /// [`slot_flags`].
    pub flags: u32,
}

/// The live configuration of an endpoint, as the agent and the classifiers use it. The
/// kernel keeps it packed in [`EndpointSlot::state`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointConfig {
    /// The endpoint's id in every other map: its `ENDPOINTS` slot.
    pub id: u32,
    /// [`endpoint_flags`].
    pub flags: u32,
    /// Which of the two table generations (0 or 1) in `PEERS`/`PORTS` is live.
    pub generation: u32,
    /// Policy revision, from 1; tracked flows admitted under an older one are re-checked.
    pub revision: u32,
}

impl EndpointConfig {
    /// The state word: revision in bits 0-31, flags in 32-47, generation in 48-55. A
    /// programmed endpoint's revision is never 0, so neither is its state.
    pub const fn state(&self) -> u64 {
        self.revision as u64
            | ((self.flags as u64 & 0xffff) << 32)
            | ((self.generation as u64 & 0xff) << 48)
    }

    /// The configuration of slot `id` from its state word; `None` when not programmed.
    pub const fn from_state(id: u32, state: u64) -> Option<Self> {
        if state == 0 {
            return None;
        }
        Some(Self {
            id,
            flags: ((state >> 32) & 0xffff) as u32,
            generation: ((state >> 48) & 0xff) as u32,
            revision: state as u32,
        })
    }
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
    /// `PORTS` (the LPM) holds port ranges of the class; without, a `PORT_EXACT` miss is
    /// the answer and the LPM is not asked.
    pub const PORT_RANGES: u32 = 1 << 1;
}

/// `PEER_HOSTS` and `PEERS` value: the class of peers sharing one allowed (protocol,
/// port) set. `PEER_HOSTS` is keyed by the whole [`PeerKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerValue {
    pub class: u32,
    pub flags: u32,
}

/// `PORTS` LPM key data: (endpoint, direction, generation, protocol, class) exact, then
/// the destination port, big-endian so an aligned port range is one prefix.
/// `PORT_EXACT` is keyed by the whole key (single ports).
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

/// `COUNTERS` per-CPU array value, at [`counter_index`].
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
        EndpointKey,
        EndpointSlot,
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
        assert_eq!(size_of::<EndpointSlot>(), 32);
        assert_eq!(size_of::<EndpointConfig>(), 16);
        assert_eq!(size_of::<PeerKey>(), 24);
        assert_eq!(size_of::<PeerValue>(), 8);
        assert_eq!(size_of::<PortKey>(), 16);
        assert_eq!(size_of::<AddressKey>(), 20);
        assert_eq!(size_of::<FlowKey>(), 44);
        assert_eq!(size_of::<FlowState>(), 16);
        assert_eq!(size_of::<VerdictEvent>(), 48);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(
            PEER_KEY_HEADER_BITS as usize,
            8 * (size_of::<PeerKey>() - 16)
        );
        assert_eq!(PORT_KEY_HEADER_BITS, 96);
    }

    #[test]
    fn the_state_word_carries_the_whole_configuration() {
        let config = EndpointConfig {
            id: 9,
            flags: endpoint_flags::EGRESS_PEER_PREFIXES | endpoint_flags::ANTI_SPOOF,
            generation: 1,
            revision: u32::MAX,
        };
        assert_eq!(EndpointConfig::from_state(9, config.state()), Some(config));
        assert_eq!(EndpointConfig::from_state(9, 0), None);
        assert_eq!(counter_index(2, direction::EGRESS, verdict::DENY), 11);
    }
}
