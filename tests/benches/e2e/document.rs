//! docs/benchmarks.md: how the figures were made, the table as ratios against no
//! enforcement, and the raw figures.
use std::{fmt::Write as _, time::Duration};

use crate::{
    peers::Family,
    report::{human, table, Machine, Percentiles},
    traffic, Plan, Results, System,
};

pub struct Context<'a> {
    pub machine: &'a Machine,
    pub plan: &'a Plan,
    pub results: &'a Results,
    pub elapsed: Duration,
    /// 1-minute load average before and after.
    pub load: (String, String),
}

/// netwarden's and the iptables shape's figures as a share of no enforcement's, and their
/// policy change times.
pub fn ratio_table(results: &Results) -> String {
    let header = [
        "family",
        "allowed peers",
        "requests/s netwarden",
        "requests/s iptables",
        "connections/s netwarden",
        "connections/s iptables",
        "throughput netwarden",
        "throughput iptables",
        "policy change netwarden",
        "policy change iptables",
    ];
    let mut rows = Vec::new();
    for ((family, size), base) in baselines(results) {
        let of = |system| &results[&(family, size, system)];
        let (nw, ipt) = (of(System::Netwarden), of(System::Iptables));
        let ratio = |value: f64, base: f64| format!("{:.3}", value / base);
        let change = |c: Option<Percentiles>| c.map_or_else(|| "-".into(), |p| human(p.p50));
        rows.push(vec![
            family.name().into(),
            size.to_string(),
            ratio(nw.requests, base.requests),
            ratio(ipt.requests, base.requests),
            ratio(nw.connections, base.connections),
            ratio(ipt.connections, base.connections),
            ratio(nw.throughput, base.throughput),
            ratio(ipt.throughput, base.throughput),
            change(nw.change),
            change(ipt.change),
        ]);
    }
    table(&header, &rows)
}

fn raw_table(results: &Results) -> String {
    let header = [
        "family",
        "allowed peers",
        "system",
        "requests/s",
        "connections/s",
        "throughput (Gbit/s)",
        "policy change p50 / p99 (runs)",
    ];
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|((family, size, system), f)| {
            vec![
                family.name().into(),
                size.to_string(),
                system.name().into(),
                format!("{:.0}", f.requests),
                format!("{:.0}", f.connections),
                format!("{:.2}", f.throughput / 1e9),
                f.change.map_or_else(
                    || "-".into(),
                    |p| format!("{} / {} ({})", human(p.p50), human(p.p99), p.samples),
                ),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// (family, size) -> no enforcement's figures there.
fn baselines(results: &Results) -> Vec<((Family, u32), &crate::Figures)> {
    results
        .iter()
        .filter(|((_, _, system), _)| *system == System::None)
        .map(|((family, size, _), figures)| ((*family, *size), figures))
        .collect()
}

pub fn markdown(context: &Context<'_>) -> String {
    let Context {
        machine,
        plan,
        results,
        elapsed,
        load,
    } = context;
    let mut out = String::from("# netwarden side by side\n\n");
    let _ = write!(
        out,
        "Produced by `sudo -E cargo xtask bench e2e` (it builds the release binaries, then runs \
         `cargo bench -p netwarden-tests --bench e2e`, source in `tests/benches/e2e/`). \
         Figures, not assertions.\n\n\
         {machine}- Load average (1 min) before / after: {} / {}\n- Run took {:.0?}\n\n",
        load.0,
        load.1,
        elapsed,
        machine = machine.markdown(),
    );
    out.push_str(
        "## What is compared\n\n\
         Two pods on net1 (macvlan over each node's `eth0`, one L2 segment) on two lab nodes \
         (network namespaces), a client on node-2 and a server on node-1:\n\n\
         - **no enforcement**: pods attached by the reference macvlan plugin directly, no \
         policy, no classifier, no rules;\n\
         - **netwarden**: lab pods attached through netwarden, and a MultiNetworkPolicy on \
         net1 selecting the server that allows N peer addresses (`ipBlock` /32 or /128) on the \
         bench's TCP ports;\n\
         - **iptables shape**: pods attached as for no enforcement, with the same policy \
         written into the server pod's namespace the way multi-networkpolicy-iptables writes \
         it: INPUT `-i net1` -> MULTI-INGRESS -> MULTI-INGRESS-COMMON (established accepted) \
         -> MULTI-0-INGRESS (mark cleared, then MULTI-0-INGRESS-0-PORTS with one rule per \
         port and MULTI-0-INGRESS-0-FROM with one rule per peer address, RETURN when both \
         marks are set, DROP otherwise); every change is `iptables-save`, a full render of \
         the pod's rules and one `iptables-restore --noflush --counters` \
         (`tests/benches/e2e/iptables.rs`). For IPv6 the project's `--accept-icmpv6` is on \
         (neighbour discovery). The iptables here is Debian's (nf_tables backend).\n\n\
         The client's address is the last of the N peers, so a linear scan pays for all of \
         them.\n\n\
         Measured for each size and family, in rounds that rotate which system goes first \
         (figures are the medians of the rounds):\n\n",
    );
    let _ = write!(
        out,
        "- **requests/s**: one TCP connection, {message}-byte requests echoed back, one at a \
         time, for {length:?} (`traffic::request_rate`);\n\
         - **connections/s**: connect, one byte each way, close (reset), one at a time, for \
         {length:?} (`traffic::connection_rate`);\n\
         - **throughput**: `iperf3 --client <server> --port {iperf} --time {secs} --json` \
         (bits/s received);\n\
         - **policy change**: the policy first denies the client (N peers, none of them the \
         client), then changes to allow it; the client starts a connection every \
         millisecond; the figure is from the start of the change (`netwarden lab apply -f` \
         of the new MultiNetworkPolicy; for the iptables shape save + render + restore) to \
         the start of the first connection attempt that got through (median of {changes}).\n\n\
         Rounds: {rounds}. Allowed peer counts: {sizes:?}.\n\n",
        message = 64,
        length = plan.length,
        iperf = traffic::IPERF_PORT,
        secs = plan.length.as_secs(),
        changes = plan.changes,
        rounds = plan.rounds,
        sizes = plan.sizes,
    );
    out.push_str(
        "## Against no enforcement\n\n\
         Ratios to no enforcement at the same size (1.000 = as fast; higher is better), and \
         the policy change times.\n\n",
    );
    out.push_str(&ratio_table(results));
    out.push_str(
        "\n![requests per second against allowed peers](benchmarks.svg)\n\n## Raw figures\n\n",
    );
    out.push_str(&raw_table(results));
    out
}
