//! Starting one node's agent. The only place that knows the agent's command line and
//! configuration file, so moving the lab to another agent entry point is a change here.
use std::{path::PathBuf, time::Duration};

use netwarden_cni::agent_link::AgentClient;
use serde_json::json;

use super::{
    process::{self, ProcessError},
    state::{LabState, NodeRecord, ProcessRecord},
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("node {node}: cannot write {}: {source}", path.display())]
    Write {
        node: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node {node}: {source}")]
    Spawn { node: String, source: ProcessError },
    #[error("node {node}: the agent did not answer on {} within {waited:?} (its log: {})", socket.display(), log.display())]
    NotReady {
        node: String,
        socket: PathBuf,
        waited: Duration,
        log: PathBuf,
    },
}

/// Where each node's agent serves metrics, explain and flows, inside the node's namespace.
pub const METRICS_ADDRESS: &str = "127.0.0.1:9310";

/// How long an agent may take to list the store and open its socket.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The files of one node under the lab's root.
pub fn node_dir(lab: &LabState, node: &str) -> PathBuf {
    lab.root().join("nodes").join(node)
}

/// Writes `node`'s agent configuration (its cluster network config is `cluster_network`)
/// and the netwarden-cni config a runtime on that node passes, and starts the agent in
/// the node's namespace on the lab's store. Returns without waiting for it; see
/// [`wait_ready`].
pub fn start(
    lab: &LabState,
    node: &NodeRecord,
    cluster_network: &serde_json::Value,
) -> Result<ProcessRecord, AgentError> {
    let dir = node_dir(lab, &node.name);
    let write = |path: PathBuf, text: String| {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|source| AgentError::Write {
                node: node.name.clone(),
                path,
                source,
            })
    };
    let cluster_file = dir.join("cluster-network.conflist");
    write(cluster_file.clone(), cluster_network.to_string())?;
    let cache = dir.join("cache");
    let agent = json!({
        "node": node.name,
        "cluster": format!("dir:{}", lab.store.display()),
        "bpffs": lab.pins().join(&node.name),
        // Inside the node's namespace: every node has its own loopback.
        "metricsAddress": METRICS_ADDRESS,
        "socket": node.socket,
        "cacheDir": cache,
        "binDirs": lab.cni_path,
        "clusterNetwork": cluster_file,
        // The lab is the whole cluster: NetworkPolicy on eth0 is netwarden's to enforce.
        "clusterNetworkPolicy": true,
        "configDir": dir.join("net.d"),
        "namespaceIsolation": lab.isolation.namespace_isolation,
        "globalNamespaces": lab.isolation.global_namespaces,
        "maxConcurrent": 4,
        "podWaitSeconds": 10,
    });
    let agent_file = dir.join("agent.json");
    write(agent_file.clone(), agent.to_string())?;
    let cni = json!({
        "cniVersion": "1.0.0",
        "name": "netwarden",
        "type": "netwarden-cni",
        "socket": node.socket,
        "cacheDir": cache,
        "agentWaitSeconds": 10,
    });
    write(node.cni_config.clone(), cni.to_string())?;
    let netwarden = std::env::current_exe().map_err(|source| AgentError::Write {
        node: node.name.clone(),
        path: "/proc/self/exe".into(),
        source,
    })?;
    let argv = [
        netwarden.display().to_string(),
        "agent".into(),
        "--config".into(),
        agent_file.display().to_string(),
    ];
    process::spawn_in(&node.netns, &argv, &log(lab, &node.name)).map_err(|source| {
        AgentError::Spawn {
            node: node.name.clone(),
            source,
        }
    })
}

/// Where `node`'s agent writes its log.
pub fn log(lab: &LabState, node: &str) -> PathBuf {
    lab.root().join("nodes").join(format!("{node}.log"))
}

/// Waits until `node`'s agent answers on its socket.
pub fn wait_ready(lab: &LabState, node: &NodeRecord) -> Result<(), AgentError> {
    AgentClient::new(&node.socket)
        .wait_ready(READY_WITHIN)
        .map_err(|_| AgentError::NotReady {
            node: node.name.clone(),
            socket: node.socket.clone(),
            waited: READY_WITHIN,
            log: log(lab, &node.name),
        })
}

/// The socket and netwarden-cni config paths of `node`.
pub fn record(lab: &LabState, node: &str, netns: String) -> NodeRecord {
    let dir = node_dir(lab, node);
    NodeRecord {
        name: node.into(),
        netns,
        socket: dir.join("cni.sock"),
        cni_config: dir.join("netwarden-cni.conf"),
        agent: None,
    }
}
