//! Parsing a frame into what the verdict needs: family, addresses, protocol, ports.
//!
//! Two paths give the same [`Packet`]. The usual packet (IPv4 without options or IPv6
//! without extension headers, carrying TCP or UDP, its headers in the skb's linear data)
//! is read straight from that data ([`parse_linear`]): a few loads with constant offsets
//! behind one bounds check per header. Everything else goes through the general parser,
//! where every read goes through `bpf_skb_load_bytes` (bounds-checked by the helper, and
//! able to reach paged data), so a truncated packet is an error value, never a verifier
//! problem. (Direct reads everywhere, each with the helper as a fallback, verify four
//! times slower: the pool's refills and a restart's adoption pay that.)
//!
//! Lengths are checked against the IP header's own length fields, not only the frame, so
//! trailing padding is never parsed as a header.
use core::mem::MaybeUninit;

use aya_ebpf::programs::TcContext;
use netwarden_common::Addr;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// IPv6 extension headers walked before the upper-layer header; a longer chain is treated
/// as malformed (RFC 8200 allows any length; real traffic has one or two).
const MAX_EXTENSION_HEADERS: usize = 8;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// What the frame turned out to be.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A parsed IPv4/IPv6 packet.
    Ip,
    /// ARP or an NDP message: addressing must always work.
    Addressing,
    /// Neither IPv4, IPv6 nor ARP (VLAN-tagged frames included).
    NotIp,
    /// The IP header itself is broken or truncated.
    BadNetwork,
    /// The extension headers or the transport header are broken or truncated.
    BadTransport,
}

/// A parsed packet. Ports are host order; for ICMP they carry type and code.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Packet {
    pub kind: Kind,
    /// 4 or 6; 0 when not IP.
    pub family: u8,
    pub protocol: u8,
    /// 16-byte form: IPv4 as `::ffff:a.b.c.d`.
    pub src: Addr,
    pub dst: Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// No ports apply (ICMP, other protocols, non-first fragments): only a rule allowing
    /// everything admits it.
    pub portless: bool,
    /// ICMP/ICMPv6 echo request or reply: `echo_id` identifies the flow.
    pub echo: bool,
    pub echo_id: u16,
    /// TCP flags, or the first SCTP chunk type.
    pub control: u8,
}

impl Packet {
    pub const fn empty(kind: Kind) -> Self {
        Self {
            kind,
            family: 0,
            protocol: 0,
            src: [0; 16],
            dst: [0; 16],
            src_port: 0,
            dst_port: 0,
            portless: true,
            echo: false,
            echo_id: 0,
            control: 0,
        }
    }
}

/// The parsed frame. A function of its own (a BPF-to-BPF call): its reads and the
/// packet it builds take stack the classifier's frame could not also hold.
#[inline(never)]
pub fn parse(ctx: &TcContext, packet: &mut MaybeUninit<Packet>) {
    if !parse_linear(ctx, packet) {
        parse_general(ctx, packet.write(Packet::empty(Kind::NotIp)));
    }
}

/// The usual packet straight from the linear data, written whole into `out`; `false`
/// (nothing written) for anything else, which [`parse_general`] judges with the same
/// checks on the same bytes: IPv4 with a 20-byte header and not a later fragment, or IPv6
/// whose next header is the transport, carrying TCP or UDP whose header fits the IP
/// packet. Offsets are constants (per family), so each bounds check covers the reads after
/// it for the verifier. Nothing here is zero-filled: LLVM's BPF backend makes a zeroed
/// array a call to a byte-at-a-time `memset`, which cost more than the rest of the parse.
#[inline(always)]
fn parse_linear(ctx: &TcContext, out: &mut MaybeUninit<Packet>) -> bool {
    let start = ctx.data();
    // The largest network header this path reads: IPv6's fixed 40 bytes.
    if start + ETH_HLEN + 40 > ctx.data_end() {
        return false;
    }
    // SAFETY: inside the linear data, checked just above (offsets below ETH_HLEN + 40).
    let byte = |offset: usize| unsafe { *((start + offset) as *const u8) };
    let be16 = |offset: usize| u16::from_be_bytes([byte(offset), byte(offset + 1)]);
    let (family, protocol, src, dst, transport) = match be16(12) {
        ETH_P_IP => {
            let total = be16(ETH_HLEN + 2) as usize;
            let fragment_offset = be16(ETH_HLEN + 6) & 0x1fff;
            if byte(ETH_HLEN) != 0x45
                || total < 20
                || ETH_HLEN + total > ctx.len() as usize
                || fragment_offset != 0
            {
                return false;
            }
            let v4 = |offset: usize| v4_mapped_at(byte, offset);
            let protocol = byte(ETH_HLEN + 9);
            (
                4,
                protocol,
                v4(ETH_HLEN + 12),
                v4(ETH_HLEN + 16),
                transport_linear::<{ ETH_HLEN + 20 }>(ctx, protocol, ETH_HLEN + total),
            )
        }
        ETH_P_IPV6 => {
            let ip_end = ETH_HLEN + 40 + be16(ETH_HLEN + 4) as usize;
            if byte(ETH_HLEN) >> 4 != 6 || ip_end > ctx.len() as usize {
                return false;
            }
            let protocol = byte(ETH_HLEN + 6);
            (
                6,
                protocol,
                core::array::from_fn(|i| byte(ETH_HLEN + 8 + i)),
                core::array::from_fn(|i| byte(ETH_HLEN + 24 + i)),
                transport_linear::<{ ETH_HLEN + 40 }>(ctx, protocol, ip_end),
            )
        }
        _ => return false,
    };
    let Some((src_port, dst_port, control)) = transport else {
        return false;
    };
    out.write(Packet {
        kind: Kind::Ip,
        family,
        protocol,
        src,
        dst,
        src_port,
        dst_port,
        portless: false,
        echo: false,
        echo_id: 0,
        control,
    });
    true
}

