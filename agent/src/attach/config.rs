//! The attach service's configuration: a JSON file (`netwarden attach-service --config`).
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use netwarden_cni::agent_link::DEFAULT_SOCKET;
use serde::Deserialize;

/// Every key is optional except `clusterNetwork`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttachConfig {
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
    pub cluster_network: PathBuf,
    #[serde(default)]
    pub namespace_isolation: bool,
    /// Comma-separated; replaces the default (`default`) when set.
    #[serde(default)]
    pub global_namespaces: Option<String>,
    /// Where config-less NADs are looked up by name.
    #[serde(default = "default_config_dir")]
    pub config_dir: PathBuf,
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
    #[error("attach config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("attach config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("attach config {path}: field {field}: {problem}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        problem: &'static str,
    },
}

impl AttachConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks `text`; `path` names it in errors.
    pub fn parse(text: &[u8], path: &Path) -> Result<Self, ConfigError> {
        let config: Self = serde_json::from_slice(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |field, problem| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            problem,
        };
        if config.max_concurrent == 0 {
            return Err(invalid("maxConcurrent", "must be at least 1"));
        }
        if !(config.pod_wait_seconds.is_finite() && config.pod_wait_seconds >= 0.0) {
            return Err(invalid("podWaitSeconds", "must be a non-negative number"));
        }
        if config.bin_dirs.is_empty() {
            return Err(invalid("binDirs", "must name at least one directory"));
        }
        Ok(config)
    }

    pub fn pod_wait(&self) -> Duration {
        Duration::from_secs_f64(self.pod_wait_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AttachConfig, ConfigError> {
        AttachConfig::parse(text.as_bytes(), Path::new("attach.json"))
    }

    #[test]
    fn only_the_cluster_network_is_required() {
        let config = parse(r#"{"clusterNetwork": "/etc/cni/net.d/10-ptp.conflist"}"#).unwrap();
        assert_eq!(config.socket, Path::new("/run/netwarden/cni.sock"));
        assert_eq!(config.cache_dir, Path::new("/var/lib/netwarden/cache"));
        assert_eq!(config.max_concurrent, 8);
        assert!(!config.namespace_isolation);
        let error = parse("{}").unwrap_err().to_string();
        assert!(
            error.contains("attach.json") && error.contains("clusterNetwork"),
            "{error}"
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
            (r#"{"clusterNetwork":"x","binDirs":[]}"#, "binDirs"),
            (r#"{"clusterNetwork":"x","sockett":"/x"}"#, "sockett"),
        ];
        for (text, field) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(field), "{text}: {error}");
        }
    }
}
