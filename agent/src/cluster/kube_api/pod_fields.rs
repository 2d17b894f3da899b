//! Pods are watched cluster-wide (their network-status gives peer addresses), so every
//! pod not on this node is cut down to the fields the engine reads as it arrives.
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::ObjectMeta;
use netwarden_cni::{selection::NETWORKS_ANNOTATION, status::NETWORK_STATUS_ANNOTATION};

use crate::cluster::source::NodeName;

/// `pod` as the engine needs it: in full on `node`, else only metadata name, namespace,
/// labels, uid, resourceVersion, the networks and network-status annotations,
/// spec.nodeName and the containers' names and ports.
pub(super) fn keep_needed_fields(pod: Pod, node: &NodeName) -> Pod {
    let spec = pod.spec.unwrap_or_default();
    if spec.node_name.as_deref() == Some(node.0.as_str()) {
        return Pod {
            spec: Some(spec),
            ..pod
        };
    }
    let meta = pod.metadata;
    let annotations = meta.annotations.map(|mut annotations| {
        annotations.retain(|key, _| key == NETWORKS_ANNOTATION || key == NETWORK_STATUS_ANNOTATION);
        annotations
    });
    Pod {
        metadata: ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            labels: meta.labels,
            uid: meta.uid,
            resource_version: meta.resource_version,
            annotations,
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: spec.node_name,
            containers: spec
                .containers
                .into_iter()
                .map(|container| Container {
                    name: container.name,
                    ports: container.ports,
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "web"},
                "annotations": {
                    NETWORKS_ANNOTATION: "macvlan-conf",
                    NETWORK_STATUS_ANNOTATION: "[]",
                    "kubectl.kubernetes.io/last-applied-configuration": "{ big }"
                },
                "managedFields": [{"manager": "kubectl"}]
            },
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "image": "nginx", "env": [{"name": "A", "value": "1"}],
                                "ports": [{"name": "http", "containerPort": 80}]}]
            },
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    #[test]
    fn remote_pods_keep_only_what_the_engine_reads() {
        let slim = serde_json::to_value(keep_needed_fields(pod("other"), &NodeName("here".into())))
            .unwrap();
        assert_eq!(
            slim,
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                    "labels": {"app": "web"},
                    "annotations": {NETWORKS_ANNOTATION: "macvlan-conf", NETWORK_STATUS_ANNOTATION: "[]"}
                },
                "spec": {
                    "nodeName": "other",
                    "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}]
                }
            })
        );
    }

    #[test]
    fn local_pods_stay_whole() {
        let local = pod("here");
        assert_eq!(
            keep_needed_fields(local.clone(), &NodeName("here".into())),
            local
        );
    }
}
