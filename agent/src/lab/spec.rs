//! What a lab is made of, read from ordinary Kubernetes manifests: every object of a
//! directory (or one file), the pods with their nodes and ports, and the `master`
//! interfaces the NetworkAttachmentDefinitions name.
//!
//! Pure apart from reading the files: the rest of the lab turns this into namespaces,
//! links and processes.
use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not YAML/JSON manifests: {problem}", path.display())]
    Parse { path: PathBuf, problem: String },
    #[error("{}: document {document}: field {field}: {problem}", path.display())]
    Field {
        path: PathBuf,
        document: usize,
        field: String,
        problem: String,
    },
    #[error("{}: holds no manifests", path.display())]
    Empty { path: PathBuf },
}

/// Names one object as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: String,
    /// None for cluster-scoped kinds (Namespace).
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// The file holding this object in the lab's store: one object per file, so one can
    /// be replaced or removed without touching the others.
    pub fn file_name(&self) -> String {
        let kind = self.kind.to_ascii_lowercase();
        match &self.namespace {
            Some(ns) => format!("{kind}_{ns}_{}.json", self.name),
            None => format!("{kind}_{}.json", self.name),
        }
    }
}

/// One manifest document as an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub key: ObjectKey,
    pub value: Value,
}

/// A pod, named `namespace/name`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for PodName {
    type Err = String;

    /// `namespace/name`, or `name` in `default` (as kubectl reads it).
    fn from_str(given: &str) -> Result<Self, String> {
        let (namespace, name) = given.split_once('/').unwrap_or(("default", given));
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(format!(
                "{given:?} is not a pod name (`namespace/name` or `name`)"
            ));
        }
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

impl TryFrom<String> for PodName {
    type Error = String;
    fn try_from(given: String) -> Result<Self, String> {
        given.parse()
    }
}

impl From<PodName> for String {
    fn from(pod: PodName) -> String {
        pod.to_string()
    }
}

/// A port a pod's container declares.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ContainerPort {
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(given: &str) -> Result<Self, String> {
        match given.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Self::Tcp),
            "UDP" => Ok(Self::Udp),
            _ => Err(format!(
                "{given:?} is not a protocol the lab serves (TCP or UDP)"
            )),
        }
    }
}

/// What the lab needs to know of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub pod: PodName,
    /// `spec.nodeName`, when the manifest names one.
    pub node: Option<String>,
    /// TCP and UDP container ports (SCTP ones are not served).
    pub ports: Vec<ContainerPort>,
}

/// Reads every manifest in `path`: a file, or a directory's `.yaml`/`.yml`/`.json` files
/// (recursively, sorted, hidden files skipped).
pub fn load(path: &Path) -> Result<Vec<Manifest>, SpecError> {
    let mut files = Vec::new();
    collect_files(path, &mut files)?;
    files.sort();
    let mut manifests = Vec::new();
    for file in files {
        manifests.extend(load_file(&file)?);
    }
    if manifests.is_empty() {
        return Err(SpecError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(manifests)
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), SpecError> {
    let read = |source| SpecError::Read {
        path: path.to_owned(),
        source,
    };
    if !path.metadata().map_err(read)?.is_dir() {
        files.push(path.to_owned());
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(read)? {
        let entry = entry.map_err(read)?.path();
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or(".");
        let manifest = matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        if name.starts_with('.') {
            continue;
        }
        if entry.is_dir() {
            collect_files(&entry, files)?;
        } else if manifest {
            files.push(entry);
        }
    }
    Ok(())
}

/// The objects of one (possibly multi-document) file.
pub fn load_file(path: &Path) -> Result<Vec<Manifest>, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_owned(),
        source,
    })?;
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| SpecError::Parse {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
    documents
        .into_iter()
        .filter(|document| !document.is_null())
        .enumerate()
        .map(|(index, value)| manifest(path, index + 1, value))
        .collect()
}

fn manifest(path: &Path, document: usize, value: Value) -> Result<Manifest, SpecError> {
    let field = |field: &str, problem: &str| SpecError::Field {
        path: path.to_owned(),
        document,
        field: field.into(),
        problem: problem.into(),
    };
    let text = |pointer: &str, field_name: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| field(field_name, "missing or not a string"))
    };
    let kind = text("/kind", "kind")?;
    text("/apiVersion", "apiVersion")?;
    let name = text("/metadata/name", "metadata.name")?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(field("metadata.name", "not a Kubernetes object name"));
    }
    let namespace = if kind == "Namespace" {
        None
    } else {
        Some(text("/metadata/namespace", "metadata.namespace").unwrap_or_else(|_| "default".into()))
    };
    let mut value = value;
    if let Some(ns) = &namespace {
        // Stored with its namespace, as the API server would: the store's files stand alone.
        value["metadata"]["namespace"] = ns.clone().into();
    }
    let manifest = Manifest {
        key: ObjectKey {
            kind,
            namespace,
            name,
        },
        value,
    };
    if manifest.key.kind == "Pod" {
        pod_spec(&manifest).map_err(|(f, problem)| field(&f, &problem))?;
    }
    Ok(manifest)
}

