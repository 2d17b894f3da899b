//! Random but reproducible test input for the datapath: a policy, table lookups and
//! frames, all from one seed. The model's tests compare the compiled tables with the
//! rules on these; the kernel differential test compares the eBPF program with the model.
//!
//! Probes are biased towards the edges of what the policy names: first and last address
//! of every cidr and except and their neighbours outside, range ends and their neighbours.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, ArpPacket, EtherType, Ethernet2Header, IcmpEchoHeader,
    Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpAuthHeader, IpFragOffset, IpNumber,
    Ipv4Header, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, SingleVlanHeader, TcpHeader,
    UdpHeader, VlanId,
};
use ipnet::IpNet;
use netwarden_common::{endpoint_flags, EndpointConfig};

use super::{config_of, L4};
use crate::datapath::{
    compile::CompiledTables,
    rules::{
        Direction, EndpointPolicy, Isolation, PeerBlock, Peers, PortMatch, PortRange, Ports,
        Protocol, Rule,
    },
};

/// One generated case: a policy for one endpoint, and what to ask about it.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub policy: EndpointPolicy,
    /// The endpoint's own addresses (one IPv4, one IPv6).
    pub addresses: Vec<IpAddr>,
    /// Whether egress anti-spoofing is on.
    pub anti_spoof: bool,
    /// Table lookups (new flows in any direction, isolated or not).
    pub probes: Vec<Probe>,
    /// Whole frames, every parser branch included.
    pub packets: Vec<Packet>,
}

/// A table lookup: a new flow with `peer` in `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub direction: Direction,
    pub peer: IpAddr,
    pub l4: L4,
}

/// A frame, described by what it carries; [`Packet::frame`] builds the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub direction: Direction,
    /// Both IPv4: an IPv4 packet; otherwise IPv6 (an IPv4 address becomes v4-mapped).
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Source port (TCP/UDP/SCTP) or echo identifier: distinct per packet of a scenario,
    /// so no two packets are the same flow.
    pub src_port: u16,
    pub transport: Transport,
    pub shape: Shape,
}

/// What the packet carries above IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        dst_port: u16,
    },
    Udp {
        dst_port: u16,
    },
    Sctp {
        dst_port: u16,
    },
    /// ICMP echo request (ICMPv6 in IPv6).
    IcmpEcho,
    /// An ICMPv6 message of this type with an NDP-sized body (ICMP in IPv4).
    Icmpv6Type(u8),
    /// Some other IP protocol, with a few payload bytes.
    Other(u8),
}

/// How the frame around the transport is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Plain,
    /// Ethernet padding after the IP packet.
    Padded,
    /// IPv4 options (IPv6: a destination options header).
    Options,
    /// IPv6 extension headers, this many, cycling through 60, 43, 0, 51 (IPv4: plain).
    ExtensionHeaders(u8),
    /// First fragment: offset 0, more fragments.
    FirstFragment,
    /// A fragment at offset 1480: no transport header in it.
    LaterFragment,
    /// The transport bytes cut to this many, lengths consistent.
    TruncatedTransport(u8),
    /// The frame ends before the IP length says.
    TruncatedIp,
    /// IP version field wrong (3 for IPv4, 5 for IPv6).
    BadVersion,
    /// An 802.1Q tag in front of the IP packet.
    Vlan,
    /// An ARP request instead.
    Arp,
}

impl Scenario {
    /// The scenario of `seed`; the same seed gives the same scenario.
    pub fn generate(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let policy = EndpointPolicy {
            ingress: isolation(&mut rng),
            egress: isolation(&mut rng),
        };
        let addresses = vec![
            IpAddr::V4(Ipv4Addr::from(0x0a09_0000 | rng.below(1 << 16) as u32)),
            IpAddr::V6(Ipv6Addr::from(
                0xfd00_0009_u128 << 96 | u128::from(rng.below(1 << 16)),
            )),
        ];
        let anti_spoof = rng.chance(70);
        let edges = Edges::of(&policy);
        let probes = (0..200)
            .map(|_| Probe {
                direction: rng.direction(),
                peer: edges.address(&mut rng),
                l4: edges.l4(&mut rng),
            })
            .collect();
        let packets = (0..120)
            .map(|i| packet(&mut rng, &edges, &addresses, 49152 + i))
            .collect();
        Self {
            seed,
            policy,
            addresses,
            anti_spoof,
            probes,
            packets,
        }
    }

    /// The configuration the kernel runs `tables` (compiled from this scenario's policy)
    /// under, with this scenario's anti-spoofing setting.
    pub fn config(&self, tables: &CompiledTables) -> EndpointConfig {
        let mut config = config_of(tables);
        if self.anti_spoof {
            config.flags |= endpoint_flags::ANTI_SPOOF;
        }
        config
    }
}

