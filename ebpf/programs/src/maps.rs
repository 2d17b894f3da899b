//! Every map the classifiers use, declared once. Layouts and meaning: `netwarden-common`.
//!
//! All maps are pinned by name: the agent loads the object with a pin directory, so a
//! restarted agent (or a newer program) reuses the very maps the attached programs use.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use netwarden_common::{
    AddressKey, Counter, CounterKey, EndpointConfig, EndpointKey, EventBudget, FlowKey,
    FlowState, PeerKey, PeerValue, PortKey, PortValue,
};

/// Attached interfaces that have tables: (netns cookie, ifindex) -> endpoint.
#[map]
pub static ENDPOINTS: HashMap<EndpointKey, EndpointConfig> = HashMap::pinned(16 * 1024, 0);

/// Peer prefixes per (endpoint, direction, generation); both generations coexist while
/// a table is replaced.
#[map]
pub static PEERS: LpmTrie<PeerKey, PeerValue> = LpmTrie::pinned(1024 * 1024, 0);

/// Port prefixes per (endpoint, direction, generation, protocol, peer class).
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

/// Packets and bytes per (endpoint, direction, verdict), per CPU.
#[map]
pub static COUNTERS: PerCpuHashMap<CounterKey, Counter> = PerCpuHashMap::pinned(64 * 1024, 0);
