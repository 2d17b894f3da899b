//! The pod annotations `k8s.v1.cni.cncf.io/networks` (short and JSON form) and
//! `v1.multus-cni.io/default-network`, then the interface names ADD derives from them.
//! Never a panic; an error names the annotation; what is accepted names only valid
//! NetworkAttachmentDefinitions and interfaces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netwarden_cni::{
    ifnames,
    network::is_dns1123_label,
    selection::{
        parse_default_network, parse_networks, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION,
    },
    InterfaceName, NetworkRef,
};

fn assert_valid(network: &NetworkRef) {
    assert!(
        is_dns1123_label(&network.namespace) && is_dns1123_label(&network.name),
        "{network:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    // Annotation values are strings in the API: only UTF-8 arrives.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_networks(text, "pod-ns") {
        Ok(selections) => {
            for selection in &selections {
                assert_valid(&selection.network);
                if let Some(ifname) = &selection.interface {
                    assert_eq!(
                        ifname.as_str().parse::<InterfaceName>().as_ref(),
                        Ok(ifname)
                    );
                }
            }
            let eth0: InterfaceName = "eth0".parse().expect("valid");
            if let Ok(names) = ifnames::assign(&eth0, &selections) {
                assert_eq!(names.len(), selections.len());
                let mut all: Vec<_> = names.iter().chain([&eth0]).collect();
                all.sort();
                all.dedup();
                assert_eq!(
                    all.len(),
                    names.len() + 1,
                    "an interface name is used twice"
                );
            }
        }
        Err(error) => assert!(error.to_string().contains(NETWORKS_ANNOTATION), "{error}"),
    }
    match parse_default_network(text, "pod-ns") {
        Ok(network) => assert_valid(&network),
        Err(error) => assert!(
            error.to_string().contains(DEFAULT_NETWORK_ANNOTATION),
            "{error}"
        ),
    }
});
