//! Cluster state from a directory of Kubernetes manifests (`.yaml`, `.yml`, `.json`,
//! multi-document files allowed): the store of the local lab and of `--cluster dir:PATH`.
//! Watched with notify; once a burst of changes settles, only the files they touched are
//! read again, and the difference becomes events.
mod documents;
mod manifest;
mod rewrite;
mod snapshot;

use std::{
    collections::{HashMap, VecDeque},
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex as SyncMutex},
    time::Duration,
};

use futures::stream::{self, BoxStream, StreamExt};
use netwarden_cni::status::NetworkStatus;
use notify::{
    event::{AccessKind, AccessMode},
    EventKind, RecommendedWatcher, RecursiveMode, Watcher,
};
use tokio::{
    sync::{mpsc, Mutex},
    time::Instant,
};

pub use manifest::ManifestError;

use super::{
    source::{ClusterSource, PodRef, SourceError},
    ClusterEvent, Kind, ObjectKey,
};
use snapshot::{Changed, Snapshot};

/// How long the directory must be quiet before the changed files are read: an editor's
/// save or a `kubectl`-style rewrite is several file events.
const SETTLE: Duration = Duration::from_millis(20);

/// The longest a change waits for quiet: a directory that never stops changing (an agent
/// writing network-status for a burst of pods) is still read.
const SETTLE_AT_MOST: Duration = Duration::from_millis(200);

/// Where each pod was last seen (file, document index): kept by the watches for the
/// network-status writer, which checks the document before writing it.
type PodFiles = Arc<SyncMutex<HashMap<ObjectKey, (PathBuf, usize)>>>;

/// A directory of manifests as a cluster source.
#[derive(Clone)]
pub struct DirSource {
    root: PathBuf,
    /// Serialises this process's rewrites of manifest files.
    writing: Arc<Mutex<()>>,
    pod_files: PodFiles,
}

impl DirSource {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            writing: Arc::default(),
            pod_files: PodFiles::default(),
        }
    }
}

impl ClusterSource for DirSource {
    fn events(&self) -> BoxStream<'static, Result<ClusterEvent, SourceError>> {
        let start = Watch::Start(self.root.clone(), Arc::clone(&self.pod_files));
        stream::unfold(start, Watch::next).boxed()
    }

    /// Rewrites the pod's document where a watch last saw it; without a watch, or when
    /// the pod moved since, the directory is read to find it.
    async fn write_network_status(
        &self,
        pod: &PodRef,
        entries: &[NetworkStatus],
    ) -> Result<(), SourceError> {
        let _writing = self.writing.lock().await;
        let key = ObjectKey {
            kind: Kind::Pod,
            namespace: Some(pod.namespace.clone()),
            name: pod.name.clone(),
        };
        let seen = lock(&self.pod_files).get(&key).cloned();
        let (root, pod, entries) = (self.root.clone(), pod.clone(), entries.to_vec());
        blocking(&self.root, move || {
            if let Some((file, document)) = seen {
                match rewrite::write_network_status(&file, document, &pod, &entries) {
                    Err(SourceError::PodNotFound { .. }) => {}
                    Err(SourceError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound => {}
                    written => return written,
                }
            }
            let (snapshot, _problems) = Snapshot::load(&root);
            let located = snapshot
                .objects
                .get(&key)
                .ok_or_else(|| SourceError::PodNotFound {
                    pod: pod.clone(),
                    dir: root.clone(),
                })?;
            rewrite::write_network_status(&located.file, located.document, &pod, &entries)
        })
        .await
    }
}

