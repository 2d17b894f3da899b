//! The policy lookup for a new (or re-checked) flow: at most two lookups for the peer and
//! two for the port, whatever the number of rules. Except-carving and the union of rules
//! were resolved in userspace into the entries of the four tables.
//!
//! Host peers and single ports sit in exact hashes asked first; the LPM tries hold only
//! what a hash cannot (shorter prefixes, port ranges) and are asked only on a miss, and
//! only when they hold something for the direction (endpoint flag) or class (peer flag).
//! A hash hit is exactly the LPM's answer: a host entry is the longest prefix an address
//! can match, and a single-port entry the longest a port can (port blocks are disjoint).
use aya_ebpf::maps::lpm_trie::Key;
use netwarden_common::{
    direction, endpoint_flags, peer_flags, reason, Addr, EndpointConfig, PeerKey, PeerValue,
    PortKey, PEER_KEY_HEADER_BITS, PORT_KEY_HEADER_BITS,
};

use crate::{
    maps::{PEERS, PEER_HOSTS, PORTS, PORT_EXACT},
    parse::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP},
};

/// What a flow is, for the policy: the peer (remote side), protocol, destination port.
#[derive(Clone, Copy)]
pub struct Query {
    pub direction: u8,
    pub peer: Addr,
    pub protocol: u8,
    pub port: u16,
    pub portless: bool,
}

/// The allowing reason, or `NO_MATCHING_RULE`. One function (a BPF-to-BPF call) for
/// both callers: inlined twice, its keys would not fit the 512-byte stack.
#[inline(never)]
pub fn decide(config: &EndpointConfig, query: &Query) -> u8 {
    let isolated = if query.direction == direction::INGRESS {
        endpoint_flags::INGRESS_ISOLATED
    } else {
        endpoint_flags::EGRESS_ISOLATED
    };
    if config.flags & isolated == 0 {
        return reason::NOT_ISOLATED;
    }
    if allowed(config, query) {
        reason::RULE
    } else {
        reason::NO_MATCHING_RULE
    }
}

#[inline(always)]
fn allowed(config: &EndpointConfig, query: &Query) -> bool {
    let peer_key = PeerKey {
        endpoint: config.id,
        direction: query.direction,
        generation: config.generation as u8,
        _pad: [0; 2],
        addr: query.peer,
    };
    let Some(peer) = peer_class(config, query.direction, &peer_key) else {
        return false;
    };
    let (class, flags) = (peer.class, peer.flags);
    if flags & peer_flags::ALLOW_ALL != 0 {
        return true;
    }
    let has_ports = matches!(query.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP);
    if query.portless || !has_ports {
        return false;
    }
    let port_key = PortKey {
        endpoint: config.id,
        direction: query.direction,
        generation: config.generation as u8,
        protocol: query.protocol,
        _pad: 0,
        class,
        port: query.port.to_be_bytes(),
        _pad2: [0; 2],
    };
    // SAFETY: only presence is read.
    if unsafe { PORT_EXACT.get(&port_key) }.is_some() {
        return true;
    }
    if flags & peer_flags::PORT_RANGES == 0 {
        return false;
    }
    PORTS
        .get(&Key::new(PORT_KEY_HEADER_BITS + 16, port_key))
        .is_some()
}

/// The peer's class entry: its host entry, else its longest prefix.
#[inline(always)]
fn peer_class(config: &EndpointConfig, dir: u8, key: &PeerKey) -> Option<PeerValue> {
    // SAFETY: the value is copied out at once.
    if let Some(host) = unsafe { PEER_HOSTS.get(key) } {
        return Some(*host);
    }
    let prefixes = if dir == direction::INGRESS {
        endpoint_flags::INGRESS_PEER_PREFIXES
    } else {
        endpoint_flags::EGRESS_PEER_PREFIXES
    };
    if config.flags & prefixes == 0 {
        return None;
    }
    PEERS
        .get(&Key::new(PEER_KEY_HEADER_BITS + 128, *key))
        .copied()
}
