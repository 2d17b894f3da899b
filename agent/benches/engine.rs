//! The policy engine on synthetic clusters: full compile time, single-change update time
//! and memory, at 1k/10k/50k pods with 100/1k/5k policies. Figures, not assertions: prints
//! a table and writes `docs/bench/engine.md`.
//!
//! Each configuration runs in a fresh child process of this binary so that its memory
//! figures start from nothing; the child reports one line per phase and the parent gives
//! every phase at most [`PHASE_LIMIT`]. `NETWARDEN_BENCH_QUICK=1` runs the smallest
//! configuration only.
//!
//! Run: `cargo bench -p netwarden-agent --bench engine`.
#[path = "support/report.rs"]
mod report;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use netwarden_agent::{
    cluster::{ClusterEvent, Kind, Object},
    policy::{Engine, EngineConfig},
};
use proptest::{
    prelude::Rng as _,
    test_runner::{RngAlgorithm, TestRng},
};
use report::{human, table, Machine, Percentiles};
use serde_json::{json, Value};

const CHILD_ENV: &str = "NETWARDEN_BENCH_ENGINE_CHILD";
const QUICK_ENV: &str = "NETWARDEN_BENCH_QUICK";
/// A phase (generating, compiling, one kind of change) that takes longer is reported as
/// too slow and the configuration is stopped.
const PHASE_LIMIT: Duration = Duration::from_secs(60);
/// Single changes of one kind: this many repetitions, or fewer if they take this long.
const CHANGE_REPS: usize = 200;
const CHANGE_BUDGET: Duration = Duration::from_secs(10);
/// Pods per node (kubelet's default maximum is 110): the engine compiles for one node.
const PODS_PER_NODE: usize = 100;
const PODS_PER_NAMESPACE: usize = 50;
const APPS_PER_NAMESPACE: usize = 10;
const NETWORKS: usize = 4;
const NODE: &str = "node-0";

const TARGET_CHANGE: Duration = Duration::from_millis(5);
const TARGET_COMPILE: Duration = Duration::from_secs(1);
const TARGET_MEMORY_MIB: f64 = 200.0;

