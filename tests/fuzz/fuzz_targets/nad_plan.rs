//! A NetworkAttachmentDefinition's `spec.config` (a CNI config or conflist) and the pod's
//! networks and default-network annotations, through everything ADD does before the
//! first delegate runs: selection, resolution (inline config, or the configuration
//! directory for a config-less NAD), namespace isolation, interface names, capabilities,
//! and every plugin's stdin. Input: line 1 the networks annotation, line 2 the
//! default-network annotation (empty: none), the rest the NAD's config.
#![no_main]

use std::{collections::BTreeMap, path::Path, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use netwarden_cni::{
    plan::{plan, ClusterNetwork, PlanContext, PlanError},
    protocol::ConfList,
    resolve::{DeviceAllocations, Isolation, NadSpec, RESOURCE_NAME_ANNOTATION},
    selection::{DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION},
};

/// A configuration directory with a conflist and a config, for config-less NADs.
fn config_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        for (file, text) in [
            (
                "10-chain.conflist",
                r#"{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"bridge","bridge":"br0"},{"type":"tuning","capabilities":{"mac":true}}]}"#,
            ),
            (
                "20-macvlan-conf.conf",
                r#"{"cniVersion":"0.3.1","name":"macvlan-conf","type":"macvlan","master":"eth0","capabilities":{"ips":true}}"#,
            ),
        ] {
            std::fs::write(dir.path().join(file), text).expect("config written");
        }
        dir
    })
    .path()
}

fn cluster() -> ClusterNetwork {
    ClusterNetwork {
        config: ConfList::parse(
            r#"{"cniVersion":"1.0.0","name":"cluster-net","type":"bridge"}"#,
            None,
        )
        .expect("valid"),
        ifname: "eth0".parse().expect("valid"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ([networks, default_network], config) = netwarden_fuzz::lines::<2>(text);
    let mut annotations = BTreeMap::new();
    annotations.insert(NETWORKS_ANNOTATION.to_owned(), networks.to_owned());
    if !default_network.is_empty() {
        annotations.insert(
            DEFAULT_NETWORK_ANNOTATION.to_owned(),
            default_network.to_owned(),
        );
    }
    // Every NAD in the pod's namespace and `default` has the fuzzed config; those in
    // `kube-system` have none (the configuration directory serves them); others are missing.
    let nads = |network: &netwarden_cni::NetworkRef| {
        let config = match network.namespace.as_str() {
            "pod-ns" | "default" => config.to_owned(),
            "kube-system" => String::new(),
            _ => return None,
        };
        Some(NadSpec {
            network: network.clone(),
            config,
            annotations: BTreeMap::from([(RESOURCE_NAME_ANNOTATION.to_owned(), "r".to_owned())]),
        })
    };
    let isolation = Isolation::new(config.len() % 2 == 0, Some("default,kube-system"));
    let context = PlanContext {
        nads: &nads,
        isolation: &isolation,
        config_dir: config_dir(),
    };
    let devices = BTreeMap::from([("r".to_owned(), vec!["0000:01:00.0".to_owned()])]);
    let cluster = cluster();
    match plan(
        "pod-ns",
        &annotations,
        &cluster,
        &context,
        &mut DeviceAllocations::new(devices),
    ) {
        Ok(attachments) => {
            assert_eq!(attachments[0].ifname, cluster.ifname);
            assert!(attachments[0].is_default);
            for attachment in &attachments {
                let delegate = &attachment.delegate;
                assert!(!delegate.config.plugins.is_empty());
                for (index, plugin) in delegate.config.plugins.iter().enumerate() {
                    let t = plugin.plugin_type();
                    assert!(!t.is_empty() && !t.contains(['/', '\0']) && t != "." && t != "..");
                    let stdin = delegate.plugin_stdin(index, None);
                    assert_eq!(stdin["name"], delegate.config.name.as_str());
                    assert_eq!(stdin["type"], t);
                }
                // The cache keeps the delegate: it must read back as it was written.
                let stored = serde_json::to_vec(delegate).expect("serializes");
                let back: netwarden_cni::delegate::Delegate =
                    serde_json::from_slice(&stored).expect("a stored delegate reads back");
                netwarden_fuzz::assert_same(&back, delegate);
            }
        }
        Err(PlanError::Selection(_) | PlanError::Interfaces(_)) => {}
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("network"), "{message}");
        }
    }
});
