//! What a running lab's truth tables must be, and a way to wait until its agents have
//! caught up with a change, for the lab's end-to-end policy tests.
//!
//! Expectations come from the naive reference evaluator (`policy::reference`, written
//! straight from the specification) applied to the objects in the lab's store: never from
//! the lab's own output.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    net::IpAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use netwarden_agent::{
    agent::{
        api::{ExplainQuery, FlowRecord},
        client,
    },
    cluster::Object,
    lab::{
        fabric::CLUSTER_NETWORK_NAME,
        node_agent::METRICS_ADDRESS,
        spec::{self, ContainerPort, Manifest, Protocol},
        state::LabState,
    },
    netns::run_in,
    policy::reference::{self, Party, Reference},
};

use crate::{lab::Table, node::binary};

/// The networks a lab test probes: a NAD, or the cluster network (where the lab's agents
/// enforce NetworkPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Net {
    Nad(&'static str),
    Cluster,
}

impl Net {
    /// The name its network-status entries carry.
    pub fn status_name(self) -> &'static str {
        match self {
            Self::Nad(nad) => nad,
            Self::Cluster => CLUSTER_NETWORK_NAME,
        }
    }

    /// `--network` of `lab probe` (None: the cluster network).
    pub fn probe_arg(self) -> Option<&'static str> {
        match self {
            Self::Nad(nad) => Some(nad),
            Self::Cluster => None,
        }
    }

    /// `network` of an explain query (empty: the cluster network).
    fn explain_arg(self) -> &'static str {
        match self {
            Self::Nad(nad) => nad,
            Self::Cluster => "",
        }
    }
}

/// One truth table: a network, a protocol and a port.
pub type Probe = (Net, ContainerPort);

/// The objects of the lab's store, as the agents read them.
pub fn store_objects(lab: &LabState) -> Vec<Object> {
    fn typed<T: serde::de::DeserializeOwned>(manifest: Manifest) -> Box<T> {
        serde_json::from_value(manifest.value)
            .unwrap_or_else(|e| panic!("store object {:?}: {e}", manifest.key))
    }
    spec::load(&lab.store)
        .expect("the lab store loads")
        .into_iter()
        .filter_map(|manifest| match manifest.key.kind.as_str() {
            "Pod" => Some(Object::Pod(typed(manifest))),
            "Namespace" => Some(Object::Namespace(typed(manifest))),
            "MultiNetworkPolicy" => Some(Object::MultiNetworkPolicy(typed(manifest))),
            "NetworkPolicy" => Some(Object::NetworkPolicy(typed(manifest))),
            _ => None,
        })
        .collect()
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The pods with an IPv4 address on `net` (the one `lab probe` uses), by name.
pub fn addresses(objects: &[Object], net: Net) -> BTreeMap<String, IpAddr> {
    objects
        .iter()
        .filter_map(|o| match o {
            Object::Pod(pod) => reference::addresses(pod, net.status_name())
                .into_iter()
                .find(IpAddr::is_ipv4)
                .map(|address| (pod_name(pod), address)),
            _ => None,
        })
        .collect()
}

/// What the specification says of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Does policy allow the connection (what `explain` answers)?
    pub allowed: Table,
    /// Is it allowed and does the destination serve the port (what `lab probe` sees)?
    pub reached: Table,
}

/// The tables of `probe` for `objects`: NetworkPolicy applies to the cluster network,
/// MultiNetworkPolicy to the NADs its policy-for names.
pub fn expected(objects: &[Object], (net, port): Probe) -> Expected {
    let standard = BTreeSet::from([CLUSTER_NETWORK_NAME.to_owned()]);
    let reference = Reference {
        objects,
        standard_networks: &standard,
    };
    let network = net.status_name();
    let protocol = port.protocol.to_string();
    let pods: Vec<(&Pod, String, IpAddr)> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Pod(pod) => reference::addresses(pod, network)
                .into_iter()
                .find(IpAddr::is_ipv4)
                .map(|address| (pod.as_ref(), pod_name(pod), address)),
            _ => None,
        })
        .collect();
    let mut allowed = Table::new();
    let mut reached = Table::new();
    for (from, from_name, from_address) in &pods {
        for (to, to_name, to_address) in &pods {
            if from_name == to_name {
                continue;
            }
            let allows = reference.egress_allows(
                from,
                network,
                Party::Pod(to, *to_address),
                &protocol,
                port.port,
            ) && reference.ingress_allows(
                to,
                network,
                Party::Pod(from, *from_address),
                &protocol,
                port.port,
            );
            let serves = serves(to, port);
            allowed
                .entry(from_name.clone())
                .or_default()
                .insert(to_name.clone(), allows);
            reached
                .entry(from_name.clone())
                .or_default()
                .insert(to_name.clone(), allows && serves);
        }
    }
    Expected { allowed, reached }
}