impl Packet {
    /// The Ethernet II frame.
    pub fn frame(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        let ether_type = match (self.shape, self.src, self.dst) {
            (Shape::Arp, ..) => EtherType::ARP,
            (Shape::Vlan, ..) => EtherType::VLAN_TAGGED_FRAME,
            (_, IpAddr::V4(_), IpAddr::V4(_)) => EtherType::IPV4,
            _ => EtherType::IPV6,
        };
        let ethernet = Ethernet2Header {
            source: [0x02, 0, 0, 0, 0, 1],
            destination: [0x02, 0, 0, 0, 0, 2],
            ether_type,
        };
        frame.extend_from_slice(&ethernet.to_bytes());
        if self.shape == Shape::Arp {
            let arp = ArpEthIpv4Packet {
                operation: ArpOperation::REQUEST,
                sender_mac: ethernet.source,
                sender_ipv4: v4_octets(self.src),
                target_mac: [0; 6],
                target_ipv4: v4_octets(self.dst),
            };
            frame.extend_from_slice(&ArpPacket::from(arp).to_bytes());
            return frame;
        }
        if self.shape == Shape::Vlan {
            let tag = SingleVlanHeader {
                pcp: Default::default(),
                drop_eligible_indicator: false,
                vlan_id: VlanId::try_new(7).expect("7 is a VLAN id"),
                ether_type: if matches!((self.src, self.dst), (IpAddr::V4(_), IpAddr::V4(_))) {
                    EtherType::IPV4
                } else {
                    EtherType::IPV6
                },
            };
            frame.extend_from_slice(&tag.to_bytes());
        }
        let ip_start = frame.len();
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => self.write_ipv4(&mut frame, src, dst),
            (src, dst) => self.write_ipv6(&mut frame, v6(src), v6(dst)),
        }
        match self.shape {
            Shape::Padded => frame.extend_from_slice(&[0; 7]),
            Shape::TruncatedIp => frame.truncate(frame.len().max(ip_start + 1) - 1),
            _ => {}
        }
        frame
    }

    fn transport_bytes(&self, ipv6: bool) -> (u8, Vec<u8>) {
        let mut bytes = match self.transport {
            Transport::Tcp { dst_port } => (
                6,
                TcpHeader::new(self.src_port, dst_port, 1, 64240)
                    .to_bytes()
                    .to_vec(),
            ),
            Transport::Udp { dst_port } => (
                17,
                UdpHeader {
                    source_port: self.src_port,
                    destination_port: dst_port,
                    length: 8,
                    checksum: 0,
                }
                .to_bytes()
                .to_vec(),
            ),
            Transport::Sctp { dst_port } => {
                let mut b = self.src_port.to_be_bytes().to_vec();
                b.extend_from_slice(&dst_port.to_be_bytes());
                b.extend_from_slice(&[0; 8]);
                (132, b)
            }
            Transport::IcmpEcho if ipv6 => (
                58,
                Icmpv6Header::new(Icmpv6Type::EchoRequest(IcmpEchoHeader {
                    id: self.src_port,
                    seq: 1,
                }))
                .to_bytes()
                .to_vec(),
            ),
            Transport::IcmpEcho => (
                1,
                Icmpv4Header::new(Icmpv4Type::EchoRequest(IcmpEchoHeader {
                    id: self.src_port,
                    seq: 1,
                }))
                .to_bytes()
                .to_vec(),
            ),
            Transport::Icmpv6Type(kind) => {
                // Type, code, checksum, 4 reserved bytes, a 16-byte target address.
                let mut b = vec![kind, 0, 0, 0, 0, 0, 0, 0];
                b.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                (if ipv6 { 58 } else { 1 }, b)
            }
            Transport::Other(protocol) => (protocol, vec![0xab; 6]),
        };
        if let Shape::TruncatedTransport(keep) = self.shape {
            bytes.1.truncate(usize::from(keep));
        }
        bytes
    }

    fn write_ipv4(&self, frame: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr) {
        let (protocol, payload) = self.transport_bytes(false);
        let payload_len = u16::try_from(payload.len()).expect("small payload");
        let mut header = Ipv4Header::new(
            payload_len,
            64,
            IpNumber(protocol),
            src.octets(),
            dst.octets(),
        )
        .expect("small payload");
        match self.shape {
            Shape::Options => {
                // Three NOPs and an end-of-options.
                header.options = [1, 1, 1, 0].into();
                header.total_len += 4;
            }
            Shape::FirstFragment => header.more_fragments = true,
            Shape::LaterFragment => {
                header.fragment_offset = IpFragOffset::try_new(185).expect("valid offset");
            }
            _ => {}
        }
        header.header_checksum = header.calc_header_checksum();
        let mut bytes = header.to_bytes().to_vec();
        if self.shape == Shape::BadVersion {
            bytes[0] = 0x30 | (bytes[0] & 0x0f);
        }
        frame.extend_from_slice(&bytes);
        frame.extend_from_slice(&payload);
    }

    fn write_ipv6(&self, frame: &mut Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr) {
        let (protocol, payload) = self.transport_bytes(true);
        let mut extensions: Vec<(IpNumber, Vec<u8>)> = Vec::new();
        let options = |next| {
            Ipv6RawExtHeader::new_raw(next, &[1, 4, 0, 0, 0, 0])
                .expect("6 bytes of PadN")
                .to_bytes()
                .to_vec()
        };
        let fragment = |next, offset, more| {
            let offset = IpFragOffset::try_new(offset).expect("valid offset");
            Ipv6FragmentHeader::new(next, offset, more, 77)
                .to_bytes()
                .to_vec()
        };
        // Built back to front: each header names the one after it.
        let mut next = IpNumber(protocol);
        let mut push = |kind: IpNumber, bytes: Vec<u8>, next: &mut IpNumber| {
            extensions.push((kind, bytes));
            *next = kind;
        };
        match self.shape {
            Shape::Options => push(IpNumber::IPV6_DESTINATION_OPTIONS, options(next), &mut next),
            Shape::FirstFragment => push(
                IpNumber::IPV6_FRAGMENTATION_HEADER,
                fragment(next, 0, true),
                &mut next,
            ),
            Shape::LaterFragment => push(
                IpNumber::IPV6_FRAGMENTATION_HEADER,
                fragment(next, 185, false),
                &mut next,
            ),
            Shape::ExtensionHeaders(count) => {
                for i in 0..count {
                    let (kind, bytes) = match i % 4 {
                        0 => (IpNumber::IPV6_DESTINATION_OPTIONS, options(next)),
                        1 => {
                            // Routing type 0, no segments left.
                            let routing = Ipv6RawExtHeader::new_raw(next, &[0, 0, 0, 0, 0, 0])
                                .expect("6 bytes");
                            (IpNumber::IPV6_ROUTE_HEADER, routing.to_bytes().to_vec())
                        }
                        2 => (IpNumber::IPV6_HEADER_HOP_BY_HOP, options(next)),
                        _ => {
                            let auth = IpAuthHeader::new(next, 1, 1, &[]).expect("no ICV");
                            (IpNumber::AUTHENTICATION_HEADER, auth.to_bytes().to_vec())
                        }
                    };
                    push(kind, bytes, &mut next);
                }
            }
            _ => {}
        }
        let ext_len: usize = extensions.iter().map(|(_, b)| b.len()).sum();
        let header = Ipv6Header {
            traffic_class: 0,
            flow_label: Default::default(),
            payload_length: u16::try_from(ext_len + payload.len()).expect("small payload"),
            next_header: next,
            hop_limit: 64,
            source: src.octets(),
            destination: dst.octets(),
        };
        let mut bytes = header.to_bytes();
        if self.shape == Shape::BadVersion {
            bytes[0] = 0x50 | (bytes[0] & 0x0f);
        }
        frame.extend_from_slice(&bytes);
        for (_, ext) in extensions.iter().rev() {
            frame.extend_from_slice(ext);
        }
        frame.extend_from_slice(&payload);
    }
}

