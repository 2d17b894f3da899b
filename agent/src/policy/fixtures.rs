//! Test builders: Kubernetes objects as users write them, and a way to judge a flow on
//! an engine's compiled tables.
use std::{collections::BTreeSet, net::IpAddr};

use netwarden_cni::{status::NETWORK_STATUS_ANNOTATION, NetworkRef};
use serde_json::{json, Value};

use super::{explain::rule_admits, Engine, EngineConfig};
use crate::{
    cluster::{crd::POLICY_FOR_ANNOTATION, objects::PodKey, ClusterEvent, Object},
    datapath::rules::{Direction, Isolation, Protocol},
};

pub const NODE: &str = "node-1";

pub fn network(reference: &str) -> NetworkRef {
    reference.parse().unwrap()
}

pub fn pod_key(namespace: &str, name: &str) -> PodKey {
    PodKey {
        namespace: namespace.into(),
        name: name.into(),
    }
}

pub fn namespace(name: &str, labels: Value) -> Object {
    Object::Namespace(Box::new(
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
    ))
}

/// One interface of a pod: network `ns/name`, interface name, addresses.
pub struct Attach<'a>(pub &'a str, pub &'a str, pub &'a [&'a str]);

/// A pod on `node` with `labels`, interfaces from `attachments` (in network-status) and
/// container `ports` given as `{"name", "containerPort", "protocol"}` objects.
pub fn pod(
    namespace: &str,
    name: &str,
    node: &str,
    labels: Value,
    attachments: &[Attach],
    ports: Value,
) -> Object {
    let mut status = vec![
        json!({"name": "cluster-net", "interface": "eth0", "ips": ["172.16.0.1"], "default": true}),
    ];
    status.extend(
        attachments
            .iter()
            .map(|Attach(network, interface, ips)| json!({"name": network, "interface": interface, "ips": ips})),
    );
    Object::Pod(Box::new(
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": namespace, "labels": labels,
                "annotations": {NETWORK_STATUS_ANNOTATION: Value::Array(status).to_string()},
            },
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports}]},
        }))
        .unwrap(),
    ))
}

/// A MultiNetworkPolicy; `policy_for` is the annotation's value, if any.
pub fn multi_policy(namespace: &str, name: &str, policy_for: Option<&str>, spec: Value) -> Object {
    let annotations = match policy_for {
        Some(v) => json!({POLICY_FOR_ANNOTATION: v}),
        None => json!({}),
    };
    Object::MultiNetworkPolicy(Box::new(
        serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1beta2", "kind": "MultiNetworkPolicy",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": spec,
        }))
        .unwrap(),
    ))
}

pub fn network_policy(namespace: &str, name: &str, spec: Value) -> Object {
    Object::NetworkPolicy(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }))
        .unwrap(),
    ))
}

/// An engine on [`NODE`] fed `objects` (one Applied event each).
pub fn engine_with(standard: &[&str], objects: &[Object]) -> Engine {
    let mut engine = Engine::new(EngineConfig {
        node: NODE.into(),
        standard_policy_networks: standard.iter().map(|n| network(n)).collect::<BTreeSet<_>>(),
    });
    for object in objects {
        engine.apply(&ClusterEvent::Applied(object.clone()));
    }
    engine
}

/// What the compiled tables of `pod`'s endpoints on `network` say about traffic with
/// `peer` on the other end: None when the pod has no endpoint there (nothing enforced).
pub fn compiled_allows(
    engine: &Engine,
    pod: &PodKey,
    network: &NetworkRef,
    direction: Direction,
    peer: IpAddr,
    protocol: Protocol,
    port: u16,
) -> Option<bool> {
    let verdicts: Vec<bool> = engine
        .endpoints()
        .filter(|(id, _)| &id.pod == pod && &id.network == network)
        .map(|(_, tables)| match tables.policy.direction(direction) {
            Isolation::Open => true,
            Isolation::Isolated(rules) => {
                rules.iter().any(|r| rule_admits(r, peer, protocol, port))
            }
        })
        .collect();
    // All interfaces of a pod on one network share their tables.
    assert!(verdicts.windows(2).all(|w| w[0] == w[1]));
    verdicts.first().copied()
}

pub fn ip(address: &str) -> IpAddr {
    address.parse().unwrap()
}

/// The pods among `objects`.
pub fn pods(objects: &[Object]) -> Vec<&k8s_openapi::api::core::v1::Pod> {
    objects
        .iter()
        .filter_map(|o| match o {
            Object::Pod(p) => Some(p.as_ref()),
            _ => None,
        })
        .collect()
}
