//! The datapath benchmark (`cargo xtask bench datapath`): ns per packet measured by the
//! kernel with BPF_PROG_TEST_RUN, for the pass-through floor, an established flow, a new
//! allowed flow and a new denied flow, at growing rule counts, IPv4 and IPv6, set against
//! lower bounds measured in the same run (programs making only the map lookups those
//! packets cannot do without); and the time to attach and program one interface, loading
//! its classifiers then or taking them from the pool. Figures, not assertions: it prints
//! tables and writes them as Markdown.
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;

use super::{
    audit::TableSnapshot,
    pins::ScratchPinRoot,
    rules::{
        EndpointPolicy, Isolation, PeerBlock, Peers, PortMatch, PortRange, Ports, Protocol, Rule,
    },
    Datapath, DatapathError, DatapathOptions, EndpointKey, EndpointSettings, Hook, Reference,
    Verdict,
};
use crate::lab::topology::{PodPair, TopologyError};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("the benchmark's namespaces: {0}")]
    Topology(#[from] TopologyError),
}

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
    /// The pass-through program, the packet repeated by the kernel's own loop.
    pub floor: f64,
    /// The pass-through program, one run per call (how new flows must be measured).
    pub floor_one_run: f64,
    pub established: f64,
    pub new_allowed: f64,
    pub new_denied: f64,
    /// Lower bounds: the flow lookup alone, the three lookups of a new flow alone
    /// (repeated), and those lookups with the flow's insert (one run per call).
    pub flow_lookup: f64,
    pub new_flow_lookups: f64,
    pub new_flow_admission: f64,
    /// The reconcile's drift check of this endpoint: every table read back, then compared
    /// with what its policy compiles to.
    pub drift_check: Duration,
}

