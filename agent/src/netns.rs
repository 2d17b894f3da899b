//! Running code inside another network namespace.
//!
//! A network namespace belongs to a thread, not a process: joining one on a short-lived
//! thread of our own leaves every other thread (and the tokio workers) where they were.
//! Sockets and bpf links created there stay bound to that namespace after the thread ends.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use nix::sched::{setns, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source} (does the sandbox still exist?)")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}: {source} (is the agent running as root?)")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("the thread working in network namespace {path} panicked")]
    Panicked { path: PathBuf },
}

/// Runs `f` on a new thread that has joined the network namespace at `path`
/// (e.g. `/run/netns/NAME` or `/proc/PID/ns/net`), and returns its result.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                    path: path.to_owned(),
                    source,
                })?;
                Ok(f())
            })
            .join()
            .map_err(|_| NetnsError::Panicked {
                path: path.to_owned(),
            })?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_an_error_naming_its_path() {
        let error = run_in(Path::new("/run/netns/nw-never-created"), || ()).unwrap_err();
        assert!(matches!(error, NetnsError::Open { .. }));
        assert!(error.to_string().contains("/run/netns/nw-never-created"));
    }

    #[test]
    fn the_closure_runs_and_returns_its_value() {
        // Our own namespace: joining it changes nothing, so this needs no privileges beyond
        // what setns on the current namespace requires (root in CI).
        let value = run_in(Path::new("/proc/self/ns/net"), || 42).unwrap();
        assert_eq!(value, 42);
    }
}
