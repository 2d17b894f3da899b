//! Cluster state from a directory of Kubernetes manifests (`.yaml`, `.yml`, `.json`,
//! multi-document files allowed): the store of the local lab and of `--cluster dir:PATH`.
//! Watched with notify; after a burst of changes settles, the directory is read again
//! and the difference becomes events.
mod documents;
mod manifest;
mod rewrite;
mod snapshot;

use std::{collections::VecDeque, path::PathBuf, sync::Arc, time::Duration};

use futures::stream::{self, BoxStream, StreamExt};
use netwarden_cni::status::NetworkStatus;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, Mutex};

pub use manifest::ManifestError;

use super::{
    source::{ClusterSource, PodRef, SourceError},
    ClusterEvent, Kind, ObjectKey,
};
use snapshot::Snapshot;

/// How long the directory must be quiet before it is read again: an editor's save or a
/// `kubectl`-style rewrite is several file events.
const SETTLE: Duration = Duration::from_millis(100);

/// A directory of manifests as a cluster source.
#[derive(Clone)]
pub struct DirSource {
    root: PathBuf,
    /// Serialises this process's rewrites of manifest files.
    writing: Arc<Mutex<()>>,
}

impl DirSource {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            writing: Arc::default(),
        }
    }
}

impl ClusterSource for DirSource {
    fn events(&self) -> BoxStream<'static, Result<ClusterEvent, SourceError>> {
        stream::unfold(Watch::Start(self.root.clone()), Watch::next).boxed()
    }

    async fn write_network_status(
        &self,
        pod: &PodRef,
        entries: &[NetworkStatus],
    ) -> Result<(), SourceError> {
        let _writing = self.writing.lock().await;
        let (root, pod, entries) = (self.root.clone(), pod.clone(), entries.to_vec());
        blocking(&self.root, move || {
            let (snapshot, _problems) = snapshot::load(&root);
            let key = ObjectKey {
                kind: Kind::Pod,
                namespace: Some(pod.namespace.clone()),
                name: pod.name.clone(),
            };
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

/// The state of one `events` stream.
enum Watch {
    Start(PathBuf),
    Watching(Watching),
    Ended,
}

struct Watching {
    root: PathBuf,
    /// Kept for its lifetime: dropping it stops the notifications.
    _watcher: RecommendedWatcher,
    changed: mpsc::UnboundedReceiver<()>,
    current: Arc<Snapshot>,
    ready: VecDeque<Result<ClusterEvent, SourceError>>,
}

impl Watch {
    async fn next(self) -> Option<(Result<ClusterEvent, SourceError>, Self)> {
        let mut watching = match self {
            Self::Ended => return None,
            Self::Start(root) => match Watching::start(root).await {
                Ok(watching) => watching,
                Err(problem) => return Some((Err(problem), Self::Ended)),
            },
            Self::Watching(watching) => watching,
        };
        loop {
            if let Some(item) = watching.ready.pop_front() {
                return Some((item, Self::Watching(watching)));
            }
            if !watching.settle().await {
                return None;
            }
            watching.reload().await;
        }
    }
}

impl Watching {
    /// Watches first, then reads, so no change between the two is missed.
    async fn start(root: PathBuf) -> Result<Self, SourceError> {
        let (tell, changed) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            // Any event (or watch error) means "read again"; a closed channel means the
            // stream is gone and the watcher is about to be dropped.
            let _ = tell.send(());
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
        let (snapshot, problems) = blocking(&root, move || Ok(snapshot::load(&load_root))).await?;
        let ready = problems
            .into_iter()
            .map(Err)
            .chain(snapshot::resyncs(&snapshot).into_iter().map(Ok))
            .collect();
        Ok(Self {
            root,
            _watcher: watcher,
            changed,
            current: Arc::new(snapshot),
            ready,
        })
    }

    /// Waits for a change and then for quiet; false when notifications have stopped.
    async fn settle(&mut self) -> bool {
        if self.changed.recv().await.is_none() {
            return false;
        }
        loop {
            match tokio::time::timeout(SETTLE, self.changed.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return false,
                Err(_quiet) => return true,
            }
        }
    }

    async fn reload(&mut self) {
        let (root, previous) = (self.root.clone(), Arc::clone(&self.current));
        let reloaded = blocking(&self.root, move || {
            let (mut next, problems) = snapshot::load(&root);
            let events = snapshot::changes(&previous, &mut next);
            Ok((next, problems, events))
        })
        .await;
        match reloaded {
            Ok((next, problems, events)) => {
                self.current = Arc::new(next);
                self.ready.extend(problems.into_iter().map(Err));
                self.ready.extend(events.into_iter().map(Ok));
            }
            Err(problem) => self.ready.push_back(Err(problem)),
        }
    }
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    root: &std::path::Path,
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