fn v4_octets(address: IpAddr) -> [u8; 4] {
    match address.to_canonical() {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

fn v6(address: IpAddr) -> Ipv6Addr {
    match address {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// splitmix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn u128(&mut self) -> u128 {
        u128::from(self.next()) << 64 | u128::from(self.next())
    }

    fn direction(&mut self) -> Direction {
        if self.chance(50) {
            Direction::Ingress
        } else {
            Direction::Egress
        }
    }
}

fn isolation(rng: &mut Rng) -> Isolation {
    if rng.chance(20) {
        return Isolation::Open;
    }
    Isolation::Isolated((0..rng.below(5)).map(|_| rule(rng)).collect())
}

fn rule(rng: &mut Rng) -> Rule {
    let peers = if rng.chance(15) {
        Peers::Any
    } else {
        Peers::Blocks((0..rng.below(4)).map(|_| block(rng)).collect())
    };
    let ports = if rng.chance(30) {
        Ports::Any
    } else {
        Ports::Matches((0..rng.below(4)).map(|_| port_match(rng)).collect())
    };
    Rule { peers, ports }
}

const V4_BASES: [u32; 5] = [0x0a00_0000, 0x0a01_0200, 0xc0a8_0000, 0, 0xffff_ff00];
const V4_LENGTHS: [u8; 11] = [0, 1, 8, 12, 16, 23, 24, 25, 30, 31, 32];
const V6_BASES: [u128; 6] = [
    0x2001_0db8 << 96,
    0x2001_0db8_0000_0001 << 64,
    0xfd00 << 112,
    0,
    0xffff_0a00_0000,
    0xfe80 << 112,
];
const V6_LENGTHS: [u8; 13] = [0, 1, 16, 32, 48, 64, 95, 96, 97, 112, 120, 127, 128];
const PORT_EDGES: [u16; 13] = [
    0, 1, 2, 79, 80, 81, 1023, 1024, 1025, 32767, 32768, 65534, 65535,
];

fn random_net(rng: &mut Rng, v4: bool) -> IpNet {
    if v4 {
        let len = if rng.chance(70) {
            rng.pick(&V4_LENGTHS)
        } else {
            rng.below(33) as u8
        };
        let addr = rng.pick(&V4_BASES) | (rng.next() as u32 & 0xffff);
        IpNet::new(Ipv4Addr::from(addr).into(), len).expect("length <= 32")
    } else {
        let len = if rng.chance(70) {
            rng.pick(&V6_LENGTHS)
        } else {
            rng.below(129) as u8
        };
        let addr = rng.pick(&V6_BASES) | (rng.u128() & 0xffff_ffff);
        IpNet::new(Ipv6Addr::from(addr).into(), len).expect("length <= 128")
    }
}

/// A prefix inside `net` (possibly all of it).
fn sub_net(rng: &mut Rng, net: IpNet) -> IpNet {
    let max = net.max_prefix_len();
    let len = net.prefix_len() + rng.below(u64::from(max - net.prefix_len()) + 1) as u8;
    let addr = match net {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(
            u32::from(n.network()) | (rng.next() as u32 & !u32::from(n.netmask())),
        )),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(
            u128::from(n.network()) | (rng.u128() & !u128::from(n.netmask())),
        )),
    };
    IpNet::new(addr, len)
        .expect("length within the family")
        .trunc()
}