fn lock<T>(mutex: &SyncMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a notification means for the snapshot.
#[derive(Debug)]
enum Notified {
    Paths(Vec<PathBuf>),
    /// Notifications were lost (or the watch failed): read everything again.
    Everything,
}

/// Opening or reading a file changes nothing: without this filter, reading the changed
/// files would notify again, forever.
fn notified(event: notify::Result<notify::Event>) -> Option<Notified> {
    let event = match event {
        Ok(event) => event,
        Err(_) => return Some(Notified::Everything),
    };
    if event.need_rescan() {
        return Some(Notified::Everything);
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return None,
        _ => {}
    }
    if event.paths.is_empty() {
        Some(Notified::Everything)
    } else {
        Some(Notified::Paths(event.paths))
    }
}

/// The state of one `events` stream.
enum Watch {
    Start(PathBuf, PodFiles),
    Watching(Box<Watching>),
    Ended,
}

struct Watching {
    root: PathBuf,
    /// Kept for its lifetime: dropping it stops the notifications.
    _watcher: RecommendedWatcher,
    changed: mpsc::UnboundedReceiver<Notified>,
    current: Arc<SyncMutex<Snapshot>>,
    pod_files: PodFiles,
    ready: VecDeque<Result<ClusterEvent, SourceError>>,
}

impl Watch {
    async fn next(self) -> Option<(Result<ClusterEvent, SourceError>, Self)> {
        let mut watching = match self {
            Self::Ended => return None,
            Self::Start(root, pod_files) => match Watching::start(root, pod_files).await {
                Ok(watching) => Box::new(watching),
                Err(problem) => return Some((Err(problem), Self::Ended)),
            },
            Self::Watching(watching) => watching,
        };
        loop {
            if let Some(item) = watching.ready.pop_front() {
                return Some((item, Self::Watching(watching)));
            }
            let changed = watching.settle().await?;
            watching.update(changed).await;
        }
    }
}

impl Watching {
    /// Watches first, then reads, so no change between the two is missed.
    async fn start(root: PathBuf, pod_files: PodFiles) -> Result<Self, SourceError> {
        let (tell, changed) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event| {
            // A closed channel means the stream is gone and the watcher is about to be
            // dropped.
            if let Some(notified) = notified(event) {
                let _ = tell.send(notified);
            }
        })
        .and_then(|mut watcher| {
            watcher.watch(&root, RecursiveMode::Recursive)?;
            Ok(watcher)
        })
        .map_err(|source| SourceError::Notify {
            path: root.clone(),
            source,
        })?;
        let load_root = root.clone();
        let (snapshot, problems) = blocking(&root, move || Ok(Snapshot::load(&load_root))).await?;
        *lock(&pod_files) = snapshot
            .pods()
            .map(|(key, located)| (key.clone(), (located.file.clone(), located.document)))
            .collect();
        let ready = problems
            .into_iter()
            .map(Err)
            .chain(snapshot::resyncs(&snapshot).into_iter().map(Ok))
            .collect();
        Ok(Self {
            root,
            _watcher: watcher,
            changed,
            current: Arc::new(SyncMutex::new(snapshot)),
            pod_files,
            ready,
        })
    }

    /// Waits for a change, then for quiet (at most [`SETTLE_AT_MOST`]); what changed, or
    /// None when notifications have stopped.
    async fn settle(&mut self) -> Option<Changed> {
        let mut changed = Changed::default();
        let mut add = |notified| match notified {
            Notified::Paths(paths) => changed.paths.extend(paths),
            Notified::Everything => changed.everything = true,
        };
        add(self.changed.recv().await?);
        let latest = Instant::now() + SETTLE_AT_MOST;
        loop {
            let quiet = (Instant::now() + SETTLE).min(latest);
            match tokio::time::timeout_at(quiet, self.changed.recv()).await {
                Ok(Some(notified)) => add(notified),
                Ok(None) => return None,
                Err(_quiet) => return Some(changed),
            }
        }
    }

    /// Reads what changed (off the async threads) and queues the events.
    async fn update(&mut self, changed: Changed) {
        let (root, current) = (self.root.clone(), Arc::clone(&self.current));
        let pod_files = Arc::clone(&self.pod_files);
        let updated = blocking(&self.root, move || {
            let mut snapshot = lock(&current);
            let (events, problems) = snapshot.update(&root, &changed);
            note_pod_files(&pod_files, &snapshot, &events);
            Ok((events, problems))
        })
        .await;
        match updated {
            Ok((events, problems)) => {
                self.ready.extend(problems.into_iter().map(Err));
                self.ready.extend(events.into_iter().map(Ok));
            }
            Err(problem) => self.ready.push_back(Err(problem)),
        }
    }
}

/// Keeps `pod_files` in step with the pods `events` add, change or delete.
fn note_pod_files(pod_files: &PodFiles, snapshot: &Snapshot, events: &[ClusterEvent]) {
    let mut pod_files = lock(pod_files);
    for event in events {
        match event {
            ClusterEvent::Applied(object) if object.key().kind == Kind::Pod => {
                let key = object.key();
                if let Some(located) = snapshot.objects.get(&key) {
                    pod_files.insert(key, (located.file.clone(), located.document));
                }
            }
            ClusterEvent::Deleted(key) if key.kind == Kind::Pod => {
                pod_files.remove(key);
            }
            _ => {}
        }
    }
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    root: &Path,
    work: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|failed| {
            Err(SourceError::Io {
                path: root.to_owned(),
                source: std::io::Error::other(failed),
            })
        })
}

#[cfg(test)]
mod tests {
    use notify::{
        event::{CreateKind, Flag, ModifyKind},
        Event,
    };

    use super::*;

    fn paths(notified: Option<Notified>) -> Option<Vec<PathBuf>> {
        match notified? {
            Notified::Paths(paths) => Some(paths),
            Notified::Everything => Some(vec![PathBuf::from("EVERYTHING")]),
        }
    }

    #[test]
    fn reading_a_file_is_no_change_and_lost_notifications_mean_everything() {
        let at = |kind| Ok(Event::new(kind).add_path(PathBuf::from("/lab/pod.json")));
        let pod = Some(vec![PathBuf::from("/lab/pod.json")]);
        for ignored in [
            EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert_eq!(paths(notified(at(ignored))), None, "{ignored:?}");
        }
        for kept in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Remove(notify::event::RemoveKind::File),
        ] {
            assert_eq!(paths(notified(at(kept))), pod, "{kept:?}");
        }
        let everything = Some(vec![PathBuf::from("EVERYTHING")]);
        let overflow = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert_eq!(paths(notified(Ok(overflow))), everything);
        let failed = notify::Error::generic("inotify failed");
        assert_eq!(paths(notified(Err(failed))), everything);
    }
}
