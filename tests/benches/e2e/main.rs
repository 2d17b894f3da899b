//! `cargo xtask bench e2e`: netwarden side by side with no enforcement and with the
//! multi-networkpolicy-iptables shape, on two pods on net1 across two lab nodes, at 10,
//! 1,000 and 10,000 allowed peer addresses, IPv4 and IPv6: TCP request/response rate,
//! new-connection rate, throughput, and the time from a policy change to the first
//! connection that sees the new verdict. Figures, not assertions: prints the table and
//! writes docs/benchmarks.md and docs/benchmarks.svg. Privileged (run as root).
//!
//! Run: `cargo build --release -p netwarden-agent -p netwarden-cni` then
//! `cargo bench -p netwarden-tests --bench e2e`. `NETWARDEN_BENCH_QUICK=1` measures 10
//! and 1,000 peers once, for one second each.
#[path = "../../../agent/benches/support/report.rs"]
mod report;

mod bed;
mod change;
mod chart;
mod document;
mod iptables;
mod peers;
mod policy;
mod traffic;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use bed::{Bed, Pair};
use peers::Family;

/// The three systems, in the order the tables show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum System {
    None,
    Netwarden,
    Iptables,
}

impl System {
    pub const ALL: [Self; 3] = [Self::None, Self::Netwarden, Self::Iptables];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "no enforcement",
            Self::Netwarden => "netwarden",
            Self::Iptables => "iptables shape",
        }
    }
}

/// How much to measure.
pub struct Plan {
    pub sizes: Vec<u32>,
    /// Rounds over the three systems per size; each figure is the median of its rounds.
    pub rounds: usize,
    /// Length of each request/response, new-connection and throughput run.
    pub length: Duration,
    /// Policy changes timed per system and size; the figure is the median.
    pub changes: usize,
}

impl Plan {
    fn from_env() -> Self {
        if std::env::var_os("NETWARDEN_BENCH_QUICK").is_some() {
            Self {
                sizes: vec![10, 1_000],
                rounds: 1,
                length: Duration::from_secs(1),
                changes: 1,
            }
        } else {
            Self {
                sizes: vec![10, 1_000, 10_000],
                rounds: 5,
                length: Duration::from_secs(1),
                changes: 5,
            }
        }
    }
}

/// One system's figures at one size and family (medians).
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Requests per second over one connection.
    pub requests: f64,
    /// New connections per second.
    pub connections: f64,
    /// Bits per second.
    pub throughput: f64,
    /// From the start of a change to the first connection it allowed (None without
    /// enforcement: nothing to change).
    pub change: Option<report::Percentiles>,
}

/// (family, peers, system) -> figures.
pub type Results = BTreeMap<(Family, u32, System), Figures>;

/// Traffic before each system's timed runs.
const WARM_UP: Duration = Duration::from_millis(200);
/// How long a policy may take to come into force before the bench gives up.
const IN_FORCE_WITHIN: Duration = Duration::from_secs(60);

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "the e2e benchmark creates network namespaces and loads eBPF programs: run it as root"
        );
        std::process::exit(1);
    }
    let plan = Plan::from_env();
    let machine = report::Machine::read();
    let load_before = load_average();
    let started = Instant::now();
    let bed = Bed::up();
    let mut results = Results::new();
    for family in [Family::V4, Family::V6] {
        let ipt = iptables::PodRules::install(&bed.iptables.server.netns, family);
        for &size in &plan.sizes {
            eprintln!("== {} with {size} allowed peers", family.name());
            measure_size(&bed, &ipt, &plan, family, size, &mut results);
        }
    }
    let elapsed = started.elapsed();
    let load_after = load_average();
    let doc = document::markdown(&document::Context {
        machine: &machine,
        plan: &plan,
        results: &results,
        elapsed,
        load: (load_before, load_after),
    });
    println!("{}", document::ratio_table(&results));
    for (file, contents) in [
        ("benchmarks.md", doc),
        ("benchmarks.svg", chart::svg(&results)),
    ] {
        match report::write_doc(file, &contents) {
            Ok(path) => eprintln!("written: {}", path.display()),
            Err(e) => eprintln!("docs/{file} not written: {e}"),
        }
    }
    drop(bed);
}

