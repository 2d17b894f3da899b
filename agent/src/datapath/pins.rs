//! The bpffs layout: `<root>/maps/<MAP>` and `<root>/links/<netns cookie>-<ifindex>-<hook>`.
//! A pinned TCX link holds its program and keeps it attached after the agent exits; the
//! maps that program reads stay pinned beside it.
use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use netwarden_common::EndpointKey;

use super::{test_run::Hook, DatapathError};

/// Where a datapath pins everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRoot {
    root: PathBuf,
}

impl Default for PinRoot {
    fn default() -> Self {
        Self::new("/sys/fs/bpf/netwarden")
    }
}

impl PinRoot {
    /// `root` must be inside a mounted bpffs.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn link(&self, endpoint: &EndpointKey, hook: Hook) -> PathBuf {
        self.root.join("links").join(format!(
            "{}-{}-{}",
            endpoint.netns_cookie,
            endpoint.ifindex,
            hook.name()
        ))
    }

    /// Creates the directories (idempotent).
    pub(super) fn create(&self) -> Result<(), DatapathError> {
        for dir in [self.maps(), self.root.join("links")] {
            std::fs::create_dir_all(&dir).map_err(|e| DatapathError::Pin {
                path: dir.clone(),
                reason: format!("{e} (is bpffs mounted at /sys/fs/bpf?)"),
            })?;
        }
        Ok(())
    }

    /// Endpoints that have a pinned link, read back from the link names.
    pub fn attached_endpoints(&self) -> Result<Vec<EndpointKey>, DatapathError> {
        let dir = self.root.join("links");
        let entries = std::fs::read_dir(&dir).map_err(|e| DatapathError::Pin {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let mut endpoints = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let mut parts = name.to_str().unwrap_or_default().split('-');
            let (Some(cookie), Some(ifindex)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let (Ok(netns_cookie), Ok(ifindex)) = (cookie.parse(), ifindex.parse()) {
                let key = EndpointKey {
                    netns_cookie,
                    ifindex,
                    _pad: 0,
                };
                if !endpoints.contains(&key) {
                    endpoints.push(key);
                }
            }
        }
        Ok(endpoints)
    }
}

/// A pin root of its own under /sys/fs/bpf for a test or a benchmark, removed with
/// everything in it on drop. Links pinned there are detached by the removal.
#[derive(Debug)]
pub struct ScratchPinRoot {
    root: PinRoot,
}

impl ScratchPinRoot {
    /// `/sys/fs/bpf/nw-<prefix>-<pid>-<n>`: unique on this machine.
    pub fn create(prefix: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from("/sys/fs/bpf").join(format!(
            "nw-{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        Self {
            root: PinRoot::new(path),
        }
    }

    pub fn root(&self) -> &PinRoot {
        &self.root
    }
}

impl Drop for ScratchPinRoot {
    fn drop(&mut self) {
        // bpffs removes pins with unlink and directories with rmdir, like any filesystem.
        if let Err(e) = std::fs::remove_dir_all(self.root.path()) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cleanup of {}: {e}", self.root.path().display());
            }
        }
    }
}