/// A block; a quarter are single hosts (the kernel's exact host table), drawn from the
/// same bases as the prefixes so they often sit inside or beside them.
fn block(rng: &mut Rng) -> PeerBlock {
    let v4 = rng.chance(60);
    if rng.chance(25) {
        let net = random_net(rng, v4);
        return PeerBlock::host(sub_net(rng, net).addr());
    }
    let cidr = random_net(rng, v4);
    let except = (0..rng.below(4))
        .map(|_| match rng.below(20) {
            0 => random_net(rng, matches!(cidr, IpNet::V6(_))),
            1 | 2 => random_net(rng, matches!(cidr, IpNet::V4(_))),
            _ => sub_net(rng, cidr),
        })
        .collect();
    PeerBlock { cidr, except }
}

fn port_match(rng: &mut Rng) -> PortMatch {
    let protocol = rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
    let end = |rng: &mut Rng| {
        if rng.chance(70) {
            rng.pick(&PORT_EDGES)
        } else {
            rng.next() as u16
        }
    };
    let (a, b) = (end(rng), end(rng));
    // A third are single ports (the kernel's exact port table); now and then an empty
    // (reversed) range.
    let ports = if rng.chance(35) {
        PortRange::single(a)
    } else if rng.chance(5) {
        PortRange {
            first: a.max(b),
            last: a.min(b),
        }
    } else {
        PortRange {
            first: a.min(b),
            last: a.max(b),
        }
    };
    PortMatch { protocol, ports }
}

/// The prefixes and port range ends a policy names, to aim probes at.
struct Edges {
    nets: Vec<IpNet>,
    ports: Vec<u16>,
}

impl Edges {
    fn of(policy: &EndpointPolicy) -> Self {
        let mut nets = Vec::new();
        let mut ports = PORT_EDGES.to_vec();
        for d in [Direction::Ingress, Direction::Egress] {
            let Isolation::Isolated(rules) = policy.direction(d) else {
                continue;
            };
            for rule in rules {
                if let Peers::Blocks(blocks) = &rule.peers {
                    for b in blocks {
                        nets.push(b.cidr);
                        nets.extend(&b.except);
                    }
                }
                if let Ports::Matches(matches) = &rule.ports {
                    for m in matches {
                        ports.extend([m.ports.first, m.ports.last]);
                    }
                }
            }
        }
        Self { nets, ports }
    }