/// Every figure of every system at one size.
fn measure_size(
    bed: &Bed,
    ipt: &iptables::PodRules,
    plan: &Plan,
    family: Family,
    size: u32,
    results: &mut Results,
) {
    let ports = traffic::PORTS;
    let allow_netwarden = peers::allowing(bed.netwarden.client.address(family), size);
    let allow_iptables = peers::allowing(bed.iptables.client.address(family), size);
    policy::apply(bed, &allow_netwarden, &ports);
    ipt.sync(&allow_iptables, &ports);
    for (system, pair) in [
        (System::Netwarden, &bed.netwarden),
        (System::Iptables, &bed.iptables),
    ] {
        in_force(bed, system, pair, family);
    }
    eprintln!("   iptables: {} rules in the server pod", ipt.rule_count());
    let mut samples: BTreeMap<System, Vec<Figures>> = BTreeMap::new();
    for round in 0..plan.rounds {
        // Each round starts with another system, so drift favours none of them.
        let mut order = System::ALL;
        order.rotate_left(round % System::ALL.len());
        for system in order {
            let pair = pair_of(bed, system);
            let server = pair.server.address(family);
            let client = &pair.client.netns;
            // Untimed: fills the neighbour, route and connection caches on the path.
            traffic::request_rate(client, server, WARM_UP);
            traffic::connection_rate(client, server, WARM_UP);
            let figures = Figures {
                requests: traffic::request_rate(client, server, plan.length),
                connections: traffic::connection_rate(client, server, plan.length),
                throughput: traffic::throughput(client, server, plan.length),
                change: None,
            };
            eprintln!(
                "   {:<15} {:>9.0} req/s {:>8.0} conn/s {:>6.2} Gbit/s",
                system.name(),
                figures.requests,
                figures.connections,
                figures.throughput / 1e9
            );
            samples.entry(system).or_default().push(figures);
        }
    }
    let deny_netwarden = peers::denying(bed.netwarden.client.address(family), size);
    let deny_iptables = peers::denying(bed.iptables.client.address(family), size);
    let mut changes: BTreeMap<System, Vec<Duration>> = BTreeMap::new();
    for _ in 0..plan.changes {
        let pair = &bed.netwarden;
        policy::apply(bed, &deny_netwarden, &ports);
        denied(pair, family);
        let file = bed.file("policy.yaml");
        policy::write(&file, &allow_netwarden, &ports);
        let took = change::time_to_allow(&pair.client.netns, pair.server.address(family), || {
            bed.lab.apply(&file)
        });
        changes.entry(System::Netwarden).or_default().push(took);

        let pair = &bed.iptables;
        ipt.sync(&deny_iptables, &ports);
        denied(pair, family);
        let took = change::time_to_allow(&pair.client.netns, pair.server.address(family), || {
            ipt.sync(&allow_iptables, &ports)
        });
        changes.entry(System::Iptables).or_default().push(took);
    }
    for (system, runs) in samples {
        let median = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
        let change = changes
            .get(&system)
            .and_then(|times| report::Percentiles::of(times));
        let figures = Figures {
            requests: median(|f| f.requests),
            connections: median(|f| f.connections),
            throughput: median(|f| f.throughput),
            change,
        };
        if let Some(change) = change {
            eprintln!(
                "   {:<15} policy change in force after {} (p50)",
                system.name(),
                report::human(change.p50)
            );
        }
        results.insert((family, size, system), figures);
    }
}

fn pair_of(bed: &Bed, system: System) -> &Pair {
    match system {
        System::None => &bed.none,
        System::Netwarden => &bed.netwarden,
        System::Iptables => &bed.iptables,
    }
}

/// Waits until `system`'s policy lets the client in and keeps the outsider out.
fn in_force(bed: &Bed, system: System, pair: &Pair, family: Family) {
    let server = pair.server.address(family);
    let what = format!("{} policy", system.name());
    traffic::wait_until(&pair.client.netns, server, true, IN_FORCE_WITHIN, &what);
    traffic::wait_until(&bed.outsider.netns, server, false, IN_FORCE_WITHIN, &what);
}

/// Waits until the client is denied (the policy before a timed change).
fn denied(pair: &Pair, family: Family) {
    let server = pair.server.address(family);
    traffic::wait_until(
        &pair.client.netns,
        server,
        false,
        IN_FORCE_WITHIN,
        "denying policy",
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The 1-minute load average (other work on the machine shows up here).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
