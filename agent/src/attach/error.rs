//! What can go wrong serving one CNI request, and the CNI error each becomes.
use std::path::PathBuf;

use netwarden_cni::{
    cache::CacheError, plan::PlanError, protocol::ErrorCode, sandbox::SandboxError,
};

use super::guard::GuardError;
use crate::agent::EnforceError;
use crate::cluster::{
    source::{PodRef, SourceError},
    store::PodWaitError,
};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("client uid {uid}: only root may use the netwarden attach socket")]
    NotRoot { uid: u32 },
    #[error("not a netwarden request: {0}")]
    BadRequest(String),
    #[error("CNI_ARGS {key}={value:?} is not a Kubernetes {what} name")]
    BadPodName {
        key: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("agent busy ({admitted} requests admitted), retry")]
    Busy { admitted: usize },
    #[error("the network config on stdin: {0}")]
    BadStdin(String),
    #[error("{0}")]
    Version(String),
    #[error("{0} is missing")]
    MissingEnv(&'static str),
    #[error("CNI_ARGS names no pod (K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_INFRA_CONTAINER_ID are needed)")]
    NoPod,
    #[error("{0}")]
    PodWait(#[from] PodWaitError),
    #[error("cluster network config {path}: {problem}")]
    ClusterNetwork { path: PathBuf, problem: String },
    #[error("pod {pod}: {source}")]
    Plan { pod: PodRef, source: Box<PlanError> },
    #[error("{0}")]
    Sandbox(#[from] SandboxError),
    #[error("writing network-status: {0}")]
    Status(Box<SourceError>),
    #[error("enforcing policy on the new interfaces: {0}")]
    Enforce(Box<EnforceError>),
    #[error("{0}")]
    Guard(#[from] GuardError),
    #[error("pod {pod}: {error}; every network was deleted again{}", rollback_text(.rollback))]
    RolledBack {
        pod: PodRef,
        error: Box<AttachError>,
        rollback: Option<Box<AttachError>>,
    },
    #[error("GC: {0}")]
    GcList(#[from] CacheError),
    #[error("GC: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Gc(Vec<SandboxError>),
    #[error("internal error: a delegate task ended abnormally: {0}")]
    Task(String),
}

fn rollback_text(rollback: &Option<Box<AttachError>>) -> String {
    match rollback {
        None => String::new(),
        Some(error) => format!(", except: {error}"),
    }
}

impl AttachError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Busy { .. } | Self::PodWait(_) => ErrorCode::TryAgainLater,
            Self::NotRoot { .. } | Self::MissingEnv(_) | Self::NoPod | Self::BadPodName { .. } => {
                ErrorCode::InvalidEnvironment
            }
            Self::BadStdin(_) | Self::BadRequest(_) => ErrorCode::Decode,
            Self::Version(_) => ErrorCode::IncompatibleVersion,
            Self::ClusterNetwork { .. } | Self::Plan { .. } => ErrorCode::InvalidConfig,
            Self::Sandbox(error) => error.cni_code(),
            Self::Gc(errors) => errors
                .first()
                .map_or(ErrorCode::TryAgainLater, SandboxError::cni_code),
            Self::RolledBack { error, .. } => error.code(),
            Self::Status(_)
            | Self::Enforce(_)
            | Self::Guard(_)
            | Self::GcList(_)
            | Self::Task(_) => ErrorCode::Io,
        }
    }
}
