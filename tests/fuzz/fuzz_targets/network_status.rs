//! The pod annotation `k8s.v1.cni.cncf.io/network-status`, as every agent reads it off
//! every pod (peer addresses): the parser, the render/parse round trip, and the policy
//! engine's view of a pod carrying it. A bad value costs the pod its addresses and is an
//! error naming the pod and the annotation, never a panic.
#![no_main]

use k8s_openapi::api::core::v1::Pod;
use libfuzzer_sys::fuzz_target;
use netwarden_agent::cluster::objects::PodView;
use netwarden_cni::status::{
    parse_network_status, render_network_status, NetworkStatus, NETWORK_STATUS_ANNOTATION,
};
use serde_json::json;

/// What netwarden reads of an entry (dns and device-info only pass through).
fn used(entries: &[NetworkStatus]) -> Vec<NetworkStatus> {
    entries
        .iter()
        .map(|e| NetworkStatus {
            dns: None,
            device_info: None,
            ..e.clone()
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(entries) = parse_network_status(text) {
        let again = parse_network_status(&render_network_status(&entries))
            .expect("a rendered annotation parses");
        assert_eq!(used(&again), used(&entries));
        netwarden_fuzz::assert_same(&again, &entries);
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns",
                     "annotations": {NETWORK_STATUS_ANNOTATION: text}},
        "spec": {"nodeName": "node-1", "containers": []},
    }))
    .expect("a pod");
    let parsed = PodView::from_pod(&pod, true).expect("the pod has a name and namespace");
    for error in &parsed.errors {
        let message = error.to_string();
        assert!(
            message.contains("ns/p") && message.contains(NETWORK_STATUS_ANNOTATION),
            "{message}"
        );
    }
    if !parsed.errors.is_empty() {
        assert!(
            parsed.view.interfaces.is_empty(),
            "a bad annotation keeps addresses"
        );
    }
});
