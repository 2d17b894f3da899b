//! Connection tracking: one entry per flow and endpoint, shared by both directions
//! (`local` is always the pod's side), remembering whose policy admitted it and under
//! which revision.
use netwarden_common::{direction, flow_state, flow_timeout, FlowKey, FlowState};

use crate::{
    maps::CONNTRACK,
    parse::{
        Packet, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK,
        TCP_FIN, TCP_RST, TCP_SYN,
    },
    policy::Query,
};

const SCTP_INIT: u8 = 1;
const SCTP_ABORT: u8 = 6;
const SCTP_SHUTDOWN_COMPLETE: u8 = 14;

/// The flow `packet` belongs to, as seen from the endpoint.
#[inline(always)]
pub fn flow_key(endpoint: u32, dir: u8, packet: &Packet) -> FlowKey {
    let ingress = dir == direction::INGRESS;
    let (local, remote) = if ingress {
        (packet.dst, packet.src)
    } else {
        (packet.src, packet.dst)
    };
    let (local_port, remote_port) = if packet.echo {
        (packet.echo_id, 0)
    } else if packet.portless {
        (0, 0)
    } else if ingress {
        (packet.dst_port, packet.src_port)
    } else {
        (packet.src_port, packet.dst_port)
    };
    FlowKey {
        endpoint,
        protocol: packet.protocol,
        _pad: [0; 3],
        local,
        remote,
        local_port,
        remote_port,
    }
}

/// The policy question that admitted (or would admit) the flow: asked in its origin
/// direction, about its remote side and its destination port.
#[inline(always)]
pub fn origin_query(key: &FlowKey, state: &FlowState) -> Query {
    let portless = state.state & flow_state::PORTLESS != 0;
    let port = if state.origin == direction::INGRESS {
        key.local_port
    } else {
        key.remote_port
    };
    Query {
        direction: state.origin,
        peer: key.remote,
        protocol: key.protocol,
        port: if portless { 0 } else { port },
        portless,
    }
}

/// The tracked flow, when it has one that has not timed out. An expired entry is removed.
#[inline(always)]
pub fn lookup(key: &FlowKey, now: u64) -> Option<*mut FlowState> {
    let state = CONNTRACK.get_ptr_mut(key)?;
    // SAFETY: the pointer is the map value's, valid for this program run.
    let (last_seen, flags) = unsafe { ((*state).last_seen_ns, (*state).state) };
    if now.saturating_sub(last_seen) > timeout(key.protocol, flags & flow_state::STATE_MASK) {
        let _ = CONNTRACK.remove(key);
        return None;
    }
    Some(state)
}

/// Starts tracking an admitted flow.
#[inline(always)]
pub fn track(key: &FlowKey, packet: &Packet, origin: u8, revision: u32, now: u64) {
    let mut state = next_state(flow_state::OPENING, packet);
    if packet.portless {
        state |= flow_state::PORTLESS;
    }
    let entry = FlowState {
        last_seen_ns: now,
        revision,
        origin,
        state,
        _pad: [0; 2],
    };
    // A full LRU evicts its oldest entry; an error here only means the flow is re-judged
    // by the policy on its next packet.
    let _ = CONNTRACK.insert(key, &entry, 0);
}

/// How stale `last_seen_ns` may get before a packet rewrites it. Timeouts are 30 s and
/// more, so a flow can expire at most this much early; in exchange most packets of a busy
/// flow only read its entry (no cache line bouncing between CPUs).
const REFRESH_NS: u64 = 1_000_000_000;

/// Marks a tracked flow as seen now, under `revision`: writes only what moved.
#[inline(always)]
pub fn refresh(state: *mut FlowState, packet: &Packet, revision: u32, now: u64) {
    // SAFETY: a map value pointer from `lookup`; concurrent updates of these plain fields
    // can at worst lose one refresh, which the next packet redoes.
    unsafe {
        let flags = (*state).state;
        let updated =
            (flags & flow_state::PORTLESS) | next_state(flags & flow_state::STATE_MASK, packet);
        if updated != flags {
            (*state).state = updated;
        }
        if (*state).revision != revision {
            (*state).revision = revision;
        }
        if now.saturating_sub((*state).last_seen_ns) > REFRESH_NS {
            (*state).last_seen_ns = now;
        }
    }
}

#[inline(always)]
fn next_state(current: u8, packet: &Packet) -> u8 {
    match packet.protocol {
        IPPROTO_TCP if !packet.portless => {
            if packet.control & (TCP_FIN | TCP_RST) != 0 {
                flow_state::CLOSING
            } else if current == flow_state::OPENING
                && packet.control & TCP_ACK != 0
                && packet.control & TCP_SYN == 0
            {
                flow_state::ESTABLISHED
            } else {
                current
            }
        }
        IPPROTO_SCTP if !packet.portless => match packet.control {
            SCTP_ABORT | SCTP_SHUTDOWN_COMPLETE => flow_state::CLOSING,
            SCTP_INIT => current,
            _ if current == flow_state::OPENING => flow_state::ESTABLISHED,
            _ => current,
        },
        _ => current,
    }
}

#[inline(always)]
fn timeout(protocol: u8, state: u8) -> u64 {
    match protocol {
        IPPROTO_TCP | IPPROTO_SCTP if state == flow_state::ESTABLISHED => {
            flow_timeout::TCP_ESTABLISHED_NS
        }
        IPPROTO_TCP | IPPROTO_SCTP => flow_timeout::TCP_TRANSIENT_NS,
        IPPROTO_UDP => flow_timeout::UDP_NS,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => flow_timeout::ICMP_NS,
        _ => flow_timeout::OTHER_NS,
    }
}
