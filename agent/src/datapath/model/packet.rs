//! The verdict the eBPF classifier gives the first packet of a flow (no conntrack entry),
//! computed from the frame in userspace. The kernel implements exactly these steps:
//!
//! 1. Ethernet II (14 bytes, else malformed). ARP passes. IPv4 and IPv6 are parsed; any
//!    other ethertype (VLAN tags included) is treated like a malformed packet.
//! 2. IPv4: version 4, IHL >= 5, header within the frame, IHL*4 <= total length <= frame;
//!    L4 = bytes from IHL*4 to total length (trailing padding ignored). Fragment offset > 0:
//!    portless.
//!    IPv6: version 6, 40 bytes, payload length <= frame. Extension headers 0, 43, 60
//!    ((len+1)*8 bytes), 44 (8 bytes; offset > 0: portless, stop) and 51 (AH, (len+2)*4
//!    bytes, len >= 1) are walked, at most 8; a 9th is malformed, as is a truncated one.
//! 3. TCP needs 20 bytes, UDP 8, SCTP 12 (destination port at offset 2 in all three);
//!    ICMP (in IPv4) and ICMPv6 (in IPv6) need 8. Fewer is malformed. Other protocols are
//!    portless. ICMPv6 types 133-137 (NDP) pass.
//! 4. Malformed: denied (`MALFORMED`) if the direction is isolated, else allowed.
//! 5. Egress with `ANTI_SPOOF`: the source must be one of the endpoint's addresses, or an
//!    IPv6 link-local (fe80::/10) or unspecified (::) source; else `SPOOFED_SOURCE`.
//! 6. Direction not isolated: `NOT_ISOLATED`. Isolated: the table lookup on the peer
//!    (source on ingress, destination on egress) decides: `RULE` or `NO_MATCHING_RULE`.
//!
//! ARP and NDP are allowed with reason `NOT_ISOLATED`: no policy was consulted.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv6Addr},
};

use etherparse::{
    EtherType, IpAuthHeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice,
    Ipv6HeaderSlice, Ipv6RawExtHeaderSlice,
};
use netwarden_common::{endpoint_flags, reason, verdict, EndpointConfig};

use super::{TableModel, Verdict, L4};
use crate::datapath::{
    compile::{isolation_flag, map_address, CompiledTables},
    rules::Direction,
};

/// Everything the kernel knows about one endpoint: its `ENDPOINTS` value, its live
/// peer and port entries and its `ADDRESSES`.
#[derive(Debug, Clone)]
pub struct EndpointState {
    pub config: EndpointConfig,
    pub tables: TableModel,
    pub addresses: BTreeSet<IpAddr>,
}

impl EndpointState {
    pub fn new(
        config: EndpointConfig,
        tables: &CompiledTables,
        addresses: BTreeSet<IpAddr>,
    ) -> Self {
        Self {
            config,
            tables: TableModel::new(tables),
            addresses,
        }
    }

    fn isolated(&self, direction: Direction) -> bool {
        self.config.flags & isolation_flag(direction) != 0
    }

    fn source_is_own(&self, source: IpAddr) -> bool {
        if let IpAddr::V6(s) = source {
            if s.is_unspecified() || s.is_unicast_link_local() {
                return true;
            }
        }
        let source = map_address(source);
        self.addresses.iter().any(|&a| map_address(a) == source)
    }
}

/// A packet's verdict ([`verdict`]) and why ([`reason`]), as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub verdict: u8,
    pub reason: u8,
}

impl Outcome {
    pub const fn allow(reason: u8) -> Self {
        Self {
            verdict: verdict::ALLOW,
            reason,
        }
    }

    pub const fn deny(reason: u8) -> Self {
        Self {
            verdict: verdict::DENY,
            reason,
        }
    }
}

