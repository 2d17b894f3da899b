//! The agent's configuration: a JSON file (`netwarden agent --config FILE`) whose keys
//! flags may override ([`Overrides`]). The attach service reads the same type.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use netwarden_cni::{agent_link::DEFAULT_SOCKET, NetworkRef};
use serde::Deserialize;

use crate::{
    cluster::{objects::cluster_network, source::ClusterSourceSpec},
    datapath::AttachMode,
};

/// Every key is optional in the file, but `clusterNetwork` must be set by the file or
/// `--cluster-network`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name: the pods scheduled here are the ones enforced on. Unset: the
    /// hostname, lowercased (kubelet's default node name).
    #[serde(default)]
    pub node: String,
    /// `kube` or `dir:PATH`.
    #[serde(default = "default_cluster", deserialize_with = "from_str")]
    pub cluster: ClusterSourceSpec,
    /// The unix socket `netwarden-cni` connects to.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// The per-sandbox cache; `netwarden-cni`'s `cacheDir` must name the same directory.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// Where delegate plugins are looked up.
    #[serde(default = "default_bin_dirs")]
    pub bin_dirs: Vec<PathBuf>,
    /// The cluster's primary CNI config (a .conf or .conflist file), run first as eth0.
    #[serde(default)]
    pub cluster_network: PathBuf,
    #[serde(default)]
    pub namespace_isolation: bool,
    /// Comma-separated; replaces the default (`default`) when set.
    #[serde(default)]
    pub global_namespaces: Option<String>,
    /// NADs (`namespace/name`) on which networking.k8s.io/v1 NetworkPolicy applies too.
    #[serde(default, deserialize_with = "network_refs")]
    pub standard_policy_networks: BTreeSet<NetworkRef>,
    /// Enforce networking.k8s.io/v1 NetworkPolicy on the cluster network (eth0) too; off
    /// where the cluster's own CNI enforces it.
    #[serde(default)]
    pub cluster_network_policy: bool,
    /// Where config-less NADs are looked up by name.
    #[serde(default = "default_config_dir")]
    pub config_dir: PathBuf,
    /// The bpffs directory the datapath pins its maps and links under.
    #[serde(default = "default_bpffs")]
    pub bpffs: PathBuf,
    /// How the classifiers are hooked onto pod interfaces.
    #[serde(default, deserialize_with = "attach_mode")]
    pub attach_mode: AttachMode,
    /// Classifier instances the datapath keeps loaded and verified ahead of time, so an
    /// ADD attaches without loading any (0: load on each attach).
    #[serde(default = "default_datapath_pool_size")]
    pub datapath_pool_size: usize,
    /// Where `/metrics`, `/healthz`, `/readyz`, `/explain` and `/flows` are served.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: SocketAddr,
    #[serde(default)]
    pub log_format: LogFormat,
    /// How often drift between the engine's output and the kernel is repaired.
    #[serde(default = "default_reconcile_seconds")]
    pub reconcile_seconds: f64,
    /// Requests whose delegates run at once.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Requests admitted beyond those (waiting); more are refused with "agent busy".
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// How long an ADD waits for the watch to deliver its pod.
    #[serde(default = "default_pod_wait_seconds")]
    pub pod_wait_seconds: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Flags of `netwarden agent` that replace the file's keys.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// This node's name.
    #[arg(long)]
    pub node: Option<String>,
    /// Where cluster state comes from: `kube` or `dir:PATH`.
    #[arg(long)]
    pub cluster: Option<ClusterSourceSpec>,
    /// The cluster's primary CNI config (.conf or .conflist).
    #[arg(long)]
    pub cluster_network: Option<PathBuf>,
    /// Pods may only use NADs of their own namespace (and the global namespaces).
    #[arg(long)]
    pub namespace_isolation: Option<bool>,
    /// Comma-separated namespaces whose NADs every pod may use.
    #[arg(long)]
    pub global_namespaces: Option<String>,
    /// Comma-separated NADs (`namespace/name`) NetworkPolicy applies to too.
    #[arg(long, value_delimiter = ',')]
    pub standard_policy_networks: Option<Vec<NetworkRef>>,
    /// Enforce NetworkPolicy on the cluster network (eth0) too.
    #[arg(long)]
    pub cluster_network_policy: Option<bool>,
    /// The attach socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The bpffs directory for pins.
    #[arg(long)]
    pub bpffs: Option<PathBuf>,
    /// TCX, falling back to clsact + cls_bpf where the kernel refuses TCX (auto), or only
    /// one of them.
    #[arg(long, value_enum)]
    pub attach_mode: Option<AttachMode>,
    /// Address of the HTTP endpoint (metrics, health, explain, flows).
    #[arg(long)]
    pub metrics_address: Option<SocketAddr>,
    /// The per-sandbox cache directory.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Log lines as text or as JSON objects.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

