//! Everything a directory of manifests describes, kept per file so that a change re-reads
//! only the files it touched, and the events between two such moments.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
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

/// What changed on disk since the last update.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Changed {
    /// Files or directories created, written, renamed or removed.
    pub paths: BTreeSet<PathBuf>,
    /// Changes may have been missed (the watch overflowed or failed): read everything.
    pub everything: bool,
}

#[derive(Debug, Default)]
pub(super) struct Snapshot {
    /// What each manifest file held when it was last read, in document order.
    files: BTreeMap<PathBuf, Vec<Located>>,
    /// The files describing each object: when several do, the last (in path order) wins.
    holders: BTreeMap<ObjectKey, BTreeSet<PathBuf>>,
    /// Every object, from the document that wins.
    pub objects: BTreeMap<ObjectKey, Located>,
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

impl Snapshot {
    /// Reads every manifest under `root` (recursively). Problems are returned beside the
    /// snapshot; what could be read is in it.
    pub fn load(root: &Path) -> (Self, Vec<SourceError>) {
        let mut snapshot = Self::default();
        let everything = Changed {
            paths: BTreeSet::new(),
            everything: true,
        };
        let (_events, problems) = snapshot.update(root, &everything);
        (snapshot, problems)
    }

    /// Re-reads what `changed` names (every file under `root` when it says everything) and
    /// returns the events from the previous state, deletions first. A file that is gone
    /// removes its objects; a file with a broken document keeps the objects it held that
    /// are not read again (a half-edited file does not delete what it held).
    pub fn update(
        &mut self,
        root: &Path,
        changed: &Changed,
    ) -> (Vec<ClusterEvent>, Vec<SourceError>) {
        let mut problems = Vec::new();
        let scopes: Vec<&Path> = if changed.everything {
            vec![root]
        } else {
            changed.paths.iter().map(PathBuf::as_path).collect()
        };
        let mut present = BTreeSet::new();
        let mut gone = BTreeSet::new();
        for scope in scopes {
            match manifest_files(scope, &mut present) {
                Ok(()) => {}
                // A removed file or directory; the root itself is expected, though.
                Err(error) if error.kind() == io::ErrorKind::NotFound && scope != root => {}
                Err(source) => problems.push(SourceError::Io {
                    path: scope.to_owned(),
                    source,
                }),
            }
            gone.extend(
                self.files
                    .keys()
                    .filter(|file| file.starts_with(scope) && !present.contains(*file))
                    .cloned(),
            );
        }
        let mut touched = BTreeSet::new();
        for file in gone {
            touched.extend(self.replace(&file, None));
        }
        for file in present {
            let read = read_file(&file, &mut problems);
            let kept = self.files.get(&file).filter(|_| read.broken);
            let mut objects = read.objects;
            if let Some(before) = kept {
                let read_again: BTreeSet<ObjectKey> =
                    objects.iter().map(|l| l.object.key()).collect();
                objects.extend(
                    before
                        .iter()
                        .filter(|l| !read_again.contains(&l.object.key()))
                        .cloned(),
                );
            }
            touched.extend(self.replace(&file, Some(objects)));
        }
        (self.settle(touched), problems)
    }

    /// Sets what `file` holds (None: the file is gone); returns the keys it held or holds.
    fn replace(&mut self, file: &Path, objects: Option<Vec<Located>>) -> BTreeSet<ObjectKey> {
        let before = match objects {
            Some(objects) => self.files.insert(file.to_owned(), objects),
            None => self.files.remove(file),
        };
        let mut keys: BTreeSet<ObjectKey> = before
            .unwrap_or_default()
            .iter()
            .map(|l| l.object.key())
            .collect();
        for key in &keys {
            if let Some(holders) = self.holders.get_mut(key) {
                holders.remove(file);
            }
        }
        for located in self.files.get(file).into_iter().flatten() {
            let key = located.object.key();
            self.holders
                .entry(key.clone())
                .or_default()
                .insert(file.to_owned());
            keys.insert(key);
        }
        keys
    }

    /// Brings `objects` up to date for `keys`, returning the events that makes.
    fn settle(&mut self, keys: BTreeSet<ObjectKey>) -> Vec<ClusterEvent> {
        let mut deleted = Vec::new();
        let mut applied = Vec::new();
        for key in keys {
            match self.winner(&key) {
                None => {
                    self.holders.remove(&key);
                    if self.objects.remove(&key).is_some() {
                        deleted.push(ClusterEvent::Deleted(key));
                    }
                }
                Some(located) => {
                    let differs = self
                        .objects
                        .get(&key)
                        .is_none_or(|before| before.object != located.object);
                    if differs {
                        applied.push(ClusterEvent::Applied(located.object.clone()));
                    }
                    self.objects.insert(key, located);
                }
            }
        }
        deleted.extend(applied);
        deleted
    }

    /// The document that describes `key`: the last one, in the last file.
    fn winner(&self, key: &ObjectKey) -> Option<Located> {
        let holders = self.holders.get(key)?;
        let describing = |file: &PathBuf| {
            self.files[file]
                .iter()
                .filter(|l| l.object.key() == *key)
                .collect::<Vec<_>>()
        };
        let all: Vec<&Located> = holders.iter().flat_map(describing).collect();
        let (winner, earlier) = all.split_last()?;
        if let Some(earlier) = earlier.last() {
            tracing::warn!(
                "{key:?} is described twice: {} document {} wins over {} document {}",
                winner.file.display(),
                winner.document,
                earlier.file.display(),
                earlier.document
            );
        }
        Some((*winner).clone())
    }

