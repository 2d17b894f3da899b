//! The lab's record of everything it created, in `/run/netwarden-lab/<name>/state.json`.
//! Written before each thing is made, so `lab down` removes all of it even after `lab up`
//! crashed halfway; removing what no longer exists is not an error.
use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use super::spec::{ContainerPort, PodName};

/// Where every lab keeps its state (tmpfs: a reboot, which also removes the namespaces,
/// removes it too).
pub const LABS_DIR: &str = "/run/netwarden-lab";
/// Where the labs' agents pin their eBPF maps and links (one directory per lab and node).
pub const LABS_BPFFS_DIR: &str = "/sys/fs/bpf/netwarden-lab";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("lab {0:?}: a lab name is 1-16 lowercase letters, digits and '-'")]
    BadName(String),
    #[error("lab {name} is not up (no {})", path.display())]
    NotUp { name: LabName, path: PathBuf },
    #[error("lab {name} is already up (see `netwarden lab status --name {name}`; `netwarden lab down --name {name}` removes it)")]
    AlreadyUp { name: LabName },
    #[error("lab state {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lab state {}: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A lab's name: short and plain, as it becomes part of namespace names and container IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabName(String);

impl FromStr for LabName {
    type Err = StateError;
    fn from_str(given: &str) -> Result<Self, StateError> {
        let plain = given
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if given.is_empty() || given.len() > 16 || !plain {
            return Err(StateError::BadName(given.into()));
        }
        Ok(Self(given.into()))
    }
}

impl TryFrom<String> for LabName {
    type Error = StateError;
    fn try_from(given: String) -> Result<Self, StateError> {
        given.parse()
    }
}

impl From<LabName> for String {
    fn from(name: LabName) -> String {
        name.0
    }
}

impl fmt::Display for LabName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl LabName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lab's own directory.
    pub fn root(&self) -> PathBuf {
        Path::new(LABS_DIR).join(&self.0)
    }

    fn state_file(&self) -> PathBuf {
        self.root().join("state.json")
    }
}

/// A process the lab started, with the command line it was started with: `lab down`
/// signals the pid only while it still runs that command line (pids are reused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub name: String,
    pub netns: String,
    /// The attach socket netwarden-cni on this node talks to.
    pub socket: PathBuf,
    /// The netwarden-cni network config a runtime on this node passes on stdin.
    pub cni_config: PathBuf,
    pub agent: Option<ProcessRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub pod: PodName,
    pub uid: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub ports: Vec<ContainerPort>,
    pub server: Option<ProcessRecord>,
}

/// Everything one lab made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    pub name: LabName,
    /// The directory `lab up` read.
    pub source: PathBuf,
    /// The manifest directory the agents watch (one object per file).
    pub store: PathBuf,
    /// The namespace holding the bridges that join the nodes.
    pub fabric: Option<String>,
    /// Master interface names, in the order of their bridges (`br-m<index>`).
    pub masters: Vec<String>,
    pub nodes: Vec<NodeRecord>,
    pub pods: Vec<PodRecord>,
    /// Where CNI plugins are looked up (netwarden-cni's CNI_PATH and the agents' binDirs).
    pub cni_path: Vec<PathBuf>,
    /// Round-robin position for the next pod without a nodeName.
    pub next_node: usize,
    /// What the agents are told about namespace isolation (`lab up` flags).
    #[serde(default)]
    pub isolation: Isolation,
}

/// Multus's `namespaceIsolation` and `globalNamespaces`, for every node's agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    pub namespace_isolation: bool,
    /// Comma-separated, as in Multus; None leaves the agent's default (`default`).
    pub global_namespaces: Option<String>,
}

impl LabState {
    /// Claims `name` (fails when that lab is up) and writes the first state.
    pub fn create(
        name: LabName,
        source: PathBuf,
        cni_path: Vec<PathBuf>,
        isolation: Isolation,
    ) -> Result<Self, StateError> {
        let root = name.root();
        std::fs::create_dir_all(LABS_DIR).map_err(|source| StateError::Io {
            path: LABS_DIR.into(),
            source,
        })?;
        // create_dir (not _all) is the lock: only one `lab up` of a name gets it.
        match std::fs::create_dir(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::AlreadyUp { name })
            }
            Err(source) => return Err(StateError::Io { path: root, source }),
        }
        let state = Self {
            store: root.join("store"),
            name,
            source,
            fabric: None,
            masters: Vec::new(),
            nodes: Vec::new(),
            pods: Vec::new(),
            cni_path,
            next_node: 0,
            isolation,
        };
        state.save()?;
        Ok(state)
    }

    pub fn load(name: &LabName) -> Result<Self, StateError> {
        let path = name.state_file();
        let text = std::fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => StateError::NotUp {
                name: name.clone(),
                path: path.clone(),
            },
            _ => StateError::Io {
                path: path.clone(),
                source,
            },
        })?;
        serde_json::from_slice(&text).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Writes the state atomically (a crash leaves the previous or the new one).
    pub fn save(&self) -> Result<(), StateError> {
        let path = self.name.state_file();
        let temporary = path.with_extension("json.tmp");
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).expect("lab state serializes");
        std::fs::write(&temporary, text).map_err(io)?;
        std::fs::rename(&temporary, &path).map_err(io)
    }

    pub fn root(&self) -> PathBuf {
        self.name.root()
    }

    /// The bpffs directory under which this lab's agents pin, one subdirectory per node.
    pub fn pins(&self) -> PathBuf {
        Path::new(LABS_BPFFS_DIR).join(&self.name.0)
    }

    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, pod: &PodName) -> Option<&PodRecord> {
        self.pods.iter().find(|p| &p.pod == pod)
    }

    /// The namespace name of one of this lab's nodes, pods or its fabric:
    /// `nwlab-<lab>-<what>`, so `ip netns` shows whose it is.
    pub fn netns_name(&self, what: &str) -> String {
        format!("nwlab-{}-{what}", self.name)
    }

    /// The container ID of a pod's sandbox: unique per lab and pod.
    pub fn container_id(&self, pod: &PodName) -> String {
        format!("nwlab-{}-{}-{}", self.name, pod.namespace, pod.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_are_short_and_plain() {
        assert!("quickstart".parse::<LabName>().is_ok());
        assert!("lab-1".parse::<LabName>().is_ok());
        for bad in ["", "Upper", "a/b", "a b", "seventeen-chars-x"] {
            assert!(bad.parse::<LabName>().is_err(), "{bad}");
        }
    }
}
