//! The durable per-sandbox cache: one JSON file per container ID. Before the first delegate
//! runs, the record (every delegate, no result yet) is written durably (temporary file,
//! fsync, rename, fsync of the directory), so a DEL can reach every delegate after an
//! agent restart, a reboot or the NAD's deletion. Once the delegates are done, the record
//! with their results replaces it atomically, without waiting for the directory: should a
//! crash lose that rename, the durable record still names every delegate. Removed only
//! after a DEL in which every delegate succeeded.
use std::{
    fs::{File, OpenOptions},
    io::Write,
    net::IpAddr,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use crate::{
    delegate::Delegate,
    protocol::{CniArgs, CniResult, ContainerId},
    InterfaceName,
};

/// Bumped when the record's shape changes incompatibly.
const FORMAT: u32 = 1;

/// Everything a DEL needs for one sandbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub format: u32,
    pub container_id: ContainerId,
    pub netns: Option<PathBuf>,
    /// CNI_ARGS the delegates got on ADD (and get again on DEL).
    pub args: CniArgs,
    pub cni_path: Vec<PathBuf>,
    pub attachments: Vec<AttachmentRecord>,
}

/// One attachment: the tuple (container ID, network, ifname) and its full delegate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// `namespace/name` of the NAD, or the cluster network's CNI name.
    pub network: String,
    pub ifname: InterfaceName,
    /// The cluster (default) network: network-status marks it `default: true`.
    pub is_default: bool,
    /// Gateways of the `default-route` request.
    #[serde(default)]
    pub default_route: Vec<IpAddr>,
    pub delegate: Delegate,
    /// None until the delegate's ADD succeeded.
    pub result: Option<CniResult>,
}

