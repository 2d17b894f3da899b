//! `lab up`, `lab apply`, `lab delete`, `lab down`: making and unmaking a lab, every step
//! recorded in its state first.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::Mutex,
};

use super::{
    fabric::{self, Segment, CLUSTER_UPLINK},
    node_agent::{self, AgentError},
    parallel,
    pods::{self, PodError},
    probe::Endpoint,
    process,
    spec::{self, Manifest, PodName, PodSpec, SpecError},
    state::{Isolation, LabName, LabState, StateError},
    store::{self, StoreError},
    topology::TopologyError,
};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error("lab fabric: {0}")]
    Fabric(#[from] TopologyError),
    #[error("{pod}: field spec.nodeName: node {node} is not in this lab (its nodes: {nodes})")]
    UnknownNode {
        pod: PodName,
        node: String,
        nodes: String,
    },
    #[error("{}: field spec.config: NAD {name} names master {master}, which the lab has no segment for (masters come from the NADs given to `lab up`)", path.display())]
    NewMaster {
        path: PathBuf,
        name: String,
        master: String,
    },
    #[error("pod {0} is not in this lab")]
    NoPod(PodName),
    #[error("lab down left errors behind: {0}")]
    Down(String),
}

/// Where CNI plugins are looked up: the Debian reference plugins, then the usual place.
pub fn default_cni_path() -> Vec<PathBuf> {
    vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()]
}

/// Brings up lab `name` from the manifests in `source`. On failure, everything made so
/// far is removed again.
pub fn up(name: LabName, source: &Path, isolation: Isolation) -> Result<LabState, LabError> {
    let manifests = spec::load(source)?;
    let pod_specs = spec::pods(&manifests);
    let nodes = spec::nodes(&pod_specs);
    let masters = spec::masters(&manifests);
    let source = source.canonicalize().unwrap_or_else(|_| source.to_owned());
    let mut lab = LabState::create(name, source, default_cni_path(), isolation)?;
    match build(&mut lab, &manifests, &pod_specs, &nodes, masters) {
        Ok(()) => Ok(lab),
        Err(error) => {
            if let Err(cleanup) = down(&lab) {
                tracing::warn!("cleaning up after a failed `lab up`: {cleanup}");
            }
            Err(error)
        }
    }
}

fn build(
    lab: &mut LabState,
    manifests: &[Manifest],
    pod_specs: &[PodSpec],
    nodes: &[String],
    masters: BTreeSet<String>,
) -> Result<(), LabError> {
    let fabric_ns = lab.netns_name("fabric");
    lab.fabric = Some(fabric_ns.clone());
    lab.masters = masters.into_iter().collect();
    lab.nodes = nodes
        .iter()
        .map(|node| node_agent::record(lab, node, lab.netns_name(node)))
        .collect();
    lab.save()?;
    fabric::add_netns(&fabric_ns)?;
    fabric::add_bridge(&fabric_ns, Segment::Cluster)?;
    for index in 0..lab.masters.len() {
        fabric::add_bridge(&fabric_ns, Segment::Master(index))?;
    }
    for (index, node) in lab.nodes.iter().enumerate() {
        fabric::add_netns(&node.netns)?;
        fabric::join(
            &fabric_ns,
            Segment::Cluster,
            &node.netns,
            index,
            CLUSTER_UPLINK,
        )?;
        for (m, master) in lab.masters.iter().enumerate() {
            fabric::join(&fabric_ns, Segment::Master(m), &node.netns, index, master)?;
        }
    }
    for manifest in manifests.iter().filter(|m| m.key.kind != "Pod") {
        store::write(&lab.store, manifest)?;
    }
    let data_dir = lab.root().join("cluster-ipam");
    for index in 0..lab.nodes.len() {
        let cluster = fabric::cluster_network(index, &data_dir);
        let agent = node_agent::start(lab, &lab.nodes[index], &cluster)?;
        lab.nodes[index].agent = Some(agent);
        lab.save()?;
    }
    for node in &lab.nodes {
        node_agent::wait_ready(lab, node)?;
    }
    let pods = manifests
        .iter()
        .filter(|m| m.key.kind == "Pod")
        .zip(pod_specs)
        .map(|(manifest, spec)| (manifest.clone(), spec.clone()))
        .collect::<Vec<_>>();
    create_pods(lab, &pods)
}