/// TCP or UDP at `OFFSET` for [`parse_linear`], the IP packet ending at `ip_end`: source
/// port, destination port, TCP flags.
#[inline(always)]
fn transport_linear<const OFFSET: usize>(
    ctx: &TcContext,
    protocol: u8,
    ip_end: usize,
) -> Option<(u16, u16, u8)> {
    // Bytes the general parser requires of the header (the ports and TCP's flags, at
    // offset 13, are within them).
    let needed = match protocol {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return None,
    };
    if OFFSET + needed > ip_end {
        return None;
    }
    let start = ctx.data();
    // 14 bytes for both, so the check is one constant: a UDP header closer than that to
    // the end of the linear data takes the general path.
    if start + OFFSET + 14 > ctx.data_end() {
        return None;
    }
    // SAFETY: inside the linear data, checked just above.
    let at = |i: usize| unsafe { *((start + OFFSET + i) as *const u8) };
    let control = if protocol == IPPROTO_TCP { at(13) } else { 0 };
    Some((
        u16::from_be_bytes([at(0), at(1)]),
        u16::from_be_bytes([at(2), at(3)]),
        control,
    ))
}

#[inline(always)]
fn parse_general(ctx: &TcContext, packet: &mut Packet) {
    let Ok(ether_type) = ctx.load::<[u8; 2]>(12) else {
        return;
    };
    match u16::from_be_bytes(ether_type) {
        ETH_P_IP => parse_ipv4(ctx, packet),
        ETH_P_IPV6 => parse_ipv6(ctx, packet),
        ETH_P_ARP => packet.kind = Kind::Addressing,
        _ => {}
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, packet: &mut Packet) {
    packet.kind = Kind::BadNetwork;
    // version/IHL, TOS, total length, id, flags/fragment offset, TTL, protocol, checksum,
    // source, destination: the fixed 20 bytes.
    let Ok(header) = ctx.load::<[u8; 20]>(ETH_HLEN) else {
        return;
    };
    let ihl = (header[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([header[2], header[3]]) as usize;
    if header[0] >> 4 != 4 || ihl < 20 || total < ihl || ETH_HLEN + total > ctx.len() as usize {
        return;
    }
    packet.family = 4;
    packet.protocol = header[9];
    packet.src = v4_mapped([header[12], header[13], header[14], header[15]]);
    packet.dst = v4_mapped([header[16], header[17], header[18], header[19]]);
    let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
    if fragment_offset != 0 {
        // A later fragment: its bytes are the middle of a transport payload.
        packet.kind = Kind::Ip;
        return;
    }
    parse_transport(ctx, packet, ETH_HLEN + ihl, ETH_HLEN + total)
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext, packet: &mut Packet) {
    packet.kind = Kind::BadNetwork;
    let Ok(header) = ctx.load::<[u8; 40]>(ETH_HLEN) else {
        return;
    };
    let payload = u16::from_be_bytes([header[4], header[5]]) as usize;
    let end = ETH_HLEN + 40 + payload;
    if header[0] >> 4 != 6 || end > ctx.len() as usize {
        return;
    }
    packet.family = 6;
    let mut i = 0;
    while i < 16 {
        packet.src[i] = header[8 + i];
        packet.dst[i] = header[24 + i];
        i += 1;
    }
    let mut next = header[6];
    let mut offset = ETH_HLEN + 40;
    let mut walked = 0;
    while walked < MAX_EXTENSION_HEADERS {
        if !is_extension_header(next) {
            break;
        }
        let Ok(ext) = ctx.load::<[u8; 4]>(offset) else {
            packet.kind = Kind::BadTransport;
            return;
        };
        let length = match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units, minus one.
            0 | 43 | 60 => (ext[1] as usize + 1) * 8,
            // Authentication header: length in 4-byte units, minus two; 0 is invalid
            // (RFC 4302: at least the 12-byte fixed part).
            51 if ext[1] == 0 => {
                packet.kind = Kind::BadTransport;
                return;
            }
            51 => (ext[1] as usize + 2) * 4,
            44 => {
                let fragment_offset = u16::from_be_bytes([ext[2], ext[3]]) >> 3;
                if fragment_offset != 0 {
                    if offset + 8 > end {
                        packet.kind = Kind::BadTransport;
                        return;
                    }
                    packet.protocol = ext[0];
                    packet.kind = Kind::Ip;
                    return;
                }
                8
            }
            _ => 8,
        };
        if offset + length > end {
            packet.kind = Kind::BadTransport;
            return;
        }
        next = ext[0];
        offset += length;
        walked += 1;
    }
    if is_extension_header(next) {
        // Still an extension header after the walk: too long a chain to judge.
        packet.kind = Kind::BadTransport;
        return;
    }
    packet.protocol = next;
    parse_transport(ctx, packet, offset, end)
}

#[inline(always)]
fn is_extension_header(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 51 | 60)
}

/// Reads the transport header at `offset`; it must end by `end` (the IP packet's end).
#[inline(always)]
fn parse_transport(ctx: &TcContext, packet: &mut Packet, offset: usize, end: usize) {
    packet.kind = Kind::BadTransport;
    match packet.protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            let needed = match packet.protocol {
                IPPROTO_TCP => 20,
                IPPROTO_UDP => 8,
                _ => 12,
            };
            if offset + needed > end {
                return;
            }
            let Ok(ports) = ctx.load::<[u8; 4]>(offset) else {
                return;
            };
            packet.src_port = u16::from_be_bytes([ports[0], ports[1]]);
            packet.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
            packet.portless = false;
            if packet.protocol == IPPROTO_TCP {
                packet.control = ctx.load::<u8>(offset + 13).unwrap_or(0);
            } else if packet.protocol == IPPROTO_SCTP && offset + 13 <= end {
                packet.control = ctx.load::<u8>(offset + 12).unwrap_or(0);
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let v6 = packet.protocol == IPPROTO_ICMPV6;
            if v6 != (packet.family == 6) {
                // ICMP in IPv6 or ICMPv6 in IPv4: just another protocol number.
                packet.kind = Kind::Ip;
                return;
            }
            if offset + 8 > end {
                return;
            }
            let Ok(icmp) = ctx.load::<[u8; 8]>(offset) else {
                return;
            };
            packet.src_port = icmp[0] as u16;
            packet.dst_port = icmp[1] as u16;
            packet.echo = if v6 {
                icmp[0] == 128 || icmp[0] == 129
            } else {
                icmp[0] == 8 || icmp[0] == 0
            };
            packet.echo_id = u16::from_be_bytes([icmp[4], icmp[5]]);
            if v6 && (133..=137).contains(&icmp[0]) {
                // Router/neighbour solicitation and advertisement, redirect.
                packet.kind = Kind::Addressing;
                return;
            }
        }
        _ => {}
    }
    packet.kind = Kind::Ip;
}