fn from_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ClusterSourceSpec, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|e| serde::de::Error::custom(format!("cluster: {e}")))
}
fn attach_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AttachMode, D::Error> {
    AttachMode::deserialize(d).map_err(|e| serde::de::Error::custom(format!("attachMode: {e}")))
}
fn network_refs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeSet<NetworkRef>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            text.parse()
                .map_err(|e| serde::de::Error::custom(format!("standardPolicyNetworks: {e}")))
        })
        .collect()
}
fn default_cluster() -> ClusterSourceSpec {
    ClusterSourceSpec::Kube
}
fn default_socket() -> PathBuf {
    DEFAULT_SOCKET.into()
}
fn default_cache_dir() -> PathBuf {
    "/var/lib/netwarden/cache".into()
}
fn default_bin_dirs() -> Vec<PathBuf> {
    vec!["/opt/cni/bin".into()]
}
fn default_config_dir() -> PathBuf {
    "/etc/cni/net.d".into()
}
fn default_bpffs() -> PathBuf {
    "/sys/fs/bpf/netwarden".into()
}
fn default_datapath_pool_size() -> usize {
    crate::datapath::DatapathOptions::default().pool_size
}
fn default_metrics_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9465))
}
fn default_reconcile_seconds() -> f64 {
    10.0
}
fn default_max_concurrent() -> usize {
    8
}
fn default_max_queued() -> usize {
    256
}
fn default_pod_wait_seconds() -> f64 {
    10.0
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("agent config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("agent config {path}: field {field}: {problem}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        problem: &'static str,
    },
}

impl AgentConfig {
    /// Reads `path`, applies `overrides` and checks the result.
    pub fn load(path: &Path, overrides: Overrides) -> Result<Self, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, overrides)
    }

    /// Parses `text`, applies `overrides` and checks; `path` names the file in errors.
    pub fn parse(text: &[u8], path: &Path, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut config: Self =
            serde_json::from_slice(text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        config.apply(overrides);
        let invalid = |field, problem| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            problem,
        };
        if config.node.is_empty() {
            // As kubelet names its node when not told: the hostname, lowercased.
            config.node = nix::unistd::gethostname()
                .ok()
                .and_then(|name| name.into_string().ok())
                .map(|name| name.to_lowercase())
                .filter(|name| !name.is_empty())
                .ok_or_else(|| {
                    invalid(
                        "node",
                        "not set and the hostname cannot be read: set it (or --node) to this node's name",
                    )
                })?;
        }
        if config.cluster_network.as_os_str().is_empty() {
            return Err(invalid(
                "clusterNetwork",
                "must be set (in the file or with --cluster-network)",
            ));
        }
        if config.max_concurrent == 0 {
            return Err(invalid("maxConcurrent", "must be at least 1"));
        }
        if !(config.pod_wait_seconds.is_finite() && config.pod_wait_seconds >= 0.0) {
            return Err(invalid("podWaitSeconds", "must be a non-negative number"));
        }
        if !(config.reconcile_seconds.is_finite() && config.reconcile_seconds > 0.0) {
            return Err(invalid("reconcileSeconds", "must be a positive number"));
        }
        if config.bin_dirs.is_empty() {
            return Err(invalid("binDirs", "must name at least one directory"));
        }
        Ok(config)
    }

    fn apply(&mut self, overrides: Overrides) {
        let Overrides {
            node,
            cluster,
            cluster_network,
            namespace_isolation,
            global_namespaces,
            standard_policy_networks,
            cluster_network_policy,
            socket,
            bpffs,
            attach_mode,
            metrics_address,
            cache_dir,
            log_format,
        } = overrides;
        replace(&mut self.node, node);
        replace(&mut self.cluster, cluster);
        replace(&mut self.cluster_network, cluster_network);
        replace(&mut self.namespace_isolation, namespace_isolation);
        if global_namespaces.is_some() {
            self.global_namespaces = global_namespaces;
        }
        replace(
            &mut self.standard_policy_networks,
            standard_policy_networks.map(BTreeSet::from_iter),
        );
        replace(&mut self.cluster_network_policy, cluster_network_policy);
        replace(&mut self.socket, socket);
        replace(&mut self.bpffs, bpffs);
        replace(&mut self.attach_mode, attach_mode);
        replace(&mut self.metrics_address, metrics_address);
        replace(&mut self.cache_dir, cache_dir);
        replace(&mut self.log_format, log_format);
    }

    pub fn pod_wait(&self) -> Duration {
        Duration::from_secs_f64(self.pod_wait_seconds)
    }

    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs_f64(self.reconcile_seconds)
    }

    /// The networks NetworkPolicy applies to, the cluster network among them when
    /// `clusterNetworkPolicy` is on.
    pub fn standard_policy_networks(&self) -> BTreeSet<NetworkRef> {
        let mut networks = self.standard_policy_networks.clone();
        if self.cluster_network_policy {
            networks.insert(cluster_network());
        }
        networks
    }
}