/// The verdict for `frame` (Ethernet II) as the first packet of a flow on `state`'s
/// interface in `direction`.
pub fn packet_verdict(state: &EndpointState, direction: Direction, frame: &[u8]) -> Outcome {
    let packet = match parse(frame) {
        Parsed::Infrastructure => return Outcome::allow(reason::NOT_ISOLATED),
        Parsed::Malformed if state.isolated(direction) => return Outcome::deny(reason::MALFORMED),
        Parsed::Malformed => return Outcome::allow(reason::NOT_ISOLATED),
        Parsed::Ip(packet) => packet,
    };
    if direction == Direction::Egress
        && state.config.flags & endpoint_flags::ANTI_SPOOF != 0
        && !state.source_is_own(packet.src)
    {
        return Outcome::deny(reason::SPOOFED_SOURCE);
    }
    if !state.isolated(direction) {
        return Outcome::allow(reason::NOT_ISOLATED);
    }
    let peer = match direction {
        Direction::Ingress => packet.src,
        Direction::Egress => packet.dst,
    };
    match state
        .tables
        .lookup(&state.config, direction, peer, packet.l4)
    {
        Verdict::Allowed { .. } => Outcome::allow(reason::RULE),
        Verdict::Denied => Outcome::deny(reason::NO_MATCHING_RULE),
    }
}

enum Parsed {
    /// ARP, NDP: always passes.
    Infrastructure,
    /// Unparseable, truncated, or not IP.
    Malformed,
    Ip(IpPacket),
}

struct IpPacket {
    src: IpAddr,
    dst: IpAddr,
    l4: L4,
}

/// Most IPv6 extension headers walked before a packet counts as malformed.
const MAX_EXTENSION_HEADERS: usize = 8;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

fn parse(frame: &[u8]) -> Parsed {
    let Some((ether_type, l3)) = frame
        .split_at_checked(14)
        .map(|(eth, l3)| (EtherType(u16::from_be_bytes([eth[12], eth[13]])), l3))
    else {
        return Parsed::Malformed;
    };
    match ether_type {
        EtherType::ARP => Parsed::Infrastructure,
        EtherType::IPV4 => parse_ipv4(l3).unwrap_or(Parsed::Malformed),
        EtherType::IPV6 => parse_ipv6(l3).unwrap_or(Parsed::Malformed),
        _ => Parsed::Malformed,
    }
}

fn parse_ipv4(l3: &[u8]) -> Option<Parsed> {
    let header = Ipv4HeaderSlice::from_slice(l3).ok()?;
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    if total_len < header_len || total_len > l3.len() {
        return None;
    }
    let payload = &l3[header_len..total_len];
    let l4 = if header.fragments_offset().value() > 0 {
        L4::Portless
    } else {
        match transport(header.protocol().0, ICMP, payload)? {
            Transport::Ports(l4) => l4,
            Transport::Icmp(_) | Transport::Other => L4::Portless,
        }
    };
    Some(Parsed::Ip(IpPacket {
        src: IpAddr::V4(header.source_addr()),
        dst: IpAddr::V4(header.destination_addr()),
        l4,
    }))
}

fn parse_ipv6(l3: &[u8]) -> Option<Parsed> {
    let header = Ipv6HeaderSlice::from_slice(l3).ok()?;
    let payload_len = usize::from(header.payload_length());
    let mut rest = l3.get(40..40 + payload_len)?;
    let mut next = header.next_header();
    let mut walked = 0;
    let mut later_fragment = false;
    loop {
        let len = match next {
            IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS => {
                let ext = Ipv6RawExtHeaderSlice::from_slice(rest).ok()?;
                next = ext.next_header();
                ext.slice().len()
            }
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                let ext = Ipv6FragmentHeaderSlice::from_slice(rest).ok()?;
                next = ext.next_header();
                later_fragment = ext.fragment_offset().value() > 0;
                ext.slice().len()
            }
            IpNumber::AUTHENTICATION_HEADER => {
                let ext = IpAuthHeaderSlice::from_slice(rest).ok()?;
                next = ext.next_header();
                ext.slice().len()
            }
            _ => break,
        };
        walked += 1;
        if walked > MAX_EXTENSION_HEADERS {
            return None;
        }
        rest = &rest[len..];
        if later_fragment {
            break;
        }
    }
    let l4 = if later_fragment {
        L4::Portless
    } else {
        match transport(next.0, ICMPV6, rest)? {
            Transport::Ports(l4) => l4,
            Transport::Icmp(133..=137) => return Some(Parsed::Infrastructure),
            Transport::Icmp(_) | Transport::Other => L4::Portless,
        }
    };
    Some(Parsed::Ip(IpPacket {
        src: IpAddr::V6(Ipv6Addr::from(header.source())),
        dst: IpAddr::V6(Ipv6Addr::from(header.destination())),
        l4,
    }))
}