/// The pod in `manifest`, or (field, problem).
pub fn pod_spec(manifest: &Manifest) -> Result<PodSpec, (String, String)> {
    let pod = PodName {
        namespace: manifest.key.namespace.clone().unwrap_or_default(),
        name: manifest.key.name.clone(),
    };
    let node = match manifest.value.pointer("/spec/nodeName") {
        None | Some(Value::Null) => None,
        Some(Value::String(node)) if !node.is_empty() => Some(node.clone()),
        Some(_) => return Err(("spec.nodeName".into(), "not a node name".into())),
    };
    let mut ports = BTreeSet::new();
    let containers = manifest
        .value
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (c, container) in containers.iter().enumerate() {
        let declared = container
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (p, port) in declared.iter().enumerate() {
            let at = |f: &str| format!("spec.containers[{c}].ports[{p}].{f}");
            let number = port
                .get("containerPort")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| (at("containerPort"), "not a port number (1-65535)".into()))?;
            let protocol = match port.get("protocol").and_then(Value::as_str) {
                None => Protocol::Tcp,
                Some("SCTP") => continue,
                Some(given) => given.parse().map_err(|problem| (at("protocol"), problem))?,
            };
            ports.insert(ContainerPort {
                protocol,
                port: number,
            });
        }
    }
    Ok(PodSpec {
        pod,
        node,
        ports: ports.into_iter().collect(),
    })
}

/// The pods among `manifests`.
pub fn pods(manifests: &[Manifest]) -> Vec<PodSpec> {
    manifests
        .iter()
        .filter(|m| m.key.kind == "Pod")
        .filter_map(|m| pod_spec(m).ok())
        .collect()
}

/// The nodes a lab made of `pods` has: every node a pod names, or `node-1` and `node-2`
/// when none does.
pub fn nodes(pods: &[PodSpec]) -> Vec<String> {
    let named: BTreeSet<String> = pods.iter().filter_map(|p| p.node.clone()).collect();
    if named.is_empty() {
        vec!["node-1".into(), "node-2".into()]
    } else {
        named.into_iter().collect()
    }
}

/// Every `master` interface a NetworkAttachmentDefinition's CNI config names (at the top
/// or in a plugin of a list), sorted.
pub fn masters(manifests: &[Manifest]) -> BTreeSet<String> {
    let mut masters = BTreeSet::new();
    for nad in manifests
        .iter()
        .filter(|m| m.key.kind == "NetworkAttachmentDefinition")
    {
        let Some(config) = nad
            .value
            .pointer("/spec/config")
            .and_then(Value::as_str)
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
        else {
            continue;
        };
        let plugins = config
            .get("plugins")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![config.clone()]);
        masters.extend(
            plugins
                .iter()
                .filter_map(|p| p.get("master").and_then(Value::as_str))
                .map(str::to_owned),
        );
    }
    masters
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Manifest>, SpecError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("objects.yaml");
        std::fs::write(&file, text).unwrap();
        load(dir.path())
    }

    const SCENARIO: &str = r#"
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: macvlan-conf}
spec:
  config: '{"cniVersion": "0.3.0", "type": "macvlan", "master": "ens3", "mode": "bridge"}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: chained, namespace: x}
spec:
  config: '{"cniVersion": "1.0.0", "name": "c", "plugins": [{"type": "ipvlan", "master": "eth0"}, {"type": "tuning"}]}'
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x}
spec:
  nodeName: node-b
  containers:
  - name: c
    ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}, {containerPort: 9, protocol: SCTP}]
---
apiVersion: v1
kind: Pod
metadata: {name: b}
spec: {containers: [{name: c}]}
"#;

    #[test]
    fn reads_pods_nodes_ports_and_masters() {
        let manifests = parse(SCENARIO).unwrap();
        assert_eq!(manifests.len(), 4);
        assert_eq!(manifests[0].key.namespace.as_deref(), Some("default"));
        let pods = pods(&manifests);
        assert_eq!(pods[0].pod.to_string(), "x/a");
        assert_eq!(pods[0].node.as_deref(), Some("node-b"));
        assert_eq!(
            pods[0].ports,
            [
                ContainerPort {
                    protocol: Protocol::Tcp,
                    port: 80
                },
                ContainerPort {
                    protocol: Protocol::Udp,
                    port: 80
                },
            ]
        );
        assert_eq!(pods[1].pod.to_string(), "default/b");
        assert_eq!(nodes(&pods), ["node-b"]);
        assert_eq!(
            masters(&manifests).into_iter().collect::<Vec<_>>(),
            ["ens3", "eth0"]
        );
    }

    #[test]
    fn without_named_nodes_there_are_two() {
        assert_eq!(nodes(&[]), ["node-1", "node-2"]);
    }

    #[test]
    fn bad_documents_name_the_field() {
        let error = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, ports: [{containerPort: 70000}]}]\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("spec.containers[0].ports[0].containerPort"),
            "{error}"
        );
        let error = parse("apiVersion: v1\nkind: Pod\nmetadata: {}\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("metadata.name"), "{error}");
    }

    #[test]
    fn pod_names_default_to_the_default_namespace() {
        assert_eq!("a".parse::<PodName>().unwrap().to_string(), "default/a");
        assert_eq!("x/a".parse::<PodName>().unwrap().to_string(), "x/a");
        assert!("x/".parse::<PodName>().is_err());
    }
}
