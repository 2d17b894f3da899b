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
    singular = "network-attachment-definition",
    shortname = "net-attach-def",
    namespaced,
    // Upstream's CRD has none; `kubectl get net-attach-def` then shows only the name.
    printcolumn(
        name = "Resource",
        type_ = "string",
        description = "The device-plugin resource it draws from (annotation k8s.v1.cni.cncf.io/resourceName)",
        json_path = ".metadata.annotations.k8s\\.v1\\.cni\\.cncf\\.io/resourceName"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    derive = "PartialEq",
    derive = "Default",
    // A NAD may have no spec at all (a network looked up by name in the configuration
    // directory, as Multus documents it), and upstream's schema allows it. kube-derive
    // refuses `serde` here, not `cfg_attr`: this is `#[serde(default)]` on the root type.
    attr = "cfg_attr(all(), serde(default))"
)]
pub struct NetworkAttachmentDefinitionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// A MultiNetworkPolicy version: NetworkPolicy's spec, the networks in an annotation. The
/// printer columns are what `kubectl get multi-policy` shows.
macro_rules! multi_network_policy {
    ($version:tt) => {
        #[derive(
            CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema,
        )]
        #[kube(
            group = "k8s.cni.cncf.io",
            version = $version,
            kind = "MultiNetworkPolicy",
            plural = "multi-networkpolicies",
            singular = "multi-networkpolicy",
            shortname = "multi-policy",
            namespaced,
            derive = "PartialEq",
            derive = "Default",
            // Upstream's schema does not require a spec; one without reads as the empty spec
            // (see NetworkAttachmentDefinition for the attribute).
            attr = "cfg_attr(all(), serde(default))",
            printcolumn(
                name = "Networks",
                type_ = "string",
                description = "The networks it applies to (annotation k8s.v1.cni.cncf.io/policy-for)",
                json_path = ".metadata.annotations.k8s\\.v1\\.cni\\.cncf\\.io/policy-for"
            ),
            printcolumn(
                name = "Pod-Selector",
                type_ = "string",
                description = "The pods it isolates",
                json_path = ".spec.podSelector"
            ),
            printcolumn(
                name = "Policy-Types",
                type_ = "string",
                description = "The directions it isolates",
                json_path = ".spec.policyTypes"
            ),
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
        )]
        pub struct MultiNetworkPolicySpec {
            #[serde(flatten)]
            pub policy: NetworkPolicySpec,
        }
    };
}

/// MultiNetworkPolicy, k8s.cni.cncf.io/v1beta1.
pub mod v1beta1 {
    use super::*;

    multi_network_policy!("v1beta1");
}

/// MultiNetworkPolicy, k8s.cni.cncf.io/v1beta2 (the same spec; defined but not served
/// upstream).
pub mod v1beta2 {
    use super::*;

    multi_network_policy!("v1beta2");
}

/// The version the API server stores MultiNetworkPolicies in, as upstream's CRD says.
pub const MULTI_NETWORK_POLICY_STORAGE_VERSION: &str = "v1beta1";

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
    fn reads_a_nad_without_spec_as_a_config_less_one() {
        let nad: NetworkAttachmentDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "macvlan-conf-2", "namespace": "default"}
        }))
        .unwrap();
        assert_eq!(nad.spec.config, None);
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
