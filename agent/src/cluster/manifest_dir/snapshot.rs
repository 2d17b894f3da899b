//! Everything a directory of manifests describes at one moment, and the events between
//! two such moments.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use super::{
    documents::documents,
    manifest::{self, Parsed},
};
use crate::cluster::{source::SourceError, ClusterEvent, Kind, Object, ObjectKey};

/// An object and the document that describes it.
#[derive(Debug, Clone)]
pub(super) struct Located {
    pub object: Object,
    pub file: PathBuf,
    pub document: usize,
}

#[derive(Debug, Default)]
pub(super) struct Snapshot {
    pub objects: BTreeMap<ObjectKey, Located>,
    /// Files that could not be read or have a bad document.
    pub broken_files: BTreeSet<PathBuf>,
}

/// Whether `path` is a manifest: `.yaml`, `.yml` or `.json`, not hidden (hidden names
/// are the temporary files of atomic rewrites).
pub(super) fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|name| name.to_str())
        .is_none_or(|name| name.starts_with('.'));
    let extension = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(extension, Some("yaml" | "yml" | "json"))
}

/// Reads every manifest under `root` (recursively). Problems are returned beside the
/// snapshot; what could be read is in it.
pub(super) fn load(root: &Path) -> (Snapshot, Vec<SourceError>) {
    let mut snapshot = Snapshot::default();
    let mut problems = Vec::new();
    let mut files = Vec::new();
    if let Err(problem) = manifest_files(root, &mut files) {
        problems.push(problem);
    }
    files.sort();
    for file in files {
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(source) => {
                problems.push(SourceError::Io {
                    path: file.clone(),
                    source,
                });
                snapshot.broken_files.insert(file);
                continue;
            }
        };
        for document in documents(&text) {
            match manifest::parse(&file, &document) {
                Ok(Parsed::Object(object)) => {
                    let key = object.key();
                    let located = Located {
                        object,
                        file: file.clone(),
                        document: document.index,
                    };
                    if let Some(earlier) = snapshot.objects.insert(key.clone(), located) {
                        tracing::warn!(
                            "{key:?} is described twice: {} document {} wins over {} document {}",
                            file.display(),
                            document.index,
                            earlier.file.display(),
                            earlier.document
                        );
                    }
                }
                Ok(Parsed::OtherKind(kind)) => tracing::warn!(
                    "{} document {}: skipping {kind}, not a kind netwarden reads",
                    file.display(),
                    document.index
                ),
                Err(problem) => {
                    problems.push(problem.into());
                    snapshot.broken_files.insert(file.clone());
                }
            }
        }
    }
    (snapshot, problems)
}

fn manifest_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let io = |source| SourceError::Io {
        path: dir.to_owned(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            manifest_files(&path, files)?;
        } else if is_manifest(&path) {
            files.push(path);
        }
    }
    Ok(())
}

/// The first events of a watch: every kind listed in full.
pub(super) fn resyncs(snapshot: &Snapshot) -> Vec<ClusterEvent> {
    [
        Kind::Pod,
        Kind::Namespace,
        Kind::NetworkAttachmentDefinition,
        Kind::MultiNetworkPolicy,
        Kind::NetworkPolicy,
    ]
    .into_iter()
    .map(|kind| {
        let objects = snapshot
            .objects
            .iter()
            .filter(|(key, _)| key.kind == kind)
            .map(|(_, located)| located.object.clone())
            .collect();
        ClusterEvent::Resynced(kind, objects)
    })
    .collect()
}

/// The events from `previous` to `next`. An object whose file is broken in `next` is
/// kept as it was (moved into `next`): a half-edited file does not delete what it held.
pub(super) fn changes(previous: &Snapshot, next: &mut Snapshot) -> Vec<ClusterEvent> {
    for (key, located) in &previous.objects {
        if next.broken_files.contains(&located.file) && !next.objects.contains_key(key) {
            next.objects.insert(key.clone(), located.clone());
        }
    }
    let gone = previous
        .objects
        .keys()
        .filter(|key| !next.objects.contains_key(*key))
        .map(|key| ClusterEvent::Deleted(key.clone()));
    let applied = next
        .objects
        .iter()
        .filter(|(key, located)| {
            previous
                .objects
                .get(*key)
                .is_none_or(|before| before.object != located.object)
        })
        .map(|(_, located)| ClusterEvent::Applied(located.object.clone()));
    gone.chain(applied).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_visible_yaml_and_json_files() {
        for (path, expected) in [
            ("lab/pods.yaml", true),
            ("lab/pods.yml", true),
            ("lab/ns.json", true),
            ("lab/README.md", false),
            ("lab/.pods.yaml.42.netwarden-tmp", false),
            ("lab/.hidden.yaml", false),
            ("lab/pods.yaml~", false),
        ] {
            assert_eq!(is_manifest(Path::new(path)), expected, "{path}");
        }
    }
}
