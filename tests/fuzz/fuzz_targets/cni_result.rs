//! What a delegate plugin prints: a result of any version from 0.3.0 on, or an error
//! object. An accepted result is written out in every version and read back unchanged
//! (only `ips[].version` differs on the wire), and its network-status entry builds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netwarden_cni::{
    cache::AttachmentRecord,
    delegate::{Delegate, DelegateRequest},
    protocol::{CniError, CniResult, ConfList, Version},
    status::{build_network_status, parse_network_status, render_network_status},
};

const VERSIONS: [Version; 5] = [
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

fuzz_target!(|data: &[u8]| {
    if let Some(error) = CniError::parse(data) {
        assert_ne!(error.code, 0);
        let _ = error.to_json();
    }
    let Ok((result, _version)) = CniResult::parse(data) else {
        return;
    };
    for version in VERSIONS {
        let written = result.to_value(version);
        let (back, read_version) = CniResult::from_value(written).expect("a written result reads");
        assert_eq!(read_version, version);
        netwarden_fuzz::assert_same(&back, &result);
    }
    let config = ConfList::parse(
        r#"{"cniVersion":"1.0.0","name":"n","type":"macvlan"}"#,
        None,
    )
    .expect("valid");
    let attachment = AttachmentRecord {
        network: "ns/n".into(),
        ifname: "net1".parse().expect("valid"),
        is_default: false,
        default_route: Vec::new(),
        delegate: Delegate::new(config, DelegateRequest::default()).expect("no capabilities"),
        result: Some(result.clone()),
    };
    let entries = build_network_status(&[attachment]);
    assert_eq!(entries.len(), 1);
    if let Some((_, interface)) = result.sandbox_interface("net1") {
        assert_eq!(entries[0].mac, interface.mac);
    }
    // The agent publishes it and every other agent reads it back.
    let published = render_network_status(&entries);
    let read = parse_network_status(&published).expect("published network-status parses");
    assert_eq!(read[0].ips, entries[0].ips);
});