/// Measures every (rule count, family) on a datapath of its own (scratch pins).
pub fn run(rule_counts: &[u32]) -> Result<Vec<Row>, DatapathError> {
    let pins = ScratchPinRoot::create("bench");
    let mut datapath = Datapath::load_at(pins.root().clone())?;
    let mut row = |index: usize, rules: u32, family: Family| {
        let endpoint = EndpointKey {
            netns_cookie: 0xbe7c_0000 + index as u64 * 2 + (family == Family::V6) as u64,
            ifindex: 2,
            _pad: 0,
        };
        let row = measure(&mut datapath, &endpoint, rules, family)?;
        // Every row starts from an empty flow table.
        datapath.forget(&endpoint)?;
        datapath.clear_reference_flows()?;
        Ok::<_, DatapathError>(row)
    };
    // A round thrown away: the first inserts into a never-used flow table take a path of
    // their own (fresh LRU free lists), which would flatter whichever row came first.
    if let Some(&fewest) = rule_counts.first() {
        row(usize::MAX / 2, fewest, Family::V4)?;
    }
    let mut rows = Vec::new();
    for (index, &rules) in rule_counts.iter().enumerate() {
        for family in [Family::V4, Family::V6] {
            rows.push(row(index, rules, family)?);
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
    let policy = policy(rules, family);
    datapath.program(endpoint, &policy, &[pod(family)], settings)?;
    let started = Instant::now();
    let snapshot = TableSnapshot::read(datapath.pins())?;
    let drift = datapath.drift(&snapshot, endpoint, &policy, &[pod(family)], settings)?;
    let drift_check = started.elapsed();
    assert!(
        drift.is_empty(),
        "a freshly programmed endpoint drifted: {drift:?}"
    );
    let allowed_peer = peer(family, 0);
    // The peer is in the tables but the port is not: both lookups run, then the deny.
    let denied = frame(allowed_peer, pod(family), 40000, POD_PORT + 1);
    let tracked = frame(allowed_peer, pod(family), 40001, POD_PORT);
    let floor = reference_per_packet(datapath, Reference::Passthrough, &tracked, REPEAT)?;
    let flow_lookup = reference_per_packet(datapath, Reference::FlowLookup, &tracked, REPEAT)?;
    let new_flow_lookups =
        reference_per_packet(datapath, Reference::NewFlowLookups, &tracked, REPEAT)?;
    datapath.test_run(Hook::Ingress, endpoint, &tracked, 1)?;
    let established = per_packet(datapath, Hook::Ingress, endpoint, &tracked)?;
    let new_denied = per_packet(datapath, Hook::Ingress, endpoint, &denied)?;
    let mut total = 0.0;
    let mut floor_total = 0.0;
    let mut admission_total = 0.0;
    for source_port in 0..NEW_FLOWS {
        let new = frame(allowed_peer, pod(family), 10000 + source_port, POD_PORT);
        total += datapath
            .test_run(Hook::Ingress, endpoint, &new, 1)?
            .per_run
            .as_nanos() as f64;
        floor_total += reference_per_packet(datapath, Reference::Passthrough, &new, 1)?;
    }
    // Apart, so neither's inserts land between the other's.
    for source_port in 0..NEW_FLOWS {
        let new = frame(allowed_peer, pod(family), 10000 + source_port, POD_PORT);
        admission_total += reference_per_packet(datapath, Reference::NewFlowAdmission, &new, 1)?;
    }
    let mean = |total: f64| total / f64::from(NEW_FLOWS);
    Ok(Row {
        rules,
        family,
        floor,
        floor_one_run: mean(floor_total),
        established,
        new_allowed: mean(total),
        new_denied,
        flow_lookup,
        new_flow_lookups,
        new_flow_admission: mean(admission_total),
        drift_check,
    })
}

/// Median time to attach one interface and program it, cold (its classifiers loaded and
/// verified then, as every attach did before the pool) and from a full pool.
#[derive(Debug, Clone, Copy)]
pub struct AttachTimes {
    pub rounds: u32,
    pub cold: Duration,
    pub pooled: Duration,
}

/// Attaches, programs and detaches the server interface of a fresh pod pair `rounds`
/// times in each style (scratch pins, so nothing of the node's own is touched).
pub fn attach_latency(rounds: u32) -> Result<AttachTimes, BenchError> {
    let pods = PodPair::create("bench")?;
    let target = pods.server_interface();
    let policy = policy(10, Family::V4);
    let addresses = [IpAddr::from(PodPair::SERVER_ADDRESS)];
    let style = |pool_size: usize| -> Result<Duration, BenchError> {
        let pins = ScratchPinRoot::create("bench-attach");
        let mut datapath = Datapath::load_with(pins.root().clone(), DatapathOptions { pool_size })?;
        let mut times = Vec::new();
        for _ in 0..rounds {
            // Steady state: the refill of the previous round is done.
            datapath.fill_pool();
            let start = Instant::now();
            let endpoint = datapath.attach(&target)?;
            datapath.program(&endpoint, &policy, &addresses, EndpointSettings::default())?;
            times.push(start.elapsed());
            datapath.detach(&target)?;
        }
        times.sort_unstable();
        Ok(times[times.len() / 2])
    };
    Ok(AttachTimes {
        rounds,
        cold: style(0)?,
        pooled: style(DatapathOptions::default().pool_size)?,
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

/// A reference program's ns per packet. Their lookups all miss, so each passes the
/// packet; anything else means a bound measured something other than misses.
fn reference_per_packet(
    datapath: &mut Datapath,
    reference: Reference,
    frame: &[u8],
    repeat: u32,
) -> Result<f64, DatapathError> {
    let outcome = datapath.test_run_reference(reference, frame, repeat)?;
    assert_eq!(
        outcome.verdict(),
        Some(Verdict::Allow),
        "the reference program {reference:?} found an entry: its lookups must all miss"
    );
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

/// The rows as a Markdown table, ratios against the floor of the same row measured the
/// same way: repeated runs against the repeated floor, one-run new flows against the
/// one-run floor.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| rules | family | floor ns | established ns (x floor) | new denied ns (x floor) | floor ns, one run | new allowed ns, one run (x one-run floor) | drift check ms |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {:.0} | {} | {:.1} |",
            row.rules,
            family_name(row.family),
            row.floor,
            ratio(row.established, row.floor),
            ratio(row.new_denied, row.floor),
            row.floor_one_run,
            ratio(row.new_allowed, row.floor_one_run),
            row.drift_check.as_secs_f64() * 1e3,
        );
    }
    out
}

/// The lower bounds of the same run as a Markdown table, each against its floor, beside
/// what the classifier costs for the same kind of packet.
pub fn bounds_markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| rules | family | flow lookup alone ns (x floor) | established ns (x floor) | new-flow lookups alone ns (x floor) | new denied ns (x floor) | new-flow lookups and insert alone, one run ns (x one-run floor) | new allowed, one run ns (x one-run floor) |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.rules,
            family_name(row.family),
            ratio(row.flow_lookup, row.floor),
            ratio(row.established, row.floor),
            ratio(row.new_flow_lookups, row.floor),
            ratio(row.new_denied, row.floor),
            ratio(row.new_flow_admission, row.floor_one_run),
            ratio(row.new_allowed, row.floor_one_run),
        );
    }
    out
}