fn main() {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        let (pods, policies) = config
            .split_once(',')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .expect("child configuration is `pods,policies`");
        child(pods, policies);
        return;
    }
    let configurations: Vec<(usize, usize)> = if std::env::var_os(QUICK_ENV).is_some() {
        vec![(1_000, 100)]
    } else {
        [1_000, 10_000, 50_000]
            .into_iter()
            .flat_map(|pods| [100, 1_000, 5_000].map(|policies| (pods, policies)))
            .collect()
    };
    let machine = Machine::read();
    let results: Vec<Outcome> = configurations
        .iter()
        .map(|&(pods, policies)| {
            eprintln!("engine bench: {pods} pods, {policies} policies");
            run_child(pods, policies)
        })
        .collect();
    let doc = document(&machine, &results);
    println!("{doc}");
    match report::write_doc("bench/engine.md", &doc) {
        Ok(path) => eprintln!("written: {}", path.display()),
        Err(e) => eprintln!("docs/bench/engine.md not written: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// The parent: runs each configuration in a child, collects its phase lines.

/// What a child reported for one configuration.
struct Outcome {
    pods: usize,
    policies: usize,
    endpoints: Option<usize>,
    compile: Option<Duration>,
    /// MiB: peak growth while compiling, and what stays after.
    memory: Option<(f64, f64)>,
    changes: Vec<(String, Percentiles)>,
    /// Why the configuration did not finish, if it did not.
    stopped: Option<String>,
}

fn run_child(pods: usize, policies: usize) -> Outcome {
    let mut outcome = Outcome {
        pods,
        policies,
        endpoints: None,
        compile: None,
        memory: None,
        changes: Vec::new(),
        stopped: None,
    };
    let exe = std::env::current_exe().expect("bench executable path");
    let mut child = match Command::new(exe)
        .env(CHILD_ENV, format!("{pods},{policies}"))
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            outcome.stopped = Some(format!("child did not start: {e}"));
            return outcome;
        }
    };
    let stdout = child.stdout.take().expect("child stdout is piped");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut phase = "generating the cluster".to_owned();
    loop {
        match received.recv_timeout(PHASE_LIMIT) {
            Ok(line) => {
                if let Some(next) = record(&mut outcome, &line) {
                    phase = next;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                outcome.stopped = Some(format!("{phase}: over {} s", PHASE_LIMIT.as_secs()));
                let _ = child.kill();
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait();
    if outcome.stopped.is_none() && !status.as_ref().is_ok_and(|s| s.success()) {
        outcome.stopped = Some(format!("{phase}: child failed ({status:?})"));
    }
    outcome
}

/// Records one phase line; returns the phase the child is in now.
fn record(outcome: &mut Outcome, line: &str) -> Option<String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let secs = |s: &str| Duration::from_secs_f64(s.parse().unwrap_or(f64::NAN));
    match fields.as_slice() {
        ["generated"] => Some("full compile".into()),
        ["compiled", secs_, endpoints] => {
            outcome.compile = Some(secs(secs_));
            outcome.endpoints = endpoints.parse().ok();
            Some("memory".into())
        }
        ["memory", peak, retained] => {
            outcome.memory = Some((peak.parse().ok()?, retained.parse().ok()?));
            Some("single changes".into())
        }
        ["change", kind, p50, p99, samples] => {
            outcome.changes.push((
                kind.replace('_', " "),
                Percentiles {
                    p50: secs(p50),
                    p99: secs(p99),
                    samples: samples.parse().ok()?,
                },
            ));
            Some(format!("single changes after {kind}"))
        }
        _ => None,
    }
}

fn document(machine: &Machine, results: &[Outcome]) -> String {
    let mib = |m: f64| format!("{m:.1} MiB");
    let mut compile_rows = Vec::new();
    let mut change_rows = Vec::new();
    for r in results {
        let config = format!("{} pods / {} policies", r.pods, r.policies);
        compile_rows.push(vec![
            config.clone(),
            r.endpoints.map_or("-".into(), |e| e.to_string()),
            r.compile.map_or("-".into(), human),
            r.compile.map_or("-".into(), |c| {
                format!("{:.2}", c.as_secs_f64() / TARGET_COMPILE.as_secs_f64())
            }),
            r.memory.map_or("-".into(), |(peak, _)| mib(peak)),
            r.memory.map_or("-".into(), |(_, retained)| mib(retained)),
            r.memory.map_or("-".into(), |(peak, _)| {
                format!("{:.2}", peak / TARGET_MEMORY_MIB)
            }),
            r.stopped.clone().unwrap_or_else(|| "finished".into()),
        ]);
        for (kind, p) in &r.changes {
            change_rows.push(vec![
                config.clone(),
                kind.clone(),
                human(p.p50),
                human(p.p99),
                p.samples.to_string(),
                format!("{:.3}", p.p50.as_secs_f64() / TARGET_CHANGE.as_secs_f64()),
                format!("{:.3}", p.p99.as_secs_f64() / TARGET_CHANGE.as_secs_f64()),
            ]);
        }
    }
    format!(
        "# Policy engine benchmark\n\n\
         `cargo xtask bench engine` (`cargo bench -p netwarden-agent --bench engine`; \
         `NETWARDEN_BENCH_QUICK=1` for the smallest configuration only).\n\n\
         {machine}\n\
         ## The clusters\n\n\
         Synthetic, deterministic: {PODS_PER_NAMESPACE} pods per namespace (namespaces \
         labelled `team`, `env`), {APPS_PER_NAMESPACE} apps per namespace (pods labelled \
         `app`, `tier`; named container ports `http`, `metrics`, and `db` on the db tier), \
         {NETWORKS} networks, each pod in the network-status of one or two of them (a fifth \
         of them dual-stack). The engine compiles for one node holding {PODS_PER_NODE} pods. \
         MultiNetworkPolicies spread over the namespaces, each with `policy-for` one or two \
         networks, a pod selector (matchLabels, matchExpressions or empty), ingress from \
         pod selectors, namespace-and-pod selectors (AND), namespace selectors and ipBlocks \
         with `except`, ports by number, by name and ranges (`endPort`); a third also \
         isolate egress (pods by selector on a named port, DNS to an ipBlock).\n\n\
         Full compile: a fresh engine fed `Resynced` namespaces, pods and policies (as at \
         start). Memory: growth of the process's resident set while compiling (peak, from \
         VmHWM after resetting it) and after (VmRSS), measured in a fresh process per \
         configuration; the objects given to the engine are allocated before the baseline. \
         Single changes: one `Applied` object each, on the compiled engine, repeated up to \
         {CHANGE_REPS} times (at most {} s per kind) with a random object each time.\n\n\
         The machine is shared (other builds may run at the same time): take the figures \
         as orders of magnitude.\n\n\
         ## Full compile and memory\n\n\
         Targets: full compile at 10k pods / 1k policies under {}; memory under \
         {TARGET_MEMORY_MIB} MiB at 50k pods. The ratios are to these targets (under 1 \
         meets the target).\n\n{}\n\
         ## Single-change updates\n\n\
         Target: under {} at 10k pods / 1k policies. The ratios are p50 and p99 to the \
         target.\n\n{}",
        CHANGE_BUDGET.as_secs(),
        human(TARGET_COMPILE),
        table(
            &[
                "configuration",
                "endpoints",
                "full compile",
                "÷ 1 s",
                "peak memory growth",
                "retained",
                "÷ 200 MiB",
                "status",
            ],
            &compile_rows
        ),
        human(TARGET_CHANGE),
        table(
            &[
                "configuration",
                "change",
                "p50",
                "p99",
                "samples",
                "p50 ÷ 5 ms",
                "p99 ÷ 5 ms"
            ],
            &change_rows
        ),
        machine = machine.markdown(),
    )
}

// ---------------------------------------------------------------------------------------
// The child: one configuration, phase by phase, one line each on stdout.

fn child(pods: usize, policies: usize) {
    let mut cluster = Cluster::generate(pods, policies);
    let events = [
        ClusterEvent::Resynced(Kind::Namespace, cluster.namespace_objects()),
        ClusterEvent::Resynced(Kind::Pod, cluster.pod_objects()),
        ClusterEvent::Resynced(Kind::MultiNetworkPolicy, cluster.policy_objects()),
    ];
    say("generated");

    let baseline = status_kib("VmRSS");
    reset_peak_rss();
    let mut engine = Engine::new(EngineConfig {
        node: NODE.into(),
        standard_policy_networks: BTreeSet::new(),
    });
    let started = Instant::now();
    for event in &events {
        engine.apply(event);
    }
    let compile = started.elapsed();
    say(&format!(
        "compiled {} {}",
        compile.as_secs_f64(),
        engine.endpoints().count()
    ));
    let peak = status_kib("VmHWM").saturating_sub(baseline);
    let retained = status_kib("VmRSS").saturating_sub(baseline);
    say(&format!(
        "memory {:.1} {:.1}",
        peak as f64 / 1024.0,
        retained as f64 / 1024.0
    ));
    drop(events);

    let kinds: [(&str, Change); 4] = [
        ("pod_labels", Cluster::change_pod_labels),
        ("policy", Cluster::change_policy),
        ("namespace_labels", Cluster::change_namespace_labels),
        ("pod_addresses", Cluster::change_pod_addresses),
    ];
    let mut rng = Rng::seeded(7);
    for (kind, change) in kinds {
        let mut samples = Vec::new();
        let budget = Instant::now();
        while samples.len() < CHANGE_REPS && budget.elapsed() < CHANGE_BUDGET {
            let event = ClusterEvent::Applied(change(&mut cluster, &mut rng));
            let started = Instant::now();
            let changed = engine.apply(&event);
            samples.push(started.elapsed());
            drop(changed);
        }
        let p = Percentiles::of(&samples).expect("at least one repetition");
        say(&format!(
            "change {kind} {} {} {}",
            p.p50.as_secs_f64(),
            p.p99.as_secs_f64(),
            p.samples
        ));
    }
}

/// Makes one change to the synthetic cluster; returns the changed object.
type Change = fn(&mut Cluster, &mut Rng) -> Object;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Resets VmHWM to the current resident set (Linux >= 4.0), so the peak is this phase's.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("/proc/self/clear_refs");
}

// ---------------------------------------------------------------------------------------
// The synthetic cluster.

/// A seeded generator (proptest's ChaCha): every run benchmarks the same cluster.
struct Rng(TestRng);

impl Rng {
    fn seeded(seed: u8) -> Self {
        Self(TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]))
    }

    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const ENVS: [&str; 3] = ["prod", "staging", "dev"];
const TIERS: [&str; 3] = ["web", "api", "db"];

struct NamespaceSpec {
    team: usize,
    env: usize,
}

struct PodSpec {
    namespace: usize,
    node: usize,
    app: usize,
    networks: Vec<usize>,
    dual_stack: bool,
    /// Bumped to give the pod new addresses.
    address_generation: usize,
}

struct PolicySpec {
    namespace: usize,
    networks: Vec<usize>,
    /// None: every pod of the namespace; Some(Ok(app)) by app; Some(Err(tier)) by tier.
    target: Option<Result<usize, usize>>,
    peer_app: usize,
    peer_team: usize,
    with_block_rule: bool,
    with_egress: bool,
    /// Changed to make a policy change.
    port: u16,
}

struct Cluster {
    namespaces: Vec<NamespaceSpec>,
    pods: Vec<PodSpec>,
    policies: Vec<PolicySpec>,
}

impl Cluster {
    fn generate(pods: usize, policies: usize) -> Self {
        let mut rng = Rng::seeded(42);
        let namespaces = pods.div_ceil(PODS_PER_NAMESPACE);
        let nodes = pods.div_ceil(PODS_PER_NODE);
        let networks = |rng: &mut Rng| {
            let first = rng.below(NETWORKS);
            if rng.chance(30) {
                vec![first, (first + 1 + rng.below(NETWORKS - 1)) % NETWORKS]
            } else {
                vec![first]
            }
        };
        Self {
            namespaces: (0..namespaces)
                .map(|_| NamespaceSpec {
                    team: rng.below(10),
                    env: rng.below(ENVS.len()),
                })
                .collect(),
            pods: (0..pods)
                .map(|i| PodSpec {
                    namespace: i / PODS_PER_NAMESPACE,
                    node: i % nodes,
                    app: rng.below(APPS_PER_NAMESPACE),
                    networks: networks(&mut rng),
                    dual_stack: rng.chance(20),
                    address_generation: 0,
                })
                .collect(),
            policies: (0..policies)
                .map(|i| PolicySpec {
                    namespace: i % namespaces,
                    networks: networks(&mut rng),
                    target: match rng.below(10) {
                        0 => None,
                        1 | 2 => Some(Err(rng.below(TIERS.len()))),
                        _ => Some(Ok(rng.below(APPS_PER_NAMESPACE))),
                    },
                    peer_app: rng.below(APPS_PER_NAMESPACE),
                    peer_team: rng.below(10),
                    with_block_rule: rng.chance(50),
                    with_egress: rng.chance(33),
                    port: 80,
                })
                .collect(),
        }
    }

    fn namespace_objects(&self) -> Vec<Object> {
        (0..self.namespaces.len())
            .map(|i| self.namespace(i))
            .collect()
    }
    fn pod_objects(&self) -> Vec<Object> {
        (0..self.pods.len()).map(|i| self.pod(i)).collect()
    }
    fn policy_objects(&self) -> Vec<Object> {
        (0..self.policies.len()).map(|i| self.policy(i)).collect()
    }

    fn change_pod_labels(&mut self, rng: &mut Rng) -> Object {
        let i = rng.below(self.pods.len());
        let pod = &mut self.pods[i];
        pod.app = (pod.app + 1 + rng.below(APPS_PER_NAMESPACE - 1)) % APPS_PER_NAMESPACE;
        self.pod(i)
    }
    fn change_pod_addresses(&mut self, rng: &mut Rng) -> Object {
        let i = rng.below(self.pods.len());
        self.pods[i].address_generation += 1;
        self.pod(i)
    }
    fn change_policy(&mut self, rng: &mut Rng) -> Object {
        let i = rng.below(self.policies.len());
        let policy = &mut self.policies[i];
        policy.port = if policy.port == 80 { 8080 } else { 80 };
        self.policy(i)
    }
    fn change_namespace_labels(&mut self, rng: &mut Rng) -> Object {
        let i = rng.below(self.namespaces.len());
        let namespace = &mut self.namespaces[i];
        namespace.env = (namespace.env + 1) % ENVS.len();
        self.namespace(i)
    }

    fn namespace(&self, i: usize) -> Object {
        let ns = &self.namespaces[i];
        Object::Namespace(Box::new(
            serde_json::from_value(json!({"metadata": {
                "name": format!("ns-{i}"),
                "labels": {"team": format!("t{}", ns.team), "env": ENVS[ns.env]},
            }}))
            .expect("a Namespace"),
        ))
    }

    fn pod(&self, i: usize) -> Object {
        let pod = &self.pods[i];
        let tier = TIERS[pod.app % TIERS.len()];
        // A unique address per pod, network and generation.
        let n = i + pod.address_generation * self.pods.len();
        let mut status = vec![json!({"name": "cluster-net", "interface": "eth0",
            "ips": [format!("10.255.{}.{}", (i >> 8) & 255, i & 255)], "default": true})];
        for (k, &network) in pod.networks.iter().enumerate() {
            let mut ips = vec![format!(
                "10.{}.{}.{}",
                network * 32 + (n >> 16) % 32,
                (n >> 8) & 255,
                n & 255
            )];
            if pod.dual_stack {
                ips.push(format!("fd00:{network}::{n:x}"));
            }
            status.push(json!({"name": format!("default/net-{network}"),
                "interface": format!("net{}", k + 1), "ips": ips}));
        }
        let mut ports = vec![
            json!({"name": "http", "containerPort": 8080, "protocol": "TCP"}),
            json!({"name": "metrics", "containerPort": 9090, "protocol": "TCP"}),
        ];
        if tier == "db" {
            ports.push(json!({"name": "db", "containerPort": 5432, "protocol": "TCP"}));
        }
        Object::Pod(Box::new(
            serde_json::from_value(json!({
                "metadata": {
                    "name": format!("pod-{i}"),
                    "namespace": format!("ns-{}", pod.namespace),
                    "labels": {"app": format!("app{}", pod.app), "tier": tier},
                    "annotations": {
                        "k8s.v1.cni.cncf.io/network-status": Value::Array(status).to_string(),
                    },
                },
                "spec": {"nodeName": format!("node-{}", pod.node),
                         "containers": [{"name": "c", "image": "app", "ports": ports}]},
            }))
            .expect("a Pod"),
        ))
    }

    fn policy(&self, i: usize) -> Object {
        let p = &self.policies[i];
        let policy_for: Vec<String> = p
            .networks
            .iter()
            .map(|n| format!("default/net-{n}"))
            .collect();
        let pod_selector = match p.target {
            None => json!({}),
            Some(Ok(app)) => json!({"matchLabels": {"app": format!("app{app}")}}),
            Some(Err(tier)) => json!({"matchExpressions": [
                {"key": "tier", "operator": "In", "values": [TIERS[tier]]}]}),
        };
        let mut ingress = vec![json!({
            "from": [
                {"podSelector": {"matchLabels": {"app": format!("app{}", p.peer_app)}}},
                {"namespaceSelector": {"matchLabels": {"team": format!("t{}", p.peer_team)}},
                 "podSelector": {"matchExpressions": [
                     {"key": "tier", "operator": "In", "values": ["web", "api"]}]}},
            ],
            "ports": [{"protocol": "TCP", "port": p.port}, {"port": "http"}],
        })];
        if p.with_block_rule {
            ingress.push(json!({
                "from": [
                    {"ipBlock": {"cidr": "10.0.0.0/8",
                                 "except": [format!("10.{}.0.0/16", i % 256)]}},
                    {"namespaceSelector": {"matchLabels": {"env": "prod"}}},
                ],
                "ports": [{"protocol": "TCP", "port": 9000, "endPort": 9100},
                          {"protocol": "TCP", "port": "metrics"}],
            }));
        }
        let mut spec = json!({"podSelector": pod_selector, "ingress": ingress});
        if p.with_egress {
            spec["policyTypes"] = json!(["Ingress", "Egress"]);
            spec["egress"] = json!([
                {"to": [{"podSelector": {"matchLabels": {"tier": "db"}}}],
                 "ports": [{"protocol": "TCP", "port": "db"}]},
                {"to": [{"ipBlock": {"cidr": "10.255.0.0/16"}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            ]);
        }
        Object::MultiNetworkPolicy(Box::new(
            serde_json::from_value(json!({
                "apiVersion": "k8s.cni.cncf.io/v1beta2", "kind": "MultiNetworkPolicy",
                "metadata": {"name": format!("policy-{i}"), "namespace": format!("ns-{}", p.namespace),
                             "annotations": {"k8s.v1.cni.cncf.io/policy-for": policy_for.join(",")}},
                "spec": spec,
            }))
            .expect("a MultiNetworkPolicy"),
        ))
    }
}