fn replace<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(
            text.as_bytes(),
            Path::new("agent.json"),
            Overrides::default(),
        )
    }

    #[test]
    fn only_the_cluster_network_is_required() {
        let config = parse(r#"{"clusterNetwork": "/etc/cni/net.d/10-ptp.conflist"}"#).unwrap();
        assert_eq!(config.socket, Path::new("/run/netwarden/cni.sock"));
        assert_eq!(config.cache_dir, Path::new("/var/lib/netwarden/cache"));
        assert_eq!(config.cluster, ClusterSourceSpec::Kube);
        assert_eq!(config.max_concurrent, 8);
        assert_eq!(config.attach_mode, AttachMode::Auto);
        assert!(!config.namespace_isolation);
        assert!(!config.cluster_network_policy);
        assert!(config.standard_policy_networks().is_empty());
        let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert_eq!(config.node, hostname.to_lowercase());
        let error = parse("{}").unwrap_err().to_string();
        assert!(
            error.contains("agent.json") && error.contains("clusterNetwork"),
            "{error}"
        );
    }

    #[test]
    fn flags_override_the_file() {
        let overrides = Overrides {
            node: Some("node-b".into()),
            cluster: Some("dir:/lab".parse().unwrap()),
            cluster_network: Some("/x.conflist".into()),
            standard_policy_networks: Some(vec!["default/macvlan-conf".parse().unwrap()]),
            cluster_network_policy: Some(true),
            log_format: Some(LogFormat::Json),
            attach_mode: Some(AttachMode::Clsact),
            ..Overrides::default()
        };
        let config = AgentConfig::parse(
            br#"{"node": "node-a", "cluster": "kube", "logFormat": "text", "attachMode": "tcx"}"#,
            Path::new("agent.json"),
            overrides,
        )
        .unwrap();
        assert_eq!(config.node, "node-b");
        assert_eq!(config.cluster, ClusterSourceSpec::Dir("/lab".into()));
        assert_eq!(config.cluster_network, Path::new("/x.conflist"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.attach_mode, AttachMode::Clsact);
        assert_eq!(
            config.standard_policy_networks,
            BTreeSet::from(["default/macvlan-conf".parse().unwrap()])
        );
        assert_eq!(
            config.standard_policy_networks(),
            BTreeSet::from(["default/macvlan-conf".parse().unwrap(), cluster_network()])
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                r#"{"clusterNetwork":"x","maxConcurrent":0}"#,
                "maxConcurrent",
            ),
            (
                r#"{"clusterNetwork":"x","podWaitSeconds":-1}"#,
                "podWaitSeconds",
            ),
            (
                r#"{"clusterNetwork":"x","reconcileSeconds":0}"#,
                "reconcileSeconds",
            ),
            (r#"{"clusterNetwork":"x","binDirs":[]}"#, "binDirs"),
            (r#"{"clusterNetwork":"x","sockett":"/x"}"#, "sockett"),
            (r#"{"clusterNetwork":"x","cluster":"etcd"}"#, "cluster"),
            (r#"{"clusterNetwork":"x","attachMode":"xdp"}"#, "attachMode"),
            (
                r#"{"clusterNetwork":"x","standardPolicyNetworks":["nons"]}"#,
                "standardPolicyNetworks",
            ),
        ];
        for (text, field) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(field), "{text}: {error}");
        }
    }
}