    fn address(&self, rng: &mut Rng) -> IpAddr {
        let address = if self.nets.is_empty() || rng.chance(20) {
            let v4 = rng.chance(50);
            random_net(rng, v4).addr()
        } else {
            let net = rng.pick(&self.nets);
            match rng.below(5) {
                0 => net.network(),
                1 => net.broadcast(),
                2 => step(net.network(), -1),
                3 => step(net.broadcast(), 1),
                _ => sub_net(rng, net).addr(),
            }
        };
        match address {
            IpAddr::V4(a) if rng.chance(5) => IpAddr::V6(a.to_ipv6_mapped()),
            a => a,
        }
    }

    fn port(&self, rng: &mut Rng) -> u16 {
        let port = rng.pick(&self.ports);
        match rng.below(4) {
            0 => port.wrapping_sub(1),
            1 => port.wrapping_add(1),
            _ => port,
        }
    }

    fn l4(&self, rng: &mut Rng) -> L4 {
        let dst_port = self.port(rng);
        match rng.below(4) {
            0 => L4::Tcp { dst_port },
            1 => L4::Udp { dst_port },
            2 => L4::Sctp { dst_port },
            _ => L4::Portless,
        }
    }
}

/// `address` moved by `by` (wrapping at the ends of the family's space).
fn step(address: IpAddr, by: i8) -> IpAddr {
    match address {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
            u32::from(a).wrapping_add_signed(i32::from(by)),
        )),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
            u128::from(a).wrapping_add_signed(i128::from(by)),
        )),
    }
}

fn packet(rng: &mut Rng, edges: &Edges, addresses: &[IpAddr], src_port: u16) -> Packet {
    let direction = rng.direction();
    let peer = edges.address(rng);
    let mut local = match peer {
        IpAddr::V4(_) => addresses[0],
        IpAddr::V6(_) => addresses[1],
    };
    if direction == Direction::Egress && rng.chance(15) {
        local = match peer {
            IpAddr::V4(_) => rng
                .pick(&[Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(10, 9, 255, 255)])
                .into(),
            IpAddr::V6(_) => rng
                .pick(&[
                    Ipv6Addr::UNSPECIFIED,
                    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
                    Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 0xffff),
                ])
                .into(),
        };
    }
    let (src, dst) = match direction {
        Direction::Ingress => (peer, local),
        Direction::Egress => (local, peer),
    };
    let dst_port = edges.port(rng);
    let transport = match rng.below(7) {
        0 | 1 => Transport::Tcp { dst_port },
        2 => Transport::Udp { dst_port },
        3 => Transport::Sctp { dst_port },
        4 => Transport::IcmpEcho,
        5 => Transport::Icmpv6Type(rng.pick(&[128, 133, 134, 135, 136, 137, 138])),
        _ => Transport::Other(rng.pick(&[47, 1, 58])),
    };
    let shape = match rng.below(16) {
        0..=5 => Shape::Plain,
        6 => Shape::Padded,
        7 => Shape::Options,
        8 => Shape::ExtensionHeaders(1 + rng.below(9) as u8),
        9 => Shape::FirstFragment,
        10 => Shape::LaterFragment,
        11 => Shape::TruncatedTransport(rng.below(20) as u8),
        12 => Shape::TruncatedIp,
        13 => Shape::BadVersion,
        14 => Shape::Vlan,
        _ => Shape::Arp,
    };
    Packet {
        direction,
        src,
        dst,
        src_port,
        transport,
        shape,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::compile::compile;

    /// The kernel's four tables are all exercised, and together: host and prefix peers,
    /// single ports and ranges in the same policy.
    #[test]
    fn generated_policies_fill_all_four_tables_together() {
        let together = (0..40u64)
            .map(|i| compile(1, 0, &Scenario::generate(0x6e77_0000 + i).policy))
            .filter(|t| {
                !t.hosts.is_empty()
                    && !t.peers.is_empty()
                    && !t.exact_ports.is_empty()
                    && !t.ports.is_empty()
            })
            .count();
        assert!(
            together >= 10,
            "only {together} of 40 scenarios use all four tables"
        );
    }

    #[test]
    fn a_seed_always_gives_the_same_scenario() {
        let (a, b) = (Scenario::generate(42), Scenario::generate(42));
        assert_eq!(a.policy, b.policy);
        assert_eq!(a.probes, b.probes);
        assert_eq!(a.packets, b.packets);
        assert_ne!(a.packets, Scenario::generate(43).packets);
    }
}
