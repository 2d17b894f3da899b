//! The benchmark's reference programs, never attached: what the classifiers' cost is set
//! against. The pass-through program is the floor; the others do only the map work that
//! the established path and a new flow (denied, or admitted into the flow table) cannot
//! do without, on a key read from the frame with the least work there is, and nothing
//! else (no header checks, no clock, no counters, no events). Their keys belong to no
//! endpoint, so every lookup misses, which costs less than the hit an established packet
//! makes (no key comparison, no LRU reference mark): they bound the classifiers' cost
//! from below.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use netwarden_common::{
    direction, flow_state, FlowKey, FlowState, PeerKey, PortKey, REFERENCE_ENDPOINT,
};

use crate::{
    maps::{CONNTRACK, PEER_HOSTS, PORT_EXACT},
    parse::{v4_mapped_at, ETH_HLEN, ETH_P_IPV6, IPPROTO_TCP},
};

/// TC_ACT_UNSPEC: the frame was too short to read a key from, nothing was looked up.
const TOO_SHORT: i32 = -1;

/// Passes everything without looking: the floor.
#[classifier]
pub fn netwarden_passthrough(_ctx: TcContext) -> i32 {
    TC_ACT_OK as i32
}

/// The one flow-table lookup every packet of an established flow needs.
#[classifier]
pub fn netwarden_flow_lookup(ctx: TcContext) -> i32 {
    let Some(key) = flow_key(&ctx) else {
        return TOO_SHORT;
    };
    verdict(CONNTRACK.get_ptr(&key).is_some())
}

/// The three lookups every new flow needs before its verdict: the flow (missing), the
/// peer's host entry and the port's exact entry.
#[classifier]
pub fn netwarden_new_flow_lookups(ctx: TcContext) -> i32 {
    match new_flow_lookups(&ctx) {
        Ok(_) => TC_ACT_OK as i32,
        Err(code) => code,
    }
}

/// What an allowed new flow cannot do without: the three lookups, then its entry in the
/// flow table. Only the benchmark runs it, on scratch maps.
#[classifier]
pub fn netwarden_new_flow_admission(ctx: TcContext) -> i32 {
    let flow = match new_flow_lookups(&ctx) {
        Ok(flow) => flow,
        Err(code) => return code,
    };
    let state = FlowState {
        last_seen_ns: 0,
        revision: 0,
        origin: direction::INGRESS,
        state: flow_state::OPENING,
        _pad: [0, 0],
    };
    verdict(CONNTRACK.insert(&flow, &state, 0).is_err())
}

/// The new-flow lookups on the frame's key: the key when all missed, else the code to
/// return.
#[inline(always)]
fn new_flow_lookups(ctx: &TcContext) -> Result<FlowKey, i32> {
    let Some(flow) = flow_key(ctx) else {
        return Err(TOO_SHORT);
    };
    let peer = PeerKey {
        endpoint: REFERENCE_ENDPOINT,
        direction: direction::INGRESS,
        generation: 0,
        _pad: [0, 0],
        addr: flow.remote,
    };
    let port = PortKey {
        endpoint: REFERENCE_ENDPOINT,
        direction: direction::INGRESS,
        generation: 0,
        protocol: IPPROTO_TCP,
        _pad: 0,
        class: 0,
        port: flow.local_port.to_be_bytes(),
        _pad2: [0, 0],
    };
    // Each miss leads to the next lookup, as in the classifier.
    // SAFETY (both `get`s): only presence is read.
    if CONNTRACK.get_ptr(&flow).is_some()
        || unsafe { PEER_HOSTS.get(&peer) }.is_some()
        || unsafe { PORT_EXACT.get(&port) }.is_some()
    {
        return Err(verdict(true));
    }
    Ok(flow)
}

/// The flow key of the frame, read with the least work there is: a bounds check per
/// family, then the addresses and ports at the family's fixed offsets (no checks of the
/// headers). The endpoint is one no slot has, so the lookup misses. `None` for a frame
/// too short to read.
#[inline(always)]
fn flow_key(ctx: &TcContext) -> Option<FlowKey> {
    let start = ctx.data();
    // IPv4's ports end there.
    if start + ETH_HLEN + 24 > ctx.data_end() {
        return None;
    }
    // SAFETY: inside the linear data: below ETH_HLEN + 24, or below ETH_HLEN + 44 after
    // the IPv6 check.
    let byte = |offset: usize| unsafe { *((start + offset) as *const u8) };
    let be16 = |offset: usize| u16::from_be_bytes([byte(offset), byte(offset + 1)]);
    let (protocol, local, remote, ports) = if be16(12) == ETH_P_IPV6 {
        if start + ETH_HLEN + 44 > ctx.data_end() {
            return None;
        }
        let v6 = |offset: usize| core::array::from_fn(|i| byte(offset + i));
        (
            byte(ETH_HLEN + 6),
            v6(ETH_HLEN + 24),
            v6(ETH_HLEN + 8),
            ETH_HLEN + 40,
        )
    } else {
        let v4 = |offset: usize| v4_mapped_at(byte, offset);
        (
            byte(ETH_HLEN + 9),
            v4(ETH_HLEN + 16),
            v4(ETH_HLEN + 12),
            ETH_HLEN + 20,
        )
    };
    Some(FlowKey {
        endpoint: REFERENCE_ENDPOINT,
        protocol,
        _pad: [0, 0, 0],
        local,
        remote,
        local_port: be16(ports + 2),
        remote_port: be16(ports),
    })
}

/// Every lookup misses (and every insert succeeds); the result still decides the return
/// value, so none is dropped.
#[inline(always)]
fn verdict(found: bool) -> i32 {
    if found {
        TC_ACT_SHOT as i32
    } else {
        TC_ACT_OK as i32
    }
}