enum Transport {
    Ports(L4),
    /// The IP version's ICMP (ICMP in IPv4, ICMPv6 in IPv6): its type.
    Icmp(u8),
    Other,
}

/// The L4 header of protocol `protocol` at the start of `payload`; `None` if truncated.
/// `icmp` is the ICMP protocol number of the IP version (the other one is just a protocol).
fn transport(protocol: u8, icmp: u8, payload: &[u8]) -> Option<Transport> {
    let port = |min_len: usize| {
        (payload.len() >= min_len).then(|| u16::from_be_bytes([payload[2], payload[3]]))
    };
    Some(match protocol {
        6 => Transport::Ports(L4::Tcp {
            dst_port: port(20)?,
        }),
        17 => Transport::Ports(L4::Udp { dst_port: port(8)? }),
        132 => Transport::Ports(L4::Sctp {
            dst_port: port(12)?,
        }),
        p if p == icmp => Transport::Icmp(*payload.get(..8)?.first()?),
        _ => Transport::Other,
    })
}

#[cfg(test)]
mod tests {
    use proptest::{prelude::*, test_runner::RngSeed};

    use super::*;
    use crate::datapath::{
        compile::compile,
        model::{
            scenario::{Packet, Scenario, Shape, Transport},
            tests::direct,
        },
        rules::{
            EndpointPolicy, Isolation, PeerBlock, Peers, PortMatch, PortRange, Ports, Protocol,
            Rule,
        },
    };

    /// What the packet should get, from how it was built and the rules themselves.
    fn expected(s: &Scenario, p: &Packet) -> Outcome {
        let isolated = matches!(s.policy.direction(p.direction), Isolation::Isolated(_));
        let malformed = if isolated {
            Outcome::deny(reason::MALFORMED)
        } else {
            Outcome::allow(reason::NOT_ISOLATED)
        };
        let ipv4 = matches!((p.src, p.dst), (IpAddr::V4(_), IpAddr::V4(_)));
        match p.shape {
            Shape::Arp => return Outcome::allow(reason::NOT_ISOLATED),
            Shape::Vlan | Shape::TruncatedIp | Shape::BadVersion => return malformed,
            Shape::ExtensionHeaders(n) if !ipv4 && n > 8 => return malformed,
            _ => {}
        }
        let icmp = if ipv4 { 1 } else { 58 };
        // (header bytes it needs, bytes the builder writes)
        let (needed, written) = match p.transport {
            Transport::Tcp { .. } => (20, 20),
            Transport::Udp { .. } => (8, 8),
            Transport::Sctp { .. } => (12, 12),
            Transport::IcmpEcho => (8, 8),
            Transport::Icmpv6Type(_) => (8, 24),
            Transport::Other(n) => (if n == icmp { 8 } else { 0 }, 6),
        };
        let present = match p.shape {
            Shape::TruncatedTransport(keep) => written.min(usize::from(keep)),
            _ => written,
        };
        let later_fragment = p.shape == Shape::LaterFragment;
        if !later_fragment && present < needed {
            return malformed;
        }
        if let Transport::Icmpv6Type(133..=137) = p.transport {
            if !ipv4 && !later_fragment {
                return Outcome::allow(reason::NOT_ISOLATED);
            }
        }
        let own = |a: IpAddr| {
            s.addresses
                .iter()
                .any(|o| o.to_canonical() == a.to_canonical())
        };
        let exempt =
            matches!(p.src, IpAddr::V6(a) if a.is_unspecified() || a.is_unicast_link_local());
        if p.direction == Direction::Egress && s.anti_spoof && !exempt && !own(p.src) {
            return Outcome::deny(reason::SPOOFED_SOURCE);
        }
        let Isolation::Isolated(rules) = s.policy.direction(p.direction) else {
            return Outcome::allow(reason::NOT_ISOLATED);
        };
        let peer = match p.direction {
            Direction::Ingress => p.src,
            Direction::Egress => p.dst,
        };
        let l4 = match p.transport {
            _ if later_fragment => L4::Portless,
            Transport::Tcp { dst_port } => L4::Tcp { dst_port },
            Transport::Udp { dst_port } => L4::Udp { dst_port },
            Transport::Sctp { dst_port } => L4::Sctp { dst_port },
            _ => L4::Portless,
        };
        if direct(rules, peer, l4).1.is_empty() {
            Outcome::deny(reason::NO_MATCHING_RULE)
        } else {
            Outcome::allow(reason::RULE)
        }
    }