/// `ns` and its ratio to `floor`, as a table cell.
fn ratio(ns: f64, floor: f64) -> String {
    format!("{ns:.0} ({:.2}x)", ns / floor)
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// Issue 3's targets against the rows: the worst ratio of each kind, and the most the
/// largest rule count costs over the smallest (same family).
pub fn targets_markdown(rows: &[Row]) -> String {
    let worst = |ratio: &dyn Fn(&Row) -> f64| rows.iter().map(ratio).fold(0.0, f64::max);
    let lowest = |ratio: &dyn Fn(&Row) -> f64| rows.iter().map(ratio).fold(f64::MAX, f64::min);
    let growth = |ns: &dyn Fn(&Row) -> f64| {
        let (Some(fewest), Some(most)) = (
            rows.iter().map(|r| r.rules).min(),
            rows.iter().map(|r| r.rules).max(),
        ) else {
            return 0.0;
        };
        [Family::V4, Family::V6]
            .iter()
            .filter_map(|&family| {
                let at = |rules| rows.iter().find(|r| r.rules == rules && r.family == family);
                Some(ns(at(most)?) / ns(at(fewest)?))
            })
            .fold(0.0, f64::max)
    };
    format!(
        "Targets (worst row): established {:.2}x the floor (target 2x); new denied {:.2}x \
         the floor, new allowed {:.2}x the one-run floor (target 4x); the most rules cost at \
         most {:.2}x (established), {:.2}x (new denied), {:.2}x (new allowed) what the fewest \
         do (target 1.15x).\n",
        worst(&|r| r.established / r.floor),
        worst(&|r| r.new_denied / r.floor),
        worst(&|r| r.new_allowed / r.floor_one_run),
        growth(&|r| r.established),
        growth(&|r| r.new_denied),
        growth(&|r| r.new_allowed),
    ) + &format!(
        "Lower bounds (lowest row), each against the target for the whole path: the flow \
         lookup alone costs {:.2}x the floor (established target 2x); the new-flow lookups \
         alone {:.2}x the floor, and with the flow's insert {:.2}x the one-run floor \
         (new-flow target 4x).\n",
        lowest(&|r| r.flow_lookup / r.floor),
        lowest(&|r| r.new_flow_lookups / r.floor),
        lowest(&|r| r.new_flow_admission / r.floor_one_run),
    )
}

/// The attach figures as one Markdown line.
pub fn attach_markdown(times: &AttachTimes) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "attach one endpoint (attach both hooks + program a 10-rule policy, median of {}): \
         {:.1} ms before-style cold load vs {:.1} ms from the pool\n",
        times.rounds,
        ms(times.cold),
        ms(times.pooled)
    )
}
