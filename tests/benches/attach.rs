//! ADD and DEL latency through netwarden (`netwarden-cni` -> `netwarden agent` ->
//! the cluster network, then the seed macvlan + host-local NAD) against the same delegates
//! executed directly with the same configs, one pod at a time. Figures, not assertions:
//! prints a table and writes `docs/bench/attach.md`. Privileged (run as root).
//!
//! Run: `cargo build --release -p netwarden-agent -p netwarden-cni` then
//! `cargo bench -p netwarden-tests --bench attach`. `NETWARDEN_BENCH_QUICK=1` times 20
//! pods instead of 200.
#[path = "../../agent/benches/support/report.rs"]
mod report;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use netwarden_agent::{attach::guard::InboundGuard, datapath::bench, lab::topology::NetNamespace};
use netwarden_tests::node::{Lab, Pod, PLUGINS};
use report::{human, table, Machine, Percentiles};
use serde_json::Value;

const PODS: usize = 200;
const QUICK_PODS: usize = 20;
/// Untimed pods first, so both paths start with warm caches.
const WARM_UP: usize = 3;
const TARGET_OVERHEAD: Duration = Duration::from_millis(5);
/// Rounds of each fail-closed step timed alone.
const ALONE_ROUNDS: u32 = 30;

/// One CNI command (`ADD`, `DEL`) on one path, timed.
type Op<'a> = &'a dyn Fn(&str) -> Duration;

/// Latency samples of one path.
#[derive(Default)]
struct Samples {
    add: Vec<Duration>,
    del: Vec<Duration>,
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the attach benchmark creates network namespaces and links: run it as root");
        std::process::exit(1);
    }
    let pods = if std::env::var_os("NETWARDEN_BENCH_QUICK").is_some() {
        QUICK_PODS
    } else {
        PODS
    };
    let machine = Machine::read();
    let mut lab = Lab::new("bench-att");
    let direct = Direct::new(&lab);
    // Every sandbox up front, so creating them does not overlap the timings.
    let mut pairs: Vec<(Pod, Pod)> = (0..WARM_UP + pods)
        .map(|i| {
            let through = lab.pod("default", "macvlan-conf");
            (through, lab.sandbox("default", format!("direct{i}")))
        })
        .collect();
    // Let the agent take in the new manifests before the clock runs.
    std::thread::sleep(Duration::from_secs(1));
    let mut netwarden = Samples::default();
    let mut reference = Samples::default();
    let mut before = AgentTimes::default();
    for (i, (through, beside)) in pairs.drain(..).enumerate() {
        if i == WARM_UP {
            before = AgentTimes::read(&lab);
        }
        let mut runs: [(&mut Samples, Op); 2] = [
            (&mut netwarden, &|command| {
                netwarden_op(&lab, command, &through)
            }),
            (&mut reference, &|command| direct.op(&lab, command, &beside)),
        ];
        // Alternate which path goes first, so drift favours neither.
        if i % 2 == 1 {
            runs.reverse();
        }
        let timed = i >= WARM_UP;
        for (samples, op) in &mut runs {
            let took = op("ADD");
            if timed {
                samples.add.push(took);
            }
        }
        for (samples, op) in &mut runs {
            let took = op("DEL");
            if timed {
                samples.del.push(took);
            }
        }
    }
    assert!(
        lab.allocations().is_empty(),
        "addresses left allocated: {:?}",
        lab.allocations()
    );
    let agent = AgentTimes::read(&lab).since(&before);
    let alone = FailClosed::measure();
    let doc = document(&machine, pods, &netwarden, &reference, &agent, &alone);
    println!("{doc}");
    match report::write_doc("bench/attach.md", &doc) {
        Ok(path) => eprintln!("written: {}", path.display()),
        Err(e) => eprintln!("docs/bench/attach.md not written: {e}"),
    }
}

/// The two steps fail-closed adds to every ADD, each timed alone (median of
/// [`ALONE_ROUNDS`]): what they cost before any delegate runs.
struct FailClosed {
    /// The guard: closing one interface name in a fresh namespace, then opening it (two
    /// nf_tables transactions, as an ADD makes).
    guard: Duration,
    /// Attaching both classifiers to a fresh interface with TCX and programming its tables
    /// (instances from the pool, as in the agent).
    attach: Duration,
}

