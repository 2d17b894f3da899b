//! Installing netwarden on a node: the `netwarden-cni` binary in the runtime's plugin
//! directory, and the CNI configuration that makes the runtime call it for every pod.
//!
//! - [`binary`]: the binary is copied beside its destination and renamed over it, so a
//!   runtime never executes a half-copied file during an upgrade.
//! - [`primary`]: the cluster's own CNI configuration (the alphabetically first file of
//!   the configuration directory other than ours, unless one is configured).
//! - [`conflist`]: `00-netwarden.conflist`, which sorts first and so is the one the runtime
//!   uses; it names the primary it delegates to.
//! - [`writer`]: keeps that file and the agent's copy of the primary up to date as the
//!   directory changes, and removes them on uninstall.
//!
//! Every file is replaced whole ([`atomic`]): no reader ever sees an empty or partial one.
pub mod atomic;
pub mod binary;
pub mod cli;
pub mod conflist;
pub mod primary;
pub mod writer;

use std::path::PathBuf;

/// What went wrong installing or uninstalling, on which file.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("primary CNI config {path}: {problem}")]
    Primary { path: PathBuf, problem: String },
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

impl InstallError {
    /// An `Io` error naming what was being done to `path`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
