//! Writing a pod's network-status into its manifest: only the pod's document is
//! re-rendered, the file's other documents stay byte for byte, and the file is replaced
//! atomically (a temporary file beside it, then rename), so a reader never sees half.
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use netwarden_cni::status::{render_network_status, NetworkStatus, NETWORK_STATUS_ANNOTATION};
use serde_json::Value;

use super::{documents::documents, manifest};
use crate::cluster::source::{PodRef, SourceError};

/// Sets the annotation on `pod`, described by document `index` of `file`.
pub(super) fn write_network_status(
    file: &Path,
    index: usize,
    pod: &PodRef,
    entries: &[NetworkStatus],
) -> Result<(), SourceError> {
    let io = |source| SourceError::Io {
        path: file.to_owned(),
        source,
    };
    let text = fs::read_to_string(file).map_err(io)?;
    let docs = documents(&text);
    let not_found = || SourceError::PodNotFound {
        pod: pod.clone(),
        dir: file.to_owned(),
    };
    let document = docs
        .iter()
        .find(|d| d.index == index)
        .ok_or_else(not_found)?;
    let mut value = manifest::parse_value(file, document)?;
    if !describes(&value, pod) {
        // The file changed since it was read: the pod is no longer where it was.
        return Err(not_found());
    }
    set_annotation(&mut value, render_network_status(entries));
    let rendered = if file.extension().is_some_and(|e| e == "json") {
        serde_json::to_string_pretty(&value)
            .map(|json| json + "\n")
            .map_err(|e| io(e.into()))?
    } else {
        serde_saphyr::to_string(&value).map_err(|e| io(std::io::Error::other(e)))?
    };
    let mut new_text = String::with_capacity(text.len() + rendered.len());
    new_text.push_str(&text[..document.span.start]);
    new_text.push_str(&rendered);
    new_text.push_str(&text[document.span.end..]);
    replace_atomically(file, new_text.as_bytes())
}

fn describes(value: &Value, pod: &PodRef) -> bool {
    let metadata = &value["metadata"];
    value["kind"] == "Pod"
        && metadata["name"] == pod.name.as_str()
        && metadata["namespace"].as_str().unwrap_or("default") == pod.namespace
}

fn set_annotation(pod: &mut Value, rendered: String) {
    let metadata = object_field(pod, "metadata");
    let annotations = object_field(metadata, "annotations");
    annotations[NETWORK_STATUS_ANNOTATION] = Value::String(rendered);
}

/// `value[name]`, made an (empty) object if it is missing or not one.
fn object_field<'a>(value: &'a mut Value, name: &str) -> &'a mut Value {
    let field = &mut value[name];
    if !field.is_object() {
        *field = Value::Object(Default::default());
    }
    field
}

fn replace_atomically(file: &Path, contents: &[u8]) -> Result<(), SourceError> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("manifest");
    let temporary: PathBuf =
        file.with_file_name(format!(".{name}.{}.netwarden-tmp", std::process::id()));
    // A file (or a link planted) at the temporary name is removed, never written
    // through: the new file is created afresh.
    let written = remove_if_present(&temporary)
        .and_then(|()| {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temporary)
        })
        .and_then(|mut out| {
            out.write_all(contents)?;
            out.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, file));
    written.map_err(|source| {
        // Best effort: the temporary name is hidden from loading either way.
        let _ = fs::remove_file(&temporary);
        SourceError::Io {
            path: file.to_owned(),
            source,
        }
    })
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_at_the_temporary_name_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        let manifests = dir.path().join("manifests");
        fs::create_dir(&manifests).unwrap();
        let file = manifests.join("pod.json");
        fs::write(
            &file,
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}"#,
        )
        .unwrap();
        let temporary = manifests.join(format!(".pod.json.{}.netwarden-tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &temporary).unwrap();
        let pod = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
        };
        write_network_status(&file, 1, &pod, &[]).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(fs::symlink_metadata(&file).unwrap().is_file());
        assert!(fs::read_to_string(&file)
            .unwrap()
            .contains(NETWORK_STATUS_ANNOTATION));
        assert!(!temporary.exists());
    }
}