impl FailClosed {
    fn measure() -> Self {
        let netns = NetNamespace::create("bench-guard").expect("a namespace");
        let names = ["net1".parse().expect("an interface name")];
        let mut guard: Vec<Duration> = (0..ALONE_ROUNDS)
            .map(|_| {
                let started = Instant::now();
                InboundGuard::close(&netns.path(), &names)
                    .expect("guard closed")
                    .expect("a guard")
                    .open()
                    .expect("guard opened");
                started.elapsed()
            })
            .collect();
        guard.sort_unstable();
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let _inside = runtime.enter();
        let attach = bench::attach_latency(ALONE_ROUNDS)
            .expect("attach timed")
            .pooled;
        Self {
            guard: guard[guard.len() / 2],
            attach,
        }
    }

    fn markdown(&self) -> String {
        let together = self.guard + self.attach;
        format!(
            "## The fail-closed steps alone\n\n\
             Measured in the same run, each on its own, median of {ALONE_ROUNDS}: the \
             guard's two nf_tables transactions (close, then open) in a fresh namespace, \
             {}; attaching both classifiers to a fresh interface with TCX and programming \
             its tables, {}. Together {}, {:.1} times the {} target, before any delegate \
             runs. Both wait in the kernel: every TCX attach (`BPF_LINK_CREATE`, one per \
             hook) and every nf_tables transaction that deletes something wait for an RCU \
             grace period (under strace on this machine one `BPF_LINK_CREATE` took 7 to 23 \
             ms). They are what makes an ADD fail closed (nothing arrives on a new \
             interface before its classifiers judge it), so with enforcement on, this \
             kernel puts the overhead above the target whatever the rest costs.\n",
            human(self.guard),
            human(self.attach),
            human(together),
            together.as_secs_f64() / TARGET_OVERHEAD.as_secs_f64(),
            human(TARGET_OVERHEAD),
        )
    }
}

/// One CNI command through `netwarden-cni`; panics on failure (a failed ADD is not a
/// latency).
fn netwarden_op(lab: &Lab, command: &str, pod: &Pod) -> Duration {
    let started = Instant::now();
    let (code, out) = lab.cni(command, pod);
    let took = started.elapsed();
    assert_eq!(code, 0, "netwarden {command} of {}: {out}", pod.name);
    took
}

/// The delegates netwarden runs for a pod asking for `macvlan-conf`, executed directly:
/// the cluster network's plugin (eth0), then the seed NAD (net1); DEL in reverse.
struct Direct {
    /// (plugin config as libcni hands it to the plugin, interface).
    delegates: Vec<(Value, &'static str)>,
}

impl Direct {
    fn new(lab: &Lab) -> Self {
        let cluster = lab.cluster_network();
        let mut ptp = cluster["plugins"][0].clone();
        ptp["cniVersion"] = cluster["cniVersion"].clone();
        ptp["name"] = cluster["name"].clone();
        // netwarden injects the NAD's name into a config that has none.
        let mut seed = lab.seed_network();
        seed["name"] = "macvlan-conf".into();
        Self {
            delegates: vec![(ptp, "eth0"), (seed, "net1")],
        }
    }

    fn op(&self, lab: &Lab, command: &str, pod: &Pod) -> Duration {
        let ordered: Vec<&(Value, &str)> = match command {
            "DEL" => self.delegates.iter().rev().collect(),
            _ => self.delegates.iter().collect(),
        };
        let started = Instant::now();
        for (config, ifname) in ordered {
            let plugin = format!("{PLUGINS}/{}", config["type"].as_str().expect("type"));
            let (code, out) = lab.exec_plugin(plugin.as_ref(), command, pod, ifname, config);
            assert_eq!(code, 0, "{plugin} {command} of {}: {out}", pod.name);
        }
        started.elapsed()
    }
}

/// The agent's own timings, from its `/metrics`: the sum and count of each
/// `netwarden_attach_stage_seconds` series, by (command, stage).
#[derive(Default)]
struct AgentTimes {
    stages: BTreeMap<(String, String), (f64, f64)>,
}

impl AgentTimes {
    const SERIES: &str = "netwarden_attach_stage_seconds";

