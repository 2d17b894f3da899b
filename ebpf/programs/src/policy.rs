//! The policy lookup for a new (or re-checked) flow: two LPM lookups at most, whatever the
//! number of rules. Except-carving and the union of rules were resolved in userspace into
//! the longest-prefix entries of `PEERS` and `PORTS`.
use aya_ebpf::maps::lpm_trie::Key;
use netwarden_common::{
    endpoint_flags, peer_flags, reason, Addr, EndpointConfig, PeerKey, PortKey,
    PEER_KEY_HEADER_BITS, PORT_KEY_HEADER_BITS,
};

use crate::{
    maps::{PEERS, PORTS},
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

/// The allowing reason, or `NO_MATCHING_RULE`.
#[inline(always)]
pub fn decide(config: &EndpointConfig, query: &Query) -> u8 {
    let isolated = if query.direction == netwarden_common::direction::INGRESS {
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
    let peer_key = Key::new(
        PEER_KEY_HEADER_BITS + 128,
        PeerKey {
            endpoint: config.id,
            direction: query.direction,
            generation: config.generation as u8,
            _pad: [0; 2],
            addr: query.peer,
        },
    );
    let Some(peer) = PEERS.get(&peer_key) else {
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
    let port_key = Key::new(
        PORT_KEY_HEADER_BITS + 16,
        PortKey {
            endpoint: config.id,
            direction: query.direction,
            generation: config.generation as u8,
            protocol: query.protocol,
            _pad: 0,
            class,
            port: query.port.to_be_bytes(),
            _pad2: [0; 2],
        },
    );
    PORTS.get(&port_key).is_some()
}