impl SandboxRecord {
    pub fn new(
        container_id: ContainerId,
        netns: Option<PathBuf>,
        args: CniArgs,
        cni_path: Vec<PathBuf>,
        attachments: Vec<AttachmentRecord>,
    ) -> Self {
        Self {
            format: FORMAT,
            container_id,
            netns,
            args,
            cni_path,
            attachments,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("cache {path} is corrupt ({problem}); refusing to guess what the sandbox holds: inspect or remove it by hand after releasing its resources")]
    Corrupt { path: PathBuf, problem: String },
}

/// Whether a record replacement waits until the rename itself is on disk.
#[derive(Clone, Copy)]
enum Durability {
    Durable,
    Atomic,
}

/// The cache directory (e.g. /var/lib/netwarden/cache).
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<id>.json`; the ContainerId type keeps this inside `dir`.
    pub fn path(&self, id: &ContainerId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Replaces the sandbox's record atomically and durably: once this returns, the
    /// record survives a crash.
    pub fn write(&self, record: &SandboxRecord) -> Result<(), CacheError> {
        self.replace(record, Durability::Durable)
    }

    /// Replaces the sandbox's record atomically: a reader (even after a crash) finds the
    /// previous record or this one, whole. For updates of a record [`write`] made durable.
    ///
    /// [`write`]: Self::write
    pub fn update(&self, record: &SandboxRecord) -> Result<(), CacheError> {
        self.replace(record, Durability::Atomic)
    }

    fn replace(&self, record: &SandboxRecord, durability: Durability) -> Result<(), CacheError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = self.path(&record.container_id);
        let io = |action| {
            let path = path.clone();
            move |source| CacheError::Io {
                path,
                action,
                source,
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io("create the cache directory"))?;
        let temp = self.dir.join(format!(
            ".{}.json.tmp-{}-{}",
            record.container_id,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let bytes = serde_json::to_vec_pretty(record).expect("a record always serializes");
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&bytes)?;
            // Without it, some file systems can show the new name with no data after a crash.
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            match durability {
                Durability::Durable => File::open(&self.dir)?.sync_all(),
                Durability::Atomic => Ok(()),
            }
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(io("write"))
    }

    /// The sandbox's record; None when there is none (never added, or fully deleted).
    pub fn read(&self, id: &ContainerId) -> Result<Option<SandboxRecord>, CacheError> {
        let path = self.path(id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CacheError::Io {
                    path,
                    action: "read",
                    source,
                })
            }
        };
        let record: SandboxRecord =
            serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
                path: path.clone(),
                problem: e.to_string(),
            })?;
        if record.format != FORMAT {
            return Err(CacheError::Corrupt {
                path,
                problem: format!("format {} is not {FORMAT}", record.format),
            });
        }
        if record.container_id != *id {
            return Err(CacheError::Corrupt {
                path,
                problem: format!("it records container {}", record.container_id),
            });
        }
        Ok(Some(record))
    }

    /// Removes the temporary files of writes that never finished (the writer was killed
    /// between creating one and renaming it into place) and returns how many. Only for a
    /// writer starting up: a concurrent write's temporary file would go too.
    pub fn remove_abandoned_writes(&self) -> Result<usize, CacheError> {
        let io = |action| {
            let path = self.dir.clone();
            move |source| CacheError::Io {
                path,
                action,
                source,
            }
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(io("list")(source)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(io("list"))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(".json.tmp-") {
                std::fs::remove_file(entry.path()).map_err(io("remove an abandoned write"))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn remove(&self, id: &ContainerId) -> Result<(), CacheError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CacheError::Io {
                path,
                action: "remove",
                source,
            }),
        }
    }

    /// The container IDs that have a record (for GC). Temporary files and names that are
    /// not container IDs are not records.
    pub fn container_ids(&self) -> Result<Vec<ContainerId>, CacheError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CacheError::Io {
                    path: self.dir.clone(),
                    action: "list",
                    source,
                })
            }
        };
        let mut ids: Vec<ContainerId> = entries
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{delegate::DelegateRequest, protocol::ConfList};

    fn record(id: &str) -> SandboxRecord {
        let config = ConfList::parse(
            r#"{"cniVersion":"0.3.0","type":"macvlan","master":"eth0","ipam":{"type":"host-local"}}"#,
            Some("macvlan-conf"),
        )
        .unwrap();
        SandboxRecord::new(
            id.parse().unwrap(),
            Some("/run/netns/x".into()),
            CniArgs::parse("IgnoreUnknown=true;K8S_POD_NAME=p").unwrap(),
            vec!["/usr/lib/cni".into()],
            vec![AttachmentRecord {
                network: "default/macvlan-conf".into(),
                ifname: "net1".parse().unwrap(),
                is_default: false,
                default_route: vec![],
                delegate: Delegate::new(config, DelegateRequest::default()).unwrap(),
                result: None,
            }],
        )
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let id: ContainerId = "c1".parse().unwrap();
        assert_eq!(cache.read(&id).unwrap(), None);
        assert_eq!(cache.container_ids().unwrap(), []);
        let mut rec = record("c1");
        cache.write(&rec).unwrap();
        assert_eq!(cache.read(&id).unwrap(), Some(rec.clone()));
        rec.attachments[0].result = Some(CniResult::default());
        cache.update(&rec).unwrap();
        assert_eq!(cache.read(&id).unwrap(), Some(rec));
        // Only the record is left: no temporary files.
        let names: Vec<_> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c1.json"]);
        assert_eq!(cache.container_ids().unwrap(), std::slice::from_ref(&id));
        cache.remove(&id).unwrap();
        assert_eq!(cache.read(&id).unwrap(), None);
        cache.remove(&id).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_previous_record_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let rec = record("c2");
        cache.write(&rec).unwrap();
        // A directory where the record should go makes rename fail after the temp write.
        let blocked = Cache::new(dir.path().join("sub"));
        std::fs::create_dir_all(blocked.path(&rec.container_id)).unwrap();
        assert!(blocked.write(&rec).is_err());
        let leftovers: Vec<_> = std::fs::read_dir(blocked.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(cache.read(&rec.container_id).unwrap(), Some(rec));
    }

    #[test]
    fn abandoned_writes_are_removed_and_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        assert_eq!(cache.remove_abandoned_writes().unwrap(), 0);
        let rec = record("c6");
        cache.write(&rec).unwrap();
        std::fs::write(dir.path().join(".c7.json.tmp-4242-0"), b"{\"format\"").unwrap();
        assert_eq!(cache.remove_abandoned_writes().unwrap(), 1);
        let names: Vec<_> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c6.json"]);
        assert_eq!(cache.read(&rec.container_id).unwrap(), Some(rec));
    }

    #[test]
    fn corrupt_or_foreign_records_are_errors_not_absence() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let id: ContainerId = "c3".parse().unwrap();
        std::fs::write(cache.path(&id), b"{\"format\":1, trunc").unwrap();
        let err = cache.read(&id).unwrap_err().to_string();
        assert!(err.contains("c3.json") && err.contains("corrupt"), "{err}");
        let mut other = record("c4");
        other.container_id = "c4".parse().unwrap();
        std::fs::write(cache.path(&id), serde_json::to_vec(&other).unwrap()).unwrap();
        let err = cache.read(&id).unwrap_err().to_string();
        assert!(err.contains("records container c4"), "{err}");
    }

    #[test]
    fn records_with_unsafe_ids_do_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let id: ContainerId = "c5".parse().unwrap();
        let text = serde_json::to_string(&record("c5"))
            .unwrap()
            .replace("\"c5\"", "\"../../etc/x\"");
        std::fs::write(cache.path(&id), text).unwrap();
        let err = cache.read(&id).unwrap_err().to_string();
        assert!(err.contains("../../etc/x"), "{err}");
        assert_eq!(cache.path(&id), dir.path().join("c5.json"));
    }
}