    fn read(lab: &Lab) -> Self {
        let (status, body) = lab.http_get("/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        let mut stages = BTreeMap::new();
        for line in body.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Some((name, labels)) = series.split_once('{') else {
                continue;
            };
            let field = match name.strip_prefix(Self::SERIES) {
                Some("_sum") => 0,
                Some("_count") => 1,
                _ => continue,
            };
            let label = |key: &str| {
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(key)?.strip_prefix("=\""))
                    .map(|v| v.trim_end_matches('}').trim_end_matches('"').to_owned())
                    .expect("command and stage labels")
            };
            let value: f64 = value.parse().expect("a number");
            let entry: &mut (f64, f64) = stages
                .entry((label("command"), label("stage")))
                .or_default();
            if field == 0 {
                entry.0 = value;
            } else {
                entry.1 = value;
            }
        }
        Self { stages }
    }

    /// What happened between `earlier` and `self`.
    fn since(mut self, earlier: &Self) -> Self {
        for (key, (sum, count)) in &mut self.stages {
            if let Some((before_sum, before_count)) = earlier.stages.get(key) {
                *sum -= before_sum;
                *count -= before_count;
            }
        }
        self
    }

    /// Mean seconds of each stage of `command`, in the order the agent runs them.
    fn means(&self, command: &str) -> Vec<(&str, f64)> {
        const ORDER: [&str; 8] = [
            "pod",
            "plan",
            "guard",
            "delegates",
            "enforcer_lock",
            "engine",
            "datapath",
            "status",
        ];
        ORDER
            .iter()
            .filter_map(|stage| {
                let (sum, count) = self
                    .stages
                    .get(&(command.to_owned(), (*stage).to_owned()))?;
                (*count > 0.0).then(|| (*stage, sum / count))
            })
            .collect()
    }
}

/// What each stage of the agent is, for the breakdown table.
fn stage_meaning(stage: &str) -> &'static str {
    match stage {
        "pod" => "waiting for the pod in the cluster state",
        "plan" => "reading the cluster network config, resolving the pod's networks",
        "guard" => {
            "closing the new interfaces to inbound traffic before the delegates, opening them once enforced (an nf_tables transaction each)"
        }
        "delegates" => {
            "the delegates (fork and exec of each plugin), the cache writes, the hop to a blocking thread"
        }
        "enforcer_lock" => "waiting for the enforcer (cluster events use it too)",
        "engine" => "the policy engine taking in the pod with its interfaces",
        "datapath" => {
            "ADD: attaching and programming the eBPF programs on each new interface; DEL: forgetting them"
        }
        "status" => "writing network-status (the directory source: the pod's manifest)",
        _ => "",
    }
}

fn mean(samples: &[Duration]) -> f64 {
    samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len().max(1) as f64
}

/// Where a command's mean latency goes: the agent's stages, and the rest
/// (`netwarden-cni`'s start, the socket, the request and the answer).
fn breakdown(
    command: &str,
    through: &[Duration],
    beside: &[Duration],
    agent: &AgentTimes,
) -> String {
    let total = mean(through);
    let stages = agent.means(command);
    let in_agent: f64 = stages.iter().map(|(_, secs)| secs).sum();
    let ms = |secs: f64| format!("{:.2} ms", secs * 1e3);
    let share = |secs: f64| format!("{:.0} %", 100.0 * secs / total);
    let mut rows = vec![vec![
        "netwarden-cni".to_owned(),
        "the binary's start, the socket, the request and the answer (the rest)".to_owned(),
        ms(total - in_agent),
        share(total - in_agent),
    ]];
    for (stage, secs) in &stages {
        rows.push(vec![
            format!("agent: {stage}"),
            stage_meaning(stage).to_owned(),
            ms(*secs),
            share(*secs),
        ]);
    }
    rows.push(vec![
        "**total**".to_owned(),
        format!("netwarden's mean {command}"),
        ms(total),
        "100 %".to_owned(),
    ]);
    rows.push(vec![
        "direct".to_owned(),
        "the same delegates executed directly (for comparison with `delegates`)".to_owned(),
        ms(mean(beside)),
        share(mean(beside)),
    ]);
    format!(
        "### {command}\n\n{}",
        table(
            &["step", "what", "mean", "share of netwarden's mean"],
            &rows
        )
    )
}