    /// Where each pod is described.
    pub fn pods(&self) -> impl Iterator<Item = (&ObjectKey, &Located)> {
        self.objects.iter().filter(|(key, _)| key.kind == Kind::Pod)
    }
}

/// One file as read: its objects, and whether something in it could not be read.
struct Read {
    objects: Vec<Located>,
    broken: bool,
}

fn read_file(file: &Path, problems: &mut Vec<SourceError>) -> Read {
    let mut read = Read {
        objects: Vec::new(),
        broken: false,
    };
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        // Removed between listing and reading: nothing to hold.
        Err(source) if source.kind() == io::ErrorKind::NotFound => return read,
        Err(source) => {
            problems.push(SourceError::Io {
                path: file.to_owned(),
                source,
            });
            read.broken = true;
            return read;
        }
    };
    for document in documents(&text) {
        match manifest::parse(file, &document) {
            Ok(Parsed::Object(object)) => read.objects.push(Located {
                object,
                file: file.to_owned(),
                document: document.index,
            }),
            Ok(Parsed::OtherKind(kind)) => tracing::warn!(
                "{} document {}: skipping {kind}, not a kind netwarden reads",
                file.display(),
                document.index
            ),
            Err(problem) => {
                problems.push(problem.into());
                read.broken = true;
            }
        }
    }
    read
}

/// The manifests at or under `path` (a file or a directory), added to `files`.
fn manifest_files(path: &Path, files: &mut BTreeSet<PathBuf>) -> io::Result<()> {
    let metadata = fs::metadata(path)?;
    if !metadata.is_dir() {
        if is_manifest(path) {
            files.insert(path.to_owned());
        }
        return Ok(());
    }
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        match manifest_files(&entry.path(), files) {
            // Removed while listing: a later notification covers it.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            other => other?,
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

    fn namespace(name: &str) -> String {
        format!("{{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {{\"name\": \"{name}\", \"labels\": {{\"v\": \"1\"}}}}}}\n")
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: Kind::Namespace,
            namespace: None,
            name: name.to_owned(),
        }
    }

    fn names(events: &[ClusterEvent]) -> Vec<String> {
        events
            .iter()
            .map(|event| match event {
                ClusterEvent::Applied(object) => format!("applied {}", object.key().name),
                ClusterEvent::Deleted(key) => format!("deleted {}", key.name),
                ClusterEvent::Resynced(kind, _) => format!("resynced {kind:?}"),
            })
            .collect()
    }

    fn only(paths: &[&Path]) -> Changed {
        Changed {
            paths: paths.iter().map(|p| p.to_path_buf()).collect(),
            everything: false,
        }
    }

    #[test]
    fn an_update_reads_only_the_files_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        fs::write(&a, namespace("a")).unwrap();
        fs::write(&b, namespace("b")).unwrap();
        let (mut snapshot, problems) = Snapshot::load(dir.path());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(snapshot.objects.len(), 2);

        // b changes on disk but only a is named: b's change waits for its notification.
        fs::write(&a, namespace("a").replace("\"1\"", "\"2\"")).unwrap();
        fs::write(&b, namespace("b2")).unwrap();
        let (events, _) = snapshot.update(dir.path(), &only(&[&a]));
        assert_eq!(names(&events), ["applied a"]);
        let (events, _) = snapshot.update(dir.path(), &only(&[&b]));
        assert_eq!(names(&events), ["deleted b", "applied b2"]);
        // Naming an unchanged file is no event.
        let (events, _) = snapshot.update(dir.path(), &only(&[&a]));
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn removed_files_and_directories_remove_their_objects_and_new_directories_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("more");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("x.yaml"), namespace("x")).unwrap();
        fs::write(dir.path().join("y.yaml"), namespace("y")).unwrap();
        let (mut snapshot, _) = Snapshot::load(dir.path());

        fs::remove_dir_all(&sub).unwrap();
        let (events, problems) = snapshot.update(dir.path(), &only(&[&sub]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(names(&events), ["deleted x"]);

        let new = dir.path().join("new");
        fs::create_dir(&new).unwrap();
        fs::write(new.join("z.yaml"), namespace("z")).unwrap();
        fs::remove_file(dir.path().join("y.yaml")).unwrap();
        let (events, _) = snapshot.update(dir.path(), &only(&[&new, &dir.path().join("y.yaml")]));
        assert_eq!(names(&events), ["deleted y", "applied z"]);
        assert_eq!(snapshot.objects[&key("z")].file, new.join("z.yaml"));
    }

    #[test]
    fn a_broken_file_keeps_what_it_held_and_the_last_file_wins_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        fs::write(&a, format!("{}---\n{}", namespace("one"), namespace("two"))).unwrap();
        let (mut snapshot, _) = Snapshot::load(dir.path());

        fs::write(&a, format!("{}---\nkind: [", namespace("one"))).unwrap();
        let (events, problems) = snapshot.update(dir.path(), &only(&[&a]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(events.is_empty(), "{events:?}");
        assert!(snapshot.objects.contains_key(&key("two")));

        // b describes `one` too, differently: b comes later, so it wins; removing it
        // brings a's back.
        fs::write(&b, namespace("one").replace("\"1\"", "\"b\"")).unwrap();
        let (events, _) = snapshot.update(dir.path(), &only(&[&b]));
        assert_eq!(names(&events), ["applied one"]);
        assert_eq!(snapshot.objects[&key("one")].file, b);
        fs::remove_file(&b).unwrap();
        let (events, _) = snapshot.update(dir.path(), &only(&[&b]));
        assert_eq!(names(&events), ["applied one"]);
        assert_eq!(snapshot.objects[&key("one")].file, a);

        // Everything: the same as a fresh load.
        fs::write(&a, namespace("one")).unwrap();
        let everything = Changed {
            paths: BTreeSet::new(),
            everything: true,
        };
        let (events, problems) = snapshot.update(dir.path(), &everything);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(names(&events), ["deleted two"]);
    }
}
