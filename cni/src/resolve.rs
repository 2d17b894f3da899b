//! From a selected network to the delegate configuration that will run: the NAD's inline
//! config (name injected) or, for a config-less NAD, the file of that name in a
//! configuration directory; plus namespace isolation and the device-plugin resource.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use crate::{
    protocol::{ConfList, ConfigError},
    NetworkRef,
};

/// The NAD annotation tying it to a device-plugin resource.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// What resolution needs of a NetworkAttachmentDefinition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NadSpec {
    pub network: NetworkRef,
    /// `spec.config`; empty for a config-less NAD.
    pub config: String,
    pub annotations: BTreeMap<String, String>,
}

/// A network ready to hand to the delegate layer.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedNetwork {
    pub network: NetworkRef,
    pub config: ConfList,
    pub resource_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("network {network}: spec.config: {source}")]
    Config {
        network: NetworkRef,
        source: ConfigError,
    },
    #[error("network {network}: spec.config is empty and no file for {network_name:?} is in {dir} (looked for .conflist, .conf, .json)")]
    NotInConfigDir {
        network: NetworkRef,
        network_name: String,
        dir: PathBuf,
    },
    #[error("network {network}: cannot read configuration directory {dir}: {source}")]
    ReadDir {
        network: NetworkRef,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("namespace isolation: pod in namespace {pod_namespace:?} may not use network {network}: namespace {target_namespace:?} is neither the pod's nor global ({globals})")]
    Isolation {
        pod_namespace: String,
        target_namespace: String,
        network: NetworkRef,
        globals: String,
    },
    #[error("network {network}: resource {resource:?} has no device allocated to this pod (or all are in use by earlier attachments)")]
    NoDevice {
        network: NetworkRef,
        resource: String,
    },
}

/// Turns a NAD into a runnable configuration. `config_dir` serves config-less NADs.
pub fn resolve(nad: &NadSpec, config_dir: &Path) -> Result<ResolvedNetwork, ResolveError> {
    let config = if nad.config.trim().is_empty() {
        find_in_dir(&nad.network, config_dir)?
    } else {
        ConfList::parse(&nad.config, Some(&nad.network.name)).map_err(|source| {
            ResolveError::Config {
                network: nad.network.clone(),
                source,
            }
        })?
    };
    Ok(ResolvedNetwork {
        network: nad.network.clone(),
        config,
        resource_name: nad
            .annotations
            .get(RESOURCE_NAME_ANNOTATION)
            .filter(|r| !r.is_empty())
            .cloned(),
    })
}

/// Looks the network up by its CNI `name` in `dir`, .conflist files before .conf/.json,
/// each group in file-name order (as libcni sorts them).
fn find_in_dir(network: &NetworkRef, dir: &Path) -> Result<ConfList, ResolveError> {
    let read_err = |source| ResolveError::ReadDir {
        network: network.clone(),
        dir: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for extensions in [&["conflist"][..], &["conf", "json"][..]] {
        for file in files.iter().filter(|f| {
            f.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
        }) {
            // Unreadable or foreign files in a shared directory are not this network's.
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            if let Ok(config) = ConfList::parse(&text, None) {
                if config.name == network.name {
                    return Ok(config);
                }
            }
        }
    }
    Err(ResolveError::NotInConfigDir {
        network: network.clone(),
        network_name: network.name.clone(),
        dir: dir.to_owned(),
    })
}

/// `namespaceIsolation` and `globalNamespaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Isolation {
    pub enabled: bool,
    pub global_namespaces: BTreeSet<String>,
}

