//! Every map the classifiers use, declared once. Layouts and meaning: `netwarden-common`.
//!
//! All maps are pinned by name: the agent loads the object with a pin directory, so a
//! restarted agent (or a newer program) reuses the very maps the attached programs use.
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use netwarden_common::{
    AddressKey, Counter, EndpointSlot, EventBudget, FlowKey, FlowState, PeerKey, PeerValue,
    PortKey, PortValue, COUNTERS_PER_SLOT, MAX_SLOTS,
};

/// Interfaces by slot (the constant each program instance carries). An array: the
/// verifier turns a lookup into an index computation. Mmap-able, so the agent flips an
/// endpoint's configuration with one atomic store (see `EndpointSlot`).
#[map]
pub static ENDPOINTS: Array<EndpointSlot> = Array::pinned(MAX_SLOTS, BPF_F_MMAPABLE);

/// Host peers (/32, /128) per (endpoint, direction, generation), exact: asked first.
/// Not preallocated: sized for the worst case, filled by what policies name.
#[map]
pub static PEER_HOSTS: HashMap<PeerKey, PeerValue> =
    HashMap::pinned(1024 * 1024, BPF_F_NO_PREALLOC);

/// The other peer prefixes per (endpoint, direction, generation); both generations
/// coexist while a table is replaced.
#[map]
pub static PEERS: LpmTrie<PeerKey, PeerValue> = LpmTrie::pinned(1024 * 1024, 0);

/// Single ports per (endpoint, direction, generation, protocol, peer class), exact.
#[map]
pub static PORT_EXACT: HashMap<PortKey, PortValue> =
    HashMap::pinned(1024 * 1024, BPF_F_NO_PREALLOC);

/// Aligned blocks of port ranges per (endpoint, direction, generation, protocol, class).
#[map]
pub static PORTS: LpmTrie<PortKey, PortValue> = LpmTrie::pinned(1024 * 1024, 0);

/// Addresses assigned to each endpoint (anti-spoofing).
#[map]
pub static ADDRESSES: HashMap<AddressKey, u8> = HashMap::pinned(64 * 1024, 0);

/// Tracked flows; the LRU evicts the least recently used when full.
#[map]
pub static CONNTRACK: LruHashMap<FlowKey, FlowState> = LruHashMap::pinned(256 * 1024, 0);

/// Verdict events for the agent (48-byte records: ~5000 fit).
#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(256 * 1024, 0);

/// One token bucket per CPU bounding the event rate.
#[map]
pub static EVENT_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::pinned(1, 0);

/// Packets and bytes per (slot, direction, verdict), per CPU: an array, so the count is
/// an index computation and two adds.
#[map]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_SLOTS * COUNTERS_PER_SLOT, 0);