fn document(
    machine: &Machine,
    pods: usize,
    netwarden: &Samples,
    direct: &Samples,
    agent: &AgentTimes,
    alone: &FailClosed,
) -> String {
    let mut rows = Vec::new();
    for (command, through, beside) in [
        ("ADD", &netwarden.add, &direct.add),
        ("DEL", &netwarden.del, &direct.del),
    ] {
        let through = Percentiles::of(through).expect("timed pods");
        let beside = Percentiles::of(beside).expect("timed pods");
        let overhead = |a: Duration, b: Duration| a.as_secs_f64() - b.as_secs_f64();
        let ms = |secs: f64| format!("{:.2} ms", secs * 1e3);
        let p50 = overhead(through.p50, beside.p50);
        let p99 = overhead(through.p99, beside.p99);
        rows.push(vec![
            command.to_owned(),
            through.samples.min(beside.samples).to_string(),
            human(through.p50),
            human(through.p99),
            human(beside.p50),
            human(beside.p99),
            ms(p50),
            ms(p99),
            format!("{:.2}", p50 / TARGET_OVERHEAD.as_secs_f64()),
        ]);
    }
    format!(
        "# Attach benchmark\n\n\
         `cargo xtask bench attach` (as root: `cargo build --release -p netwarden-agent -p \
         netwarden-cni`, then `cargo bench -p netwarden-tests --bench attach`; \
         `NETWARDEN_BENCH_QUICK=1` for {QUICK_PODS} pods).\n\n\
         {}\n\
         ## What is timed\n\n\
         {pods} pods, one at a time (after {WARM_UP} untimed ones), each asking for the \
         seed network `macvlan-conf` (macvlan in bridge mode over the node's `eth0`, \
         host-local IPAM). Every plugin is executed the way a container runtime does: \
         fork, enter the node's network namespace, exec, CNI_* environment, config on \
         stdin, result on stdout.\n\n\
         - **netwarden**: one execution of `netwarden-cni`, which forwards the request over \
           the unix socket to `netwarden agent`, which runs the cluster network \
           (ptp + host-local) and then macvlan + host-local, writes its cache and the pod's \
           network-status (into the pod's manifest: the directory cluster source). The \
           pods are scheduled on the agent's node, so it also enforces \
           MultiNetworkPolicy on them (none exists here).\n\
         - **direct**: the same delegates with the same configs executed by the benchmark: \
           ptp for eth0, then macvlan for net1 (DEL in reverse).\n\n\
         The {pods} pods netwarden attaches (plus the warm-up ones) are written as \
         manifests before the clock runs, so the agent knows each pod when its ADD \
         arrives; the direct path needs no cluster objects. Each ADD writes one manifest \
         (the pod's network-status); the directory source re-reads only the files that \
         change, so the cost does not grow with the number of manifests. Overhead is \
         netwarden minus direct, per percentile (negative: within the noise). The two \
         paths alternate which goes first, pod by pod. The machine is shared (other \
         builds may run at the same time): take the figures as orders of magnitude.\n\n\
         ## Latency\n\n\
         Target: overhead under {} at p50; the ratio is the p50 overhead to it (under 1 \
         meets the target).\n\n{}\n\
         ## Where the time goes\n\n\
         Means over the timed pods. The agent's steps come from its \
         `netwarden_attach_stage_seconds` metric (its `/metrics`, read before and after the \
         timed pods); `netwarden-cni` is the rest of the mean latency the benchmark \
         measures. The ADD `datapath` row is the eBPF programs' load and attach on each new \
         interface. In a DEL, the delegates remove interfaces that still carry eBPF \
         programs: the kernel's work of detaching them is in the `delegates` row (compare \
         it with `direct`), the unpinning after it in `datapath`.\n\n{}\n{}\n{}",
        machine.markdown(),
        human(TARGET_OVERHEAD),
        table(
            &[
                "command",
                "pods",
                "netwarden p50",
                "netwarden p99",
                "direct p50",
                "direct p99",
                "overhead p50",
                "overhead p99",
                "overhead p50 ÷ 5 ms",
            ],
            &rows
        ),
        breakdown("ADD", &netwarden.add, &direct.add, agent),
        breakdown("DEL", &netwarden.del, &direct.del, agent),
        alone.markdown(),
    )
}
