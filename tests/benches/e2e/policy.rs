//! netwarden's side of the policy: the MultiNetworkPolicy on net1 selecting the server
//! pod, allowing a list of peer addresses on the bench's ports, applied with `lab apply`.
use std::{net::IpAddr, path::Path};

use serde_json::json;

use crate::{bed::Bed, peers::Family};

/// Writes the policy allowing `peers` to `file` (one MultiNetworkPolicy, JSON is YAML).
pub fn write(file: &Path, peers: &[IpAddr], ports: &[u16]) {
    let from: Vec<_> = peers
        .iter()
        .map(|peer| {
            let prefix = Family::of(*peer).host_prefix();
            json!({"ipBlock": {"cidr": format!("{peer}/{prefix}")}})
        })
        .collect();
    let ports: Vec<_> = ports
        .iter()
        .map(|port| json!({"protocol": "TCP", "port": port}))
        .collect();
    let policy = json!({
        "apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
        "metadata": {"name": "bench-allow", "namespace": "default",
                     "annotations": {"k8s.v1.cni.cncf.io/policy-for": "default/net1"}},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": from, "ports": ports}]},
    });
    std::fs::write(file, policy.to_string()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
}

/// Applies the policy allowing `peers` to the lab (returns once `lab apply` did).
pub fn apply(bed: &Bed, peers: &[IpAddr], ports: &[u16]) {
    let file = bed.file("policy.yaml");
    write(&file, peers, ports);
    bed.lab.apply(&file);
}
