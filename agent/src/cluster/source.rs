//! The one interface to cluster state: a stream of [`ClusterEvent`]s and a way to write a
//! pod's network-status, implemented by the Kubernetes API ([`KubeSource`]) and by a
//! directory of manifests ([`DirSource`]). `--cluster kube` / `--cluster dir:PATH` picks
//! one ([`ClusterSourceSpec`]).
use std::{fmt, future::Future, io, path::PathBuf, str::FromStr};

use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use netwarden_cni::status::{NetworkStatus, NETWORK_STATUS_ANNOTATION};

use super::{
    kube_api::KubeSource,
    manifest_dir::{DirSource, ManifestError},
    ClusterEvent,
};

/// Where cluster state comes from and where network-status goes.
///
/// `events` yields `Resynced` for every kind first, then changes. An `Err` item reports a
/// problem (a failed watch, a bad manifest) and the stream goes on: sources retry by
/// themselves, so consumers log errors and keep reading.
pub trait ClusterSource {
    /// Starts observing; every call is an independent observation.
    fn events(&self) -> BoxStream<'static, Result<ClusterEvent, SourceError>>;

    /// Sets the pod's `k8s.v1.cni.cncf.io/network-status` annotation to `entries`.
    fn write_network_status(
        &self,
        pod: &PodRef,
        entries: &[NetworkStatus],
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Records, where the cluster keeps such records, that attaching the pod's networks
    /// failed with `message` (the Kubernetes source: an Event on the pod). A directory of
    /// manifests keeps none: the failure is in the CNI error and the agent's log.
    fn report_attach_failure(
        &self,
        pod: &Pod,
        message: &str,
    ) -> impl Future<Output = Result<(), SourceError>> + Send {
        let _ = (pod, message);
        async { Ok(()) }
    }
}

/// Names a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The Kubernetes node this agent runs on: its pods are kept in full.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeName(pub String);

/// The value of `--cluster`: `kube` or `dir:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterSourceSpec {
    /// The Kubernetes API, configured from the environment (in-cluster or kubeconfig).
    Kube,
    /// A directory of Kubernetes manifests.
    Dir(PathBuf),
}

impl FromStr for ClusterSourceSpec {
    type Err = SourceError;

    fn from_str(given: &str) -> Result<Self, SourceError> {
        match given.split_once(':') {
            None if given == "kube" => Ok(Self::Kube),
            Some(("dir", path)) if !path.is_empty() => Ok(Self::Dir(PathBuf::from(path))),
            _ => Err(SourceError::BadSpec {
                given: given.to_owned(),
            }),
        }
    }
}

impl fmt::Display for ClusterSourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kube => f.write_str("kube"),
            Self::Dir(path) => write!(f, "dir:{}", path.display()),
        }
    }
}

impl ClusterSourceSpec {
    /// Opens the source this spec names.
    pub async fn open(&self, node: NodeName) -> Result<Source, SourceError> {
        Ok(match self {
            Self::Kube => Source::Kube(KubeSource::from_environment(node).await?),
            Self::Dir(path) => Source::Dir(DirSource::new(path.clone())),
        })
    }
}

/// Either source, chosen at run time.
pub enum Source {
    Kube(KubeSource),
    Dir(DirSource),
}

impl ClusterSource for Source {
    fn events(&self) -> BoxStream<'static, Result<ClusterEvent, SourceError>> {
        match self {
            Self::Kube(source) => source.events(),
            Self::Dir(source) => source.events(),
        }
    }

    async fn write_network_status(
        &self,
        pod: &PodRef,
        entries: &[NetworkStatus],
    ) -> Result<(), SourceError> {
        match self {
            Self::Kube(source) => source.write_network_status(pod, entries).await,
            Self::Dir(source) => source.write_network_status(pod, entries).await,
        }
    }

    async fn report_attach_failure(&self, pod: &Pod, message: &str) -> Result<(), SourceError> {
        match self {
            Self::Kube(source) => source.report_attach_failure(pod, message).await,
            Self::Dir(source) => source.report_attach_failure(pod, message).await,
        }
    }
}

/// What went wrong in a cluster source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("--cluster {given:?}: expected `kube` or `dir:PATH`")]
    BadSpec { given: String },
    #[error("Kubernetes client configuration: {0}")]
    KubeConfig(#[source] kube::Error),
    #[error("asking whether the API serves {resource}: {source}")]
    Discovery {
        resource: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("watching {resource}: {source}")]
    Watch {
        resource: &'static str,
        #[source]
        source: kube::runtime::watcher::Error,
    },
    #[error("pod {pod}: patching annotation {NETWORK_STATUS_ANNOTATION}: {source}")]
    Patch {
        pod: PodRef,
        #[source]
        source: kube::Error,
    },
    #[error("pod {pod}: recording an Event: {source}")]
    Event {
        pod: PodRef,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("watching directory {}: {source}", path.display())]
    Notify {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("pod {pod}: no manifest under {} describes it", dir.display())]
    PodNotFound { pod: PodRef, dir: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_of_cluster_flag() {
        assert_eq!(
            "kube".parse::<ClusterSourceSpec>().unwrap(),
            ClusterSourceSpec::Kube
        );
        assert_eq!(
            "dir:/var/lib/lab".parse::<ClusterSourceSpec>().unwrap(),
            ClusterSourceSpec::Dir(PathBuf::from("/var/lib/lab"))
        );
        assert_eq!(
            ClusterSourceSpec::Dir(PathBuf::from("a/b")).to_string(),
            "dir:a/b"
        );
    }

    #[test]
    fn rejects_other_cluster_flags_naming_the_syntax() {
        for bad in ["", "kubernetes", "dir:", "dir", "file:/x", "kube:x"] {
            let error = bad.parse::<ClusterSourceSpec>().unwrap_err().to_string();
            assert!(
                error.contains("expected `kube` or `dir:PATH`"),
                "{bad}: {error}"
            );
        }
    }
}
