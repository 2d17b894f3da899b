//! The datapath benchmark (`cargo xtask bench datapath`): ns per packet measured by the
//! kernel with BPF_PROG_TEST_RUN, for the pass-through floor, an established flow, a new
//! allowed flow and a new denied flow, at growing rule counts, IPv4 and IPv6. Figures,
//! not assertions: it prints a table and writes it as Markdown.
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use etherparse::PacketBuilder;

use super::{
    pins::ScratchPinRoot,
    rules::{
        EndpointPolicy, Isolation, PeerBlock, Peers, PortMatch, PortRange, Ports, Protocol, Rule,
    },
    Datapath, DatapathError, EndpointKey, EndpointSettings, Hook,
};

pub const RULE_COUNTS: [u32; 4] = [10, 1_000, 10_000, 100_000];
/// Runs per measurement where the packet can repeat (the kernel's own loop).
const REPEAT: u32 = 200_000;
/// New allowed flows measured one run each (a repeated packet would be established).
const NEW_FLOWS: u16 = 5_000;
const POD_PORT: u16 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// One row of the result: ns per packet.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub rules: u32,
    pub family: Family,
    pub floor: f64,
    pub established: f64,
    pub new_allowed: f64,
    pub new_denied: f64,
}

/// Measures every (rule count, family) on a datapath of its own (scratch pins).
pub fn run(rule_counts: &[u32]) -> Result<Vec<Row>, DatapathError> {
    let pins = ScratchPinRoot::create("bench");
    let mut datapath = Datapath::load_at(pins.root().clone())?;
    let mut rows = Vec::new();
    for (index, &rules) in rule_counts.iter().enumerate() {
        for family in [Family::V4, Family::V6] {
            let endpoint = EndpointKey {
                netns_cookie: 0xbe7c_0000 + index as u64 * 2 + (family == Family::V6) as u64,
                ifindex: 2,
                _pad: 0,
            };
            rows.push(measure(&mut datapath, &endpoint, rules, family)?);
            datapath.forget(&endpoint)?;
        }
    }
    Ok(rows)
}

fn measure(
    datapath: &mut Datapath,
    endpoint: &EndpointKey,
    rules: u32,
    family: Family,
) -> Result<Row, DatapathError> {
    let settings = EndpointSettings::default();
    datapath.program(endpoint, &policy(rules, family), &[pod(family)], settings)?;
    let allowed_peer = peer(family, 0);
    // The peer is in the tables but the port is not: both lookups run, then the deny.
    let denied = frame(allowed_peer, pod(family), 40000, POD_PORT + 1);
    let tracked = frame(allowed_peer, pod(family), 40001, POD_PORT);
    let floor = per_packet(datapath, Hook::Passthrough, endpoint, &tracked)?;
    datapath.test_run(Hook::Ingress, endpoint, &tracked, 1)?;
    let established = per_packet(datapath, Hook::Ingress, endpoint, &tracked)?;
    let new_denied = per_packet(datapath, Hook::Ingress, endpoint, &denied)?;
    let mut total = Duration::ZERO;
    for source_port in 0..NEW_FLOWS {
        let new = frame(allowed_peer, pod(family), 10000 + source_port, POD_PORT);
        total += datapath.test_run(Hook::Ingress, endpoint, &new, 1)?.per_run;
    }
    Ok(Row {
        rules,
        family,
        floor,
        established,
        new_allowed: total.as_nanos() as f64 / f64::from(NEW_FLOWS),
        new_denied,
    })
}

fn per_packet(
    datapath: &mut Datapath,
    hook: Hook,
    endpoint: &EndpointKey,
    frame: &[u8],
) -> Result<f64, DatapathError> {
    let outcome = datapath.test_run(hook, endpoint, frame, REPEAT)?;
    Ok(outcome.per_run.as_nanos() as f64)
}

/// `rules` ingress rules, each one peer host on its own TCP port: as many peer classes
/// and port entries as rules, the worst case for the tables' size.
fn policy(rules: u32, family: Family) -> EndpointPolicy {
    let rules = (0..rules)
        .map(|i| Rule {
            peers: Peers::Blocks(vec![PeerBlock::host(peer(family, i))]),
            ports: Ports::Matches(vec![PortMatch {
                protocol: Protocol::Tcp,
                ports: PortRange::single(POD_PORT + (i % 2) as u16 * 2),
            }]),
        })
        .collect();
    EndpointPolicy {
        ingress: Isolation::Isolated(rules),
        egress: Isolation::Open,
    }
}

fn peer(family: Family, i: u32) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::from(0x0a80_0000 + i).into(),
        Family::V6 => Ipv6Addr::from(0xfd00_0001_u128 << 96 | u128::from(i)).into(),
    }
}

fn pod(family: Family) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::new(10, 1, 0, 2).into(),
        Family::V6 => "fd00:2::2".parse().expect("valid address"),
    }
}

fn frame(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    let ethernet = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let mut frame = Vec::new();
    let written = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ethernet
            .ipv4(s.octets(), d.octets(), 64)
            .tcp(sport, dport, 1, 1024)
            .write(&mut frame, &[0; 64]),
        (s, d) => ethernet
            .ipv6(v6(s).octets(), v6(d).octets(), 64)
            .tcp(sport, dport, 1, 1024)
            .write(&mut frame, &[0; 64]),
    };
    written.expect("a frame built from valid parts");
    frame
}

fn v6(address: IpAddr) -> Ipv6Addr {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The rows as a Markdown table, ratios against the floor of the same row.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| rules | family | floor ns | established ns (x floor) | new allowed ns (x floor) | new denied ns (x floor) |\n\
         | ---: | --- | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows {
        let ratio = |ns: f64| format!("{ns:.0} ({:.2}x)", ns / row.floor);
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} |",
            row.rules,
            match row.family {
                Family::V4 => "IPv4",
                Family::V6 => "IPv6",
            },
            row.floor,
            ratio(row.established),
            ratio(row.new_allowed),
            ratio(row.new_denied),
        );
    }
    out
}