impl Isolation {
    /// `global_namespaces` is the comma-separated setting; when given it replaces the
    /// default (`default`) entirely.
    pub fn new(enabled: bool, global_namespaces: Option<&str>) -> Self {
        let globals = global_namespaces.unwrap_or("default");
        Self {
            enabled,
            global_namespaces: globals
                .split(',')
                .map(str::trim)
                .filter(|ns| !ns.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Whether a pod in `pod_namespace` may use `network` (a secondary network; the cluster
    /// and default networks are not checked).
    pub fn check(&self, pod_namespace: &str, network: &NetworkRef) -> Result<(), ResolveError> {
        if !self.enabled
            || network.namespace == pod_namespace
            || self.global_namespaces.contains(&network.namespace)
        {
            return Ok(());
        }
        Err(ResolveError::Isolation {
            pod_namespace: pod_namespace.to_owned(),
            target_namespace: network.namespace.clone(),
            network: network.clone(),
            globals: self
                .global_namespaces
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(","),
        })
    }
}

/// The devices the device plugin allocated to a pod, by resource name; each attachment to a
/// NAD with a resourceName takes the next one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceAllocations(BTreeMap<String, Vec<String>>);

impl DeviceAllocations {
    pub fn new(by_resource: BTreeMap<String, Vec<String>>) -> Self {
        Self(by_resource)
    }

    /// The device for `network`: the pod's explicit `deviceID` wins, then the resource's next
    /// device. None when the NAD names no resource.
    pub fn take(
        &mut self,
        network: &ResolvedNetwork,
        requested: Option<&str>,
    ) -> Result<Option<String>, ResolveError> {
        if let Some(device) = requested {
            return Ok(Some(device.to_owned()));
        }
        let Some(resource) = &network.resource_name else {
            return Ok(None);
        };
        let devices = self
            .0
            .get_mut(resource)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| ResolveError::NoDevice {
                network: network.network.clone(),
                resource: resource.clone(),
            })?;
        Ok(Some(devices.remove(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nad(reference: &str, config: &str) -> NadSpec {
        NadSpec {
            network: reference.parse().unwrap(),
            config: config.into(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn inline_config_without_name_gets_the_nad_name() {
        let resolved = resolve(
            &nad(
                "default/macvlan-conf",
                r#"{"cniVersion":"0.3.0","type":"macvlan","master":"ens3"}"#,
            ),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(resolved.config.name, "macvlan-conf");
        let named = resolve(
            &nad(
                "default/x",
                r#"{"cniVersion":"1.0.0","name":"own","type":"bridge"}"#,
            ),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(named.config.name, "own");
    }

    #[test]
    fn bad_inline_config_names_the_network_and_field() {
        let err = resolve(
            &nad("dev/broken", r#"{"cniVersion":"1.0.0"}"#),
            Path::new("/nonexistent"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("dev/broken") && err.contains("\"type\""),
            "{err}"
        );
    }

    #[test]
    fn config_less_nad_is_found_by_name_conflist_first() {
        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, text: &str| std::fs::write(dir.path().join(file), text).unwrap();
        write(
            "10-a.conf",
            r#"{"cniVersion":"1.0.0","name":"sriov-net","type":"from-conf"}"#,
        );
        write(
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"sriov-net","plugins":[{"type":"from-conflist"}]}"#,
        );
        write("30-c.json", "not json at all");
        write(
            "40-d.conf",
            r#"{"cniVersion":"1.0.0","name":"other","type":"x"}"#,
        );
        let resolved = resolve(&nad("dev/sriov-net", ""), dir.path()).unwrap();
        assert_eq!(resolved.config.plugins[0].plugin_type(), "from-conflist");
        let other = resolve(&nad("dev/other", " "), dir.path()).unwrap();
        assert_eq!(other.config.plugins[0].plugin_type(), "x");
        let err = resolve(&nad("dev/missing", ""), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dev/missing") && err.contains("\"missing\""),
            "{err}"
        );
    }

    #[test]
    fn isolation_allows_own_and_global_namespaces_only() {
        let isolation = Isolation::new(true, None);
        let target: NetworkRef = "privileged/macvlan-conf".parse().unwrap();
        let err = isolation
            .check("development", &target)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"development\"") && err.contains("\"privileged\""),
            "{err}"
        );
        isolation
            .check("development", &"default/macvlan-conf".parse().unwrap())
            .unwrap();
        isolation
            .check("development", &"development/macvlan-conf".parse().unwrap())
            .unwrap();
        Isolation::new(false, None)
            .check("development", &target)
            .unwrap();
    }

    #[test]
    fn explicit_global_namespaces_replace_the_default() {
        let isolation = Isolation::new(true, Some("shared, privileged"));
        isolation
            .check("dev", &"privileged/x".parse().unwrap())
            .unwrap();
        assert!(isolation
            .check("dev", &"default/x".parse().unwrap())
            .is_err());
    }

    #[test]
    fn resource_name_gives_the_next_allocated_device() {
        let mut spec = nad("dev/sriov", r#"{"cniVersion":"1.0.0","type":"sriov"}"#);
        spec.annotations
            .insert(RESOURCE_NAME_ANNOTATION.into(), "intel.com/sriov".into());
        let resolved = resolve(&spec, Path::new("/nonexistent")).unwrap();
        let mut devices = DeviceAllocations::new(BTreeMap::from([(
            "intel.com/sriov".to_owned(),
            vec!["0000:03:00.1".to_owned(), "0000:03:00.2".to_owned()],
        )]));
        assert_eq!(
            devices.take(&resolved, None).unwrap().as_deref(),
            Some("0000:03:00.1")
        );
        assert_eq!(
            devices
                .take(&resolved, Some("explicit"))
                .unwrap()
                .as_deref(),
            Some("explicit")
        );
        assert_eq!(
            devices.take(&resolved, None).unwrap().as_deref(),
            Some("0000:03:00.2")
        );
        let err = devices.take(&resolved, None).unwrap_err().to_string();
        assert!(err.contains("intel.com/sriov"), "{err}");
    }
}
