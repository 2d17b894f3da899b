//! The bpffs layout, per endpoint hook `<netns cookie>-<ifindex>-<hook>`:
//! - `<root>/maps/<MAP>`: the tables every program reads.
//! - `<root>/links/<hook>`: a TCX link. It holds its program and keeps it attached after
//!   the agent exits.
//! - `<root>/filters/<hook>`: the program a cls_bpf filter of ours runs (clsact mode). The
//!   filter itself lives in the kernel's tc tables until it is deleted; the pin records
//!   that netwarden put it there.
//! - `<root>/qdiscs/<netns cookie>-<ifindex>`: an empty directory, present while the
//!   interface's clsact qdisc is one netwarden added (and so may remove).
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
        self.root.join(LINKS).join(hook_name(endpoint, hook))
    }

    pub fn filter(&self, endpoint: &EndpointKey, hook: Hook) -> PathBuf {
        self.root.join(FILTERS).join(hook_name(endpoint, hook))
    }

    pub fn own_clsact(&self, endpoint: &EndpointKey) -> PathBuf {
        self.root
            .join(QDISCS)
            .join(format!("{}-{}", endpoint.netns_cookie, endpoint.ifindex))
    }

    /// Creates the directories (idempotent).
    pub(super) fn create(&self) -> Result<(), DatapathError> {
        let dirs = [
            self.maps(),
            self.root.join(LINKS),
            self.root.join(FILTERS),
            self.root.join(QDISCS),
        ];
        for dir in dirs {
            std::fs::create_dir_all(&dir).map_err(|e| DatapathError::Pin {
                path: dir.clone(),
                reason: format!("{e} (is bpffs mounted at /sys/fs/bpf?)"),
            })?;
        }
        Ok(())
    }

    /// Endpoints that have a pinned link or filter program, read back from the pin names.
    pub fn attached_endpoints(&self) -> Result<Vec<EndpointKey>, DatapathError> {
        self.endpoints_in(&[LINKS, FILTERS])
    }

    /// Endpoints with anything recorded here: a link, a filter program, an own qdisc.
    pub fn recorded_endpoints(&self) -> Result<Vec<EndpointKey>, DatapathError> {
        self.endpoints_in(&[LINKS, FILTERS, QDISCS])
    }

    fn endpoints_in(&self, dirs: &[&str]) -> Result<Vec<EndpointKey>, DatapathError> {
        let mut endpoints = Vec::new();
        for dir in dirs.iter().map(|dir| self.root.join(dir)) {
            let entries = std::fs::read_dir(&dir).map_err(|e| DatapathError::Pin {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
            endpoints_named(entries, &mut endpoints);
        }
        Ok(endpoints)
    }
}

const LINKS: &str = "links";
const FILTERS: &str = "filters";
const QDISCS: &str = "qdiscs";

fn hook_name(endpoint: &EndpointKey, hook: Hook) -> String {
    format!(
        "{}-{}-{}",
        endpoint.netns_cookie,
        endpoint.ifindex,
        hook.name()
    )
}

/// Adds the endpoints named by `entries` (`<netns cookie>-<ifindex>-...`) to `endpoints`.
fn endpoints_named(entries: std::fs::ReadDir, endpoints: &mut Vec<EndpointKey>) {
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
}

/// A pin root of its own under /sys/fs/bpf for a test or a benchmark, removed with
/// everything in it on drop. TCX links pinned there are detached by the removal; cls_bpf
/// filters stay with their interface (a test's namespace takes them along).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_and_filter_pins_name_the_endpoints_they_belong_to() {
        let dir = tempfile::tempdir().unwrap();
        let pins = PinRoot::new(dir.path());
        pins.create().unwrap();
        let endpoint = |ifindex| EndpointKey {
            netns_cookie: 4097,
            ifindex,
            _pad: 0,
        };
        for hook in [Hook::Ingress, Hook::Egress] {
            std::fs::write(pins.link(&endpoint(3), hook), b"").unwrap();
            std::fs::write(pins.filter(&endpoint(4), hook), b"").unwrap();
        }
        std::fs::write(dir.path().join("links/not-a-link"), b"").unwrap();
        assert_eq!(
            pins.attached_endpoints().unwrap(),
            vec![endpoint(3), endpoint(4)]
        );
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let pins = PinRoot::new("/nonexistent-netwarden-root");
        let error = pins.attached_endpoints().unwrap_err().to_string();
        assert!(
            error.contains("/nonexistent-netwarden-root/links"),
            "{error}"
        );
    }
}
