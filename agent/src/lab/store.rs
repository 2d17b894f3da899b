//! The lab's manifest store: the directory the agents watch (`--cluster dir:STORE`), one
//! object per file. `lab up` copies the user's directory into it, so the agents' writes
//! (network-status) never touch the user's files, and `lab apply`/`lab delete` replace or
//! remove one object's file.
use std::path::{Path, PathBuf};

use netwarden_cni::status::{parse_network_status, NetworkStatus, NETWORK_STATUS_ANNOTATION};
use serde_json::Value;

use super::spec::{Manifest, ObjectKey, PodName};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("lab store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lab store {}: {problem}", path.display())]
    Bad { path: PathBuf, problem: String },
}

fn file(store: &Path, key: &ObjectKey) -> PathBuf {
    store.join(key.file_name())
}

fn read(path: &Path) -> Result<Option<Value>, StoreError> {
    match std::fs::read(path) {
        Ok(text) => serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| StoreError::Bad {
                path: path.to_owned(),
                problem: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `manifest` (replacing the object's previous version). A pod keeps the
/// network-status its agent wrote: that is the pod's status, not part of what the user
/// applies.
pub fn write(store: &Path, manifest: &Manifest) -> Result<(), StoreError> {
    let path = file(store, &manifest.key);
    let mut value = manifest.value.clone();
    let status = read(&path)?.and_then(|old| {
        old.pointer("/metadata/annotations")?
            .get(NETWORK_STATUS_ANNOTATION)
            .cloned()
    });
    if let Some(status) = status {
        let metadata = value["metadata"]
            .as_object_mut()
            .expect("manifest metadata is an object");
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations
                .entry(NETWORK_STATUS_ANNOTATION)
                .or_insert(status);
        }
    }
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(store).map_err(io)?;
    // Written beside and renamed: the agents never read half a file (hidden names are
    // not manifests to them).
    let temporary = store.join(format!(".{}.tmp", manifest.key.file_name()));
    let text = serde_json::to_vec_pretty(&value).expect("JSON value serializes");
    std::fs::write(&temporary, text).map_err(io)?;
    std::fs::rename(&temporary, &path).map_err(io)
}

/// Removes the object's file; a missing one is fine.
pub fn remove(store: &Path, key: &ObjectKey) -> Result<(), StoreError> {
    let path = file(store, key);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::Io { path, source: e })
        }
        _ => Ok(()),
    }
}

/// Whether the store holds the object.
pub fn contains(store: &Path, key: &ObjectKey) -> bool {
    file(store, key).exists()
}

fn pod_key(pod: &PodName) -> ObjectKey {
    ObjectKey {
        kind: "Pod".into(),
        namespace: Some(pod.namespace.clone()),
        name: pod.name.clone(),
    }
}

/// The network-status the pod's agent wrote (empty before it wrote any).
pub fn network_status(store: &Path, pod: &PodName) -> Result<Vec<NetworkStatus>, StoreError> {
    let path = file(store, &pod_key(pod));
    let Some(value) = read(&path)? else {
        return Ok(Vec::new());
    };
    match value
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(NETWORK_STATUS_ANNOTATION))
        .and_then(Value::as_str)
    {
        None => Ok(Vec::new()),
        Some(text) => parse_network_status(text).map_err(|e| StoreError::Bad {
            path,
            problem: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(labels: Value) -> Manifest {
        Manifest {
            key: pod_key(&"x/a".parse().unwrap()),
            value: json!({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "a", "namespace": "x", "labels": labels}}),
        }
    }

    #[test]
    fn a_reapplied_pod_keeps_its_network_status() {
        let dir = tempfile::tempdir().unwrap();
        let name: PodName = "x/a".parse().unwrap();
        let mut first = pod(json!({"app": "one"}));
        first.value["metadata"]["annotations"] = json!({
            NETWORK_STATUS_ANNOTATION: r#"[{"name": "lab-cluster", "ips": ["10.244.1.5"], "default": true}]"#
        });
        write(dir.path(), &first).unwrap();
        write(dir.path(), &pod(json!({"app": "two"}))).unwrap();
        let status = network_status(dir.path(), &name).unwrap();
        assert_eq!(status[0].ips[0].to_string(), "10.244.1.5");
        let stored: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("pod_x_a.json")).unwrap())
                .unwrap();
        assert_eq!(stored["metadata"]["labels"]["app"], "two");
        remove(dir.path(), &first.key).unwrap();
        remove(dir.path(), &first.key).unwrap();
        assert!(network_status(dir.path(), &name).unwrap().is_empty());
    }
}