/// The IPv4 address at `offset`, v4-mapped, read byte by byte through `byte`.
#[inline(always)]
pub fn v4_mapped_at(byte: impl Fn(usize) -> u8, offset: usize) -> Addr {
    v4_mapped([
        byte(offset),
        byte(offset + 1),
        byte(offset + 2),
        byte(offset + 3),
    ])
}

/// `::ffff:a.b.c.d`, built from two words: as sixteen bytes, LLVM would zero the first
/// ten with a call to `memset` (see [`parse_linear`]).
#[inline(always)]
fn v4_mapped(v4: [u8; 4]) -> Addr {
    let low = u64::from_be_bytes([0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]);
    // SAFETY: two u64s are sixteen bytes, any bit pattern is a valid [u8; 16].
    unsafe { core::mem::transmute::<[u64; 2], Addr>([0, low.to_be()]) }
}

/// IPv6 sources anti-spoofing exempts: `::` (DAD) and link-local `fe80::/10`, which
/// every interface has and which never leaves the link. IPv4 has none.
#[inline(always)]
pub fn exempt_source(packet: &Packet) -> bool {
    if packet.family != 6 {
        return false;
    }
    let link_local = packet.src[0] == 0xfe && packet.src[1] & 0xc0 == 0x80;
    let mut unspecified = true;
    let mut i = 0;
    while i < 16 {
        unspecified &= packet.src[i] == 0;
        i += 1;
    }
    link_local || unspecified
}
