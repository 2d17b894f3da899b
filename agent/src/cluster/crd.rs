//! The custom resources netwarden reads, as upstream defines them (group
//! `k8s.cni.cncf.io`): NetworkAttachmentDefinition v1 and MultiNetworkPolicy
//! v1beta1/v1beta2. MultiNetworkPolicy's spec is exactly NetworkPolicy's, so it reuses
//! k8s-openapi's type.
use k8s_openapi::api::networking::v1::NetworkPolicySpec;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on a MultiNetworkPolicy: the networks (`[ns/]name`, comma-separated) it
/// applies to.
pub const POLICY_FOR_ANNOTATION: &str = "k8s.v1.cni.cncf.io/policy-for";

/// Annotation on a NAD tying it to a device-plugin resource.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// A secondary network: a CNI config (or conflist) in `config`, or nothing, in which case
/// the network is looked up by name in a configuration directory.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    shortname = "net-attach-def",
    namespaced,
    derive = "PartialEq"
)]
pub struct NetworkAttachmentDefinitionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// MultiNetworkPolicy, k8s.cni.cncf.io/v1beta1.
pub mod v1beta1 {
    use super::*;

    #[derive(
        CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "k8s.cni.cncf.io",
        version = "v1beta1",
        kind = "MultiNetworkPolicy",
        plural = "multi-networkpolicies",
        shortname = "multi-policy",
        namespaced,
        derive = "PartialEq"
    )]
    pub struct MultiNetworkPolicySpec {
        #[serde(flatten)]
        pub policy: NetworkPolicySpec,
    }
}

/// MultiNetworkPolicy, k8s.cni.cncf.io/v1beta2 (the same spec; the stored version
/// upstream).
pub mod v1beta2 {
    use super::*;

    #[derive(
        CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "k8s.cni.cncf.io",
        version = "v1beta2",
        kind = "MultiNetworkPolicy",
        plural = "multi-networkpolicies",
        shortname = "multi-policy",
        namespaced,
        derive = "PartialEq"
    )]
    pub struct MultiNetworkPolicySpec {
        #[serde(flatten)]
        pub policy: NetworkPolicySpec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_macvlan_nad() {
        let nad: NetworkAttachmentDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "macvlan-conf", "namespace": "default"},
            "spec": {"config": "{\"cniVersion\":\"0.3.1\",\"type\":\"macvlan\"}"}
        }))
        .unwrap();
        assert!(nad.spec.config.unwrap().contains("macvlan"));
    }

    #[test]
    fn reads_a_multi_network_policy() {
        let policy: v1beta1::MultiNetworkPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1beta1",
            "kind": "MultiNetworkPolicy",
            "metadata": {"name": "deny", "namespace": "default",
                         "annotations": {POLICY_FOR_ANNOTATION: "macvlan-conf"}},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}
        }))
        .unwrap();
        assert_eq!(
            policy.spec.policy.policy_types.as_deref(),
            Some(&["Ingress".to_owned()][..])
        );
    }
}