/// Schedules, stores and attaches `pods` (at most four at a time, like a busy kubelet),
/// and starts their servers.
fn create_pods(lab: &mut LabState, pods: &[(Manifest, PodSpec)]) -> Result<(), LabError> {
    let mut records = Vec::new();
    for (manifest, spec) in pods {
        let node = schedule(lab, spec)?;
        let uid = format!("{}-{}-{}", lab.name, spec.pod.namespace, spec.pod.name);
        let mut stored = manifest.clone();
        stored.value["spec"]["nodeName"] = node.clone().into();
        stored.value["metadata"]["uid"] = uid.clone().into();
        let record = pods::record(lab, &spec.pod, uid, node, spec.ports.clone());
        lab.pods.push(record.clone());
        lab.save()?;
        store::write(&lab.store, &stored)?;
        records.push(record);
    }
    let shared = Mutex::new(lab.clone());
    let results = parallel::map(&records, 4, |record| -> Result<(), LabError> {
        let snapshot = shared.lock().expect("lab state lock").clone();
        pods::attach(&snapshot, record)?;
        let server = pods::start_server(&snapshot, record)?;
        let mut lab = shared.lock().expect("lab state lock");
        if let Some(pod) = lab.pods.iter_mut().find(|p| p.pod == record.pod) {
            pod.server = server;
        }
        lab.save()?;
        Ok(())
    });
    *lab = shared.into_inner().expect("lab state lock");
    results.into_iter().collect()
}