    fn state_of(s: &Scenario) -> EndpointState {
        let tables = compile(5, 1, &s.policy);
        EndpointState::new(
            s.config(&tables),
            &tables,
            s.addresses.iter().copied().collect(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 300,
            rng_seed: RngSeed::Fixed(0x7061_636b_6574),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn generated_frames_get_what_the_rules_say(seed in any::<u64>()) {
            let scenario = Scenario::generate(seed);
            let state = state_of(&scenario);
            for p in &scenario.packets {
                let got = packet_verdict(&state, p.direction, &p.frame());
                prop_assert_eq!(got, expected(&scenario, p), "seed {}, {:?}", seed, p);
            }
        }
    }

    const POD_V4: [u8; 4] = [10, 9, 0, 5];
    const POD_V6: &str = "fd00:9::5";

    /// An endpoint whose `direction` has `rules` (the other one open), anti-spoofing on.
    fn endpoint(direction: Direction, rules: Vec<Rule>) -> Scenario {
        let isolated = Isolation::Isolated(rules);
        let policy = match direction {
            Direction::Ingress => EndpointPolicy {
                ingress: isolated,
                egress: Isolation::Open,
            },
            Direction::Egress => EndpointPolicy {
                ingress: Isolation::Open,
                egress: isolated,
            },
        };
        Scenario {
            seed: 0,
            policy,
            addresses: vec![IpAddr::from(POD_V4), POD_V6.parse().unwrap()],
            anti_spoof: true,
            probes: Vec::new(),
            packets: Vec::new(),
        }
    }

    fn rule(peer: &str, except: &[&str], ports: Ports) -> Rule {
        Rule {
            peers: Peers::Blocks(vec![PeerBlock {
                cidr: peer.parse().unwrap(),
                except: except.iter().map(|e| e.parse().unwrap()).collect(),
            }]),
            ports,
        }
    }

    fn tcp(first: u16, last: u16) -> Ports {
        Ports::Matches(vec![PortMatch {
            protocol: Protocol::Tcp,
            ports: PortRange { first, last },
        }])
    }

    fn ingress(from: &str, transport: Transport, shape: Shape) -> Packet {
        Packet {
            direction: Direction::Ingress,
            src: from.parse().unwrap(),
            dst: if from.contains(':') {
                POD_V6.parse().unwrap()
            } else {
                IpAddr::from(POD_V4)
            },
            src_port: 40000,
            transport,
            shape,
        }
    }

    fn verdict_of(s: &Scenario, p: &Packet) -> Outcome {
        let got = packet_verdict(&state_of(s), p.direction, &p.frame());
        assert_eq!(got, expected(s, p), "the oracle agrees on {p:?}");
        got
    }

    const ALLOWED: Outcome = Outcome::allow(reason::RULE);
    const DENIED: Outcome = Outcome::deny(reason::NO_MATCHING_RULE);
    const MALFORMED: Outcome = Outcome::deny(reason::MALFORMED);
    const OPEN: Outcome = Outcome::allow(reason::NOT_ISOLATED);

    #[test]
    fn port_ranges_match_at_their_edges_for_their_protocol_only() {
        let s = endpoint(
            Direction::Ingress,
            vec![rule("192.0.2.0/24", &[], tcp(1000, 2047))],
        );
        for (port, outcome) in [
            (999, DENIED),
            (1000, ALLOWED),
            (2047, ALLOWED),
            (2048, DENIED),
        ] {
            let p = ingress("192.0.2.1", Transport::Tcp { dst_port: port }, Shape::Plain);
            assert_eq!(verdict_of(&s, &p), outcome, "port {port}");
        }
        let udp = ingress("192.0.2.1", Transport::Udp { dst_port: 1000 }, Shape::Plain);
        assert_eq!(verdict_of(&s, &udp), DENIED);
        let icmp = ingress("192.0.2.1", Transport::IcmpEcho, Shape::Plain);
        assert_eq!(
            verdict_of(&s, &icmp),
            DENIED,
            "portless needs a rule without ports"
        );
    }

    #[test]
    fn excepts_are_carved_out_of_their_block() {
        let s = endpoint(
            Direction::Ingress,
            vec![rule("2001:db8::/32", &["2001:db8:1::/48"], Ports::Any)],
        );
        let inside = ingress(
            "2001:db8:2::1",
            Transport::Sctp { dst_port: 9 },
            Shape::Plain,
        );
        assert_eq!(verdict_of(&s, &inside), ALLOWED);
        let excepted = ingress(
            "2001:db8:1::1",
            Transport::Sctp { dst_port: 9 },
            Shape::Plain,
        );
        assert_eq!(verdict_of(&s, &excepted), DENIED);
    }

    #[test]
    fn arp_and_ndp_pass_an_endpoint_that_allows_nothing() {
        let s = endpoint(Direction::Ingress, Vec::new());
        assert_eq!(
            verdict_of(&s, &ingress("192.0.2.1", Transport::IcmpEcho, Shape::Arp)),
            OPEN
        );
        for ndp in 133..=137 {
            let p = ingress("fe80::1", Transport::Icmpv6Type(ndp), Shape::Plain);
            assert_eq!(verdict_of(&s, &p), OPEN, "NDP type {ndp}");
        }
        let echo = ingress("fe80::1", Transport::Icmpv6Type(128), Shape::Plain);
        assert_eq!(verdict_of(&s, &echo), DENIED);
    }

    #[test]
    fn unparseable_frames_are_dropped_only_where_isolated() {
        let isolated = endpoint(
            Direction::Ingress,
            vec![Rule {
                peers: Peers::Any,
                ports: Ports::Any,
            }],
        );
        let open = endpoint(Direction::Egress, Vec::new());
        let tcp = Transport::Tcp { dst_port: 80 };
        for p in [
            ingress("192.0.2.1", tcp, Shape::Vlan),
            ingress("192.0.2.1", tcp, Shape::TruncatedIp),
            ingress("2001:db8::1", tcp, Shape::TruncatedIp),
            ingress("192.0.2.1", tcp, Shape::BadVersion),
            ingress("2001:db8::1", tcp, Shape::BadVersion),
            ingress("192.0.2.1", tcp, Shape::TruncatedTransport(19)),
            ingress(
                "2001:db8::1",
                Transport::Udp { dst_port: 53 },
                Shape::TruncatedTransport(7),
            ),
            ingress(
                "192.0.2.1",
                Transport::Sctp { dst_port: 1 },
                Shape::TruncatedTransport(11),
            ),
            ingress(
                "192.0.2.1",
                Transport::IcmpEcho,
                Shape::TruncatedTransport(7),
            ),
            ingress(
                "2001:db8::1",
                Transport::Icmpv6Type(135),
                Shape::TruncatedTransport(4),
            ),
            ingress("2001:db8::1", tcp, Shape::ExtensionHeaders(9)),
        ] {
            assert_eq!(verdict_of(&isolated, &p), MALFORMED, "{p:?}");
            assert_eq!(verdict_of(&open, &p), OPEN, "{p:?}");
        }
        let mut runt = ingress("192.0.2.1", tcp, Shape::Plain).frame();
        runt.truncate(13);
        assert_eq!(
            packet_verdict(&state_of(&isolated), Direction::Ingress, &runt),
            MALFORMED
        );
    }

    #[test]
    fn headers_before_the_ports_are_skipped() {
        let s = endpoint(
            Direction::Ingress,
            vec![Rule {
                peers: Peers::Any,
                ports: tcp(443, 443),
            }],
        );
        let tcp = Transport::Tcp { dst_port: 443 };
        for p in [
            ingress("192.0.2.1", tcp, Shape::Options),
            ingress("192.0.2.1", tcp, Shape::Padded),
            ingress("192.0.2.1", tcp, Shape::FirstFragment),
            ingress("2001:db8::1", tcp, Shape::Options),
            ingress("2001:db8::1", tcp, Shape::FirstFragment),
            ingress("2001:db8::1", tcp, Shape::ExtensionHeaders(8)),
            ingress("::ffff:192.0.2.1", tcp, Shape::Plain),
        ] {
            assert_eq!(verdict_of(&s, &p), ALLOWED, "{p:?}");
        }
    }

    #[test]
    fn later_fragments_are_portless() {
        let ports = endpoint(
            Direction::Ingress,
            vec![Rule {
                peers: Peers::Any,
                ports: tcp(0, 65535),
            }],
        );
        let any = endpoint(
            Direction::Ingress,
            vec![Rule {
                peers: Peers::Any,
                ports: Ports::Any,
            }],
        );
        for from in ["192.0.2.1", "2001:db8::1"] {
            let p = ingress(from, Transport::Tcp { dst_port: 80 }, Shape::LaterFragment);
            assert_eq!(verdict_of(&ports, &p), DENIED, "{p:?}");
            assert_eq!(verdict_of(&any, &p), ALLOWED, "{p:?}");
        }
    }

    #[test]
    fn egress_from_a_foreign_source_is_spoofed() {
        let s = endpoint(
            Direction::Egress,
            vec![Rule {
                peers: Peers::Any,
                ports: Ports::Any,
            }],
        );
        let from = |src: &str, dst: &str| Packet {
            direction: Direction::Egress,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: 40000,
            transport: Transport::Udp { dst_port: 53 },
            shape: Shape::Plain,
        };
        let spoofed = Outcome::deny(reason::SPOOFED_SOURCE);
        assert_eq!(verdict_of(&s, &from("10.9.0.5", "192.0.2.1")), ALLOWED);
        assert_eq!(verdict_of(&s, &from("10.9.0.6", "192.0.2.1")), spoofed);
        assert_eq!(verdict_of(&s, &from("fd00:9::5", "2001:db8::1")), ALLOWED);
        assert_eq!(verdict_of(&s, &from("fd00:9::6", "2001:db8::1")), spoofed);
        assert_eq!(verdict_of(&s, &from("fe80::77", "2001:db8::1")), ALLOWED);
        assert_eq!(verdict_of(&s, &from("::", "ff02::16")), ALLOWED);
        assert_eq!(
            verdict_of(&s, &from("::ffff:10.9.0.5", "::ffff:192.0.2.1")),
            ALLOWED
        );
        // Spoofing is checked before isolation, and only where asked for.
        let open = Scenario {
            policy: EndpointPolicy::default(),
            ..s.clone()
        };
        assert_eq!(verdict_of(&open, &from("10.9.0.6", "192.0.2.1")), spoofed);
        let unchecked = Scenario {
            anti_spoof: false,
            ..s
        };
        assert_eq!(
            verdict_of(&unchecked, &from("10.9.0.6", "192.0.2.1")),
            ALLOWED
        );
    }
}
