//! CNI_ARGS: `KEY=VALUE` pairs joined by `;`, with the Kubernetes keys runtimes send.
use std::fmt;

use serde::{Deserialize, Serialize};

/// The pod a sandbox belongs to, as the `K8S_*` CNI_ARGS name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    /// The sandbox (infra container) ID.
    pub infra_container_id: String,
    pub uid: String,
}

/// Ordered CNI_ARGS pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniArgs(pub Vec<(String, String)>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CniArgsError {
    #[error("CNI_ARGS item {0:?} is not KEY=VALUE")]
    NotAPair(String),
    #[error("CNI_ARGS key or value {0:?} contains ';' or '='")]
    Reserved(String),
}

impl CniArgs {
    /// Parses `K=V;K=V`; empty items (e.g. a trailing `;`) are ignored.
    pub fn parse(text: &str) -> Result<Self, CniArgsError> {
        let mut pairs = Vec::new();
        for item in text.split(';').filter(|item| !item.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| CniArgsError::NotAPair(item.to_owned()))?;
            pairs.push((key.to_owned(), value.to_owned()));
        }
        Ok(Self(pairs))
    }

    /// What Multus and kubelet's runtimes send to every delegate.
    pub fn for_pod(pod: &PodIdentity) -> Result<Self, CniArgsError> {
        let pairs = [
            ("IgnoreUnknown", "true"),
            ("K8S_POD_NAMESPACE", pod.namespace.as_str()),
            ("K8S_POD_NAME", pod.name.as_str()),
            (
                "K8S_POD_INFRA_CONTAINER_ID",
                pod.infra_container_id.as_str(),
            ),
            ("K8S_POD_UID", pod.uid.as_str()),
        ];
        for (_, value) in pairs {
            if value.contains([';', '=']) {
                return Err(CniArgsError::Reserved(value.to_owned()));
            }
        }
        Ok(Self(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The pod named by the `K8S_*` keys, when all four are present.
    pub fn pod(&self) -> Option<PodIdentity> {
        Some(PodIdentity {
            namespace: self.get("K8S_POD_NAMESPACE")?.to_owned(),
            name: self.get("K8S_POD_NAME")?.to_owned(),
            infra_container_id: self.get("K8S_POD_INFRA_CONTAINER_ID")?.to_owned(),
            uid: self.get("K8S_POD_UID").unwrap_or_default().to_owned(),
        })
    }
}

impl fmt::Display for CniArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{key}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodIdentity {
        PodIdentity {
            namespace: "development".into(),
            name: "samplepod".into(),
            infra_container_id: "abc123".into(),
            uid: "0f6f-11".into(),
        }
    }

    #[test]
    fn renders_the_kubernetes_keys_in_order() {
        let args = CniArgs::for_pod(&pod()).unwrap();
        assert_eq!(
            args.to_string(),
            "IgnoreUnknown=true;K8S_POD_NAMESPACE=development;K8S_POD_NAME=samplepod;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0f6f-11"
        );
        assert_eq!(CniArgs::parse(&args.to_string()).unwrap(), args);
        assert_eq!(args.pod(), Some(pod()));
    }

    #[test]
    fn bad_pairs_are_named() {
        assert_eq!(
            CniArgs::parse("A=1;oops").unwrap_err(),
            CniArgsError::NotAPair("oops".into())
        );
        let mut bad = pod();
        bad.name = "a;b".into();
        assert!(CniArgs::for_pod(&bad).is_err());
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
    }
}
