//! Every request the Kubernetes cluster source makes, by API group, resource and verb: what
//! the DaemonSet's ClusterRole (`deploy/rbac.yaml`) must grant, and nothing more. Tests hold
//! both sides to this list: the requests the source makes against a test API server, and
//! the rules in the manifest.
use std::fmt;

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    events::v1::Event,
    networking::v1::NetworkPolicy,
};
use kube::Resource;

use crate::cluster::crd::{v1beta2, NetworkAttachmentDefinition};

/// An RBAC verb the source uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Create,
    List,
    Patch,
    Watch,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::List => "list",
            Verb::Patch => "patch",
            Verb::Watch => "watch",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verbs used on one resource of one API group (`""` is the core group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub group: String,
    pub resource: String,
    pub verbs: Vec<Verb>,
}

impl Access {
    fn of<K: Resource<DynamicType = ()>>(verbs: &[Verb]) -> Self {
        Self {
            group: K::group(&()).into_owned(),
            resource: K::plural(&()).into_owned(),
            verbs: verbs.to_vec(),
        }
    }
}

/// What [`super::KubeSource`] asks of the API server:
/// - a watcher (list, then watch) per kind it reads; MultiNetworkPolicy per served version,
///   one resource for RBAC, and `served` probes with a list;
/// - a merge patch of a pod's network-status annotation;
/// - an events.k8s.io Event per attach failure, created once and patched as it repeats.
pub fn required() -> Vec<Access> {
    use Verb::*;
    vec![
        Access::of::<Pod>(&[List, Watch, Patch]),
        Access::of::<Namespace>(&[List, Watch]),
        Access::of::<NetworkAttachmentDefinition>(&[List, Watch]),
        Access::of::<v1beta2::MultiNetworkPolicy>(&[List, Watch]),
        Access::of::<NetworkPolicy>(&[List, Watch]),
        Access::of::<Event>(&[Create, Patch]),
    ]
}

/// The access `required` lists for `group`/`resource`, if any.
pub fn find<'a>(required: &'a [Access], group: &str, resource: &str) -> Option<&'a Access> {
    required
        .iter()
        .find(|access| access.group == group && access.resource == resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_resources_as_the_api_does() {
        let required = required();
        let pods = find(&required, "", "pods").unwrap();
        assert_eq!(pods.verbs, [Verb::List, Verb::Watch, Verb::Patch]);
        assert!(find(&required, "k8s.cni.cncf.io", "multi-networkpolicies").is_some());
        assert!(find(
            &required,
            "k8s.cni.cncf.io",
            "network-attachment-definitions"
        )
        .is_some());
        assert!(find(&required, "events.k8s.io", "events").is_some());
        assert!(
            find(&required, "", "events").is_none(),
            "only events.k8s.io Events"
        );
    }
}