/// The lab starts a server on every declared container port.
fn serves(pod: &Pod, port: ContainerPort) -> bool {
    let protocol = port.protocol.to_string();
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .any(|p| {
            p.container_port == i32::from(port.port)
                && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
}

/// Every node's agent of a lab, asked through `explain` (inside the node's namespace,
/// where each agent serves its HTTP endpoint).
pub struct Agents {
    nodes: Vec<(String, PathBuf)>,
}

/// One flow whose verdict an agent does not (yet) give as expected.
#[derive(Debug)]
pub struct Disagreement {
    pub node: String,
    pub probe: Probe,
    pub from: String,
    pub to: String,
    pub expected: bool,
    pub answer: Result<bool, String>,
}

impl Agents {
    pub fn of(lab: &LabState) -> Self {
        Self {
            nodes: lab
                .nodes
                .iter()
                .map(|n| (n.name.clone(), PathBuf::from("/run/netns").join(&n.netns)))
                .collect(),
        }
    }

    /// Polls every agent until each gives the expected verdict for every pair of every
    /// table (its engine has seen the change; its kernel tables are written before it
    /// answers), or `within` passes: then the disagreements of the last poll.
    pub fn wait_for(
        &self,
        expected: &[(Probe, Expected)],
        within: Duration,
    ) -> Result<Duration, Vec<Disagreement>> {
        let started = Instant::now();
        loop {
            let disagreements = self.disagreements(expected);
            if disagreements.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                return Err(disagreements);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn disagreements(&self, expected: &[(Probe, Expected)]) -> Vec<Disagreement> {
        let mut queries = Vec::new();
        for (probe, tables) in expected {
            for (from, row) in &tables.allowed {
                for (to, allowed) in row {
                    queries.push((*probe, from.clone(), to.clone(), *allowed));
                }
            }
        }
        let mut found = Vec::new();
        for (node, netns) in &self.nodes {
            let answers = run_in(netns, || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(
                    futures::stream::iter(queries.iter().map(|(probe, from, to, _)| {
                        let query = ExplainQuery {
                            from: from.clone(),
                            to: to.clone(),
                            network: probe.0.explain_arg().into(),
                            port: probe.1.port,
                            protocol: probe.1.protocol.to_string(),
                        };
                        async move {
                            client::explain(&format!("http://{METRICS_ADDRESS}"), &query)
                                .await
                                .map(|a| a.allowed)
                                .map_err(|e| e.to_string())
                        }
                    }))
                    .buffered(16)
                    .collect::<Vec<_>>(),
                )
            })
            .expect("the node's namespace exists");
            for ((probe, from, to, expected), answer) in queries.iter().zip(answers) {
                if answer.as_ref() != Ok(expected) {
                    found.push(Disagreement {
                        node: node.clone(),
                        probe: *probe,
                        from: from.clone(),
                        to: to.clone(),
                        expected: *expected,
                        answer,
                    });
                }
            }
        }
        found
    }
}

/// TCP `port`.
pub fn tcp(port: u16) -> ContainerPort {
    ContainerPort {
        protocol: Protocol::Tcp,
        port,
    }
}

/// UDP `port`.
pub fn udp(port: u16) -> ContainerPort {
    ContainerPort {
        protocol: Protocol::Udp,
        port,
    }
}

/// The verdict events of every node's agent (`netwarden flows --json`, run in the node's
/// namespace), collected from start to [`finish`](Self::finish).
pub struct FlowLog {
    streams: Vec<(Child, std::thread::JoinHandle<Vec<FlowRecord>>)>,
}

impl FlowLog {
    pub fn start(lab: &LabState) -> Self {
        let streams = lab
            .nodes
            .iter()
            .map(|node| {
                let mut child = Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{}", node.netns))
                    .arg("--")
                    .arg(binary("netwarden"))
                    .args(["flows", "--json", "--agent"])
                    .arg(format!("http://{METRICS_ADDRESS}"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("netwarden flows starts");
                let stdout = child.stdout.take().expect("piped stdout");
                let reader = std::thread::spawn(move || {
                    BufReader::new(stdout)
                        .lines()
                        .map_while(Result::ok)
                        .filter_map(|line| serde_json::from_str(&line).ok())
                        .collect()
                });
                (child, reader)
            })
            .collect();
        Self { streams }
    }

    /// Stops the streams; every record received.
    pub fn finish(mut self) -> Vec<FlowRecord> {
        let mut records = Vec::new();
        for (mut child, reader) in std::mem::take(&mut self.streams) {
            let _ = child.kill();
            let _ = child.wait();
            records.extend(reader.join().expect("the reader thread ends"));
        }
        records
    }
}

impl Drop for FlowLog {
    fn drop(&mut self) {
        for (child, _) in &mut self.streams {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A stretch of time during which the lab's state was `expected` (the agents had caught
/// up before it began), with the pods' addresses on each network.
pub struct Window {
    pub label: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub expected: Vec<(Probe, Expected)>,
    pub addresses: BTreeMap<Net, BTreeMap<String, IpAddr>>,
}

/// Milliseconds since the Unix epoch, the clock of flow records.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The deny events, in the windows, for flows the window's tables allow: each one line.
pub fn denied_but_allowed(records: &[FlowRecord], windows: &[Window]) -> Vec<String> {
    let mut found = Vec::new();
    for record in records.iter().filter(|r| r.verdict == "deny") {
        let Some(window) = windows
            .iter()
            .find(|w| (w.start_ms..=w.end_ms).contains(&record.time_ms))
        else {
            continue;
        };
        let (Some(pod), Some(src), Some(dst)) = (&record.pod, record.src, record.dst) else {
            continue;
        };
        let protocol = match record.protocol {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            _ => continue,
        };
        let port = ContainerPort {
            protocol,
            port: record.dst_port,
        };
        for (probe, expected) in window.expected.iter().filter(|(p, _)| p.1 == port) {
            let Some(addresses) = window.addresses.get(&probe.0) else {
                continue;
            };
            let named = |address: IpAddr| {
                addresses
                    .iter()
                    .find(|(_, a)| **a == address)
                    .map(|(name, _)| name.clone())
            };
            let (from, to) = if record.direction == "ingress" {
                (named(src), Some(pod.clone()))
            } else {
                (Some(pod.clone()), named(dst))
            };
            let (Some(from), Some(to)) = (from, to) else {
                continue;
            };
            if expected.allowed.get(&from).and_then(|row| row.get(&to)) == Some(&true) {
                found.push(format!("{}: {}", window.label, record.line()));
            }
        }
    }
    found
}