/// The pod's node: its `spec.nodeName`, else the next node round-robin.
fn schedule(lab: &mut LabState, spec: &PodSpec) -> Result<String, LabError> {
    match &spec.node {
        Some(node) if lab.node(node).is_some() => Ok(node.clone()),
        Some(node) => Err(LabError::UnknownNode {
            pod: spec.pod.clone(),
            node: node.clone(),
            nodes: lab
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        None => {
            let node = lab.nodes[lab.next_node % lab.nodes.len()].name.clone();
            lab.next_node += 1;
            Ok(node)
        }
    }
}

/// Applies the objects of `file`: new pods are created, everything else (and changed
/// pods: labels, annotations) just replaces its file in the store.
pub fn apply(lab: &mut LabState, file: &Path) -> Result<(), LabError> {
    let manifests = spec::load_file(file)?;
    let masters: BTreeSet<&String> = lab.masters.iter().collect();
    for nad in &manifests {
        for master in spec::masters(std::slice::from_ref(nad)) {
            if !masters.contains(&master) {
                return Err(LabError::NewMaster {
                    path: file.to_owned(),
                    name: nad.key.name.clone(),
                    master,
                });
            }
        }
    }
    let mut new_pods = Vec::new();
    for manifest in &manifests {
        let existing = (manifest.key.kind == "Pod")
            .then(|| spec::pod_spec(manifest).ok())
            .flatten()
            .map(|spec| (lab.pod(&spec.pod).cloned(), spec));
        match existing {
            Some((None, spec)) => new_pods.push((manifest.clone(), spec)),
            Some((Some(record), _)) => {
                // Scheduling and identity stay as they were; the rest is the new manifest.
                let mut stored = manifest.clone();
                stored.value["spec"]["nodeName"] = record.node.into();
                stored.value["metadata"]["uid"] = record.uid.into();
                store::write(&lab.store, &stored)?;
            }
            None => store::write(&lab.store, manifest)?,
        }
    }
    create_pods(lab, &new_pods)
}

/// Deletes the objects `file` names: pods are detached (CNI DEL) and removed.
pub fn delete(lab: &mut LabState, file: &Path) -> Result<(), LabError> {
    for manifest in spec::load_file(file)? {
        if manifest.key.kind == "Pod" {
            let pod = PodName {
                namespace: manifest.key.namespace.clone().unwrap_or_default(),
                name: manifest.key.name.clone(),
            };
            if let Some(record) = lab.pod(&pod).cloned() {
                pods::detach(lab, &record)?;
                lab.pods.retain(|p| p.pod != pod);
                lab.save()?;
            }
        }
        store::remove(&lab.store, &manifest.key)?;
    }
    Ok(())
}

/// Removes everything the lab made: pods (CNI DEL, servers, namespaces), agents, nodes,
/// the fabric, the cluster network's allocations and the lab's directory. Goes on past
/// errors and reports them at the end.
pub fn down(lab: &LabState) -> Result<(), LabError> {
    let mut problems = Vec::new();
    let results = parallel::map(&lab.pods, 8, |pod| pods::detach(lab, pod));
    problems.extend(
        results
            .into_iter()
            .filter_map(Result::err)
            .map(|e| e.to_string()),
    );
    for node in &lab.nodes {
        if let Some(agent) = &node.agent {
            process::stop(agent);
        }
        // An agent a crashed `lab up` started but never recorded.
        process::stop_all_in(&node.netns);
        if let Err(e) = fabric::delete_netns(&node.netns) {
            problems.push(e.to_string());
        }
    }
    if let Some(fabric_ns) = &lab.fabric {
        if let Err(e) = fabric::delete_netns(fabric_ns) {
            problems.push(e.to_string());
        }
    }
    // The agents are stopped and the pod interfaces gone: the pins hold nothing live.
    match std::fs::remove_dir_all(lab.pins()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            problems.push(format!("{}: {e}", lab.pins().display()))
        }
        // The shared parent goes when the last lab's pins do (fails while others run).
        _ => {
            let _ = std::fs::remove_dir(super::state::LABS_BPFFS_DIR);
        }
    }
    let container_ids: BTreeSet<String> = lab.pods.iter().map(|p| p.container_id.clone()).collect();
    problems.extend(release_leftover_allocations(&container_ids));
    if problems.is_empty() {
        if let Err(e) = std::fs::remove_dir_all(lab.root()) {
            problems.push(format!("{}: {e}", lab.root().display()));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LabError::Down(problems.join("; ")))
    }
}

/// NADs without a `dataDir` keep host-local allocations in this machine's shared
/// directory (so the nodes of a lab never hand out one address twice). CNI DEL releases
/// them; this removes any a crash left behind, and only those held by this lab's
/// containers (host-local writes the container ID as the file's first line).
fn release_leftover_allocations(container_ids: &BTreeSet<String>) -> Vec<String> {
    let root = Path::new("/var/lib/cni/networks");
    let mut problems = Vec::new();
    for network in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(network.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            let is_address = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<IpAddr>().is_ok());
            let owner = std::fs::read_to_string(&path).unwrap_or_default();
            let owner = owner.lines().next().unwrap_or("").trim();
            if is_address && container_ids.contains(owner) {
                if let Err(e) = std::fs::remove_file(&path) {
                    problems.push(format!("{}: {e}", path.display()));
                }
            }
        }
    }
    problems
}

/// The pods on `network` (a NAD's `namespace/name`, or the cluster network when None)
/// with their first IPv4 address on it, from the network-status their agents wrote.
pub fn endpoints(lab: &LabState, network: Option<&str>) -> Result<Vec<Endpoint>, LabError> {
    let mut endpoints = Vec::new();
    for pod in &lab.pods {
        let status = store::network_status(&lab.store, &pod.pod)?;
        let address = status
            .iter()
            .filter(|entry| match network {
                None => entry.default,
                Some(name) => entry.name == name,
            })
            .flat_map(|entry| &entry.ips)
            .find_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None::<Ipv4Addr>,
            });
        if let Some(address) = address {
            endpoints.push(Endpoint {
                pod: pod.pod.clone(),
                netns: pod.netns.clone(),
                address,
            });
        }
    }
    Ok(endpoints)
}
