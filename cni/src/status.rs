//! The pod annotation `k8s.v1.cni.cncf.io/network-status`: one entry per sandbox
//! interface, written by the attach component and read by every agent to learn peer
//! addresses.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The annotation key.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// One interface of a pod, as the network-status annotation reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// `namespace/name` of the NAD, or the cluster network's CNI name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Bare addresses, no prefix length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<IpAddr>,
    #[serde(
        rename = "device-info",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
#[error("annotation {NETWORK_STATUS_ANNOTATION}: not a JSON list of network status entries: {0}")]
pub struct NetworkStatusError(#[from] serde_json::Error);

/// Parses the annotation's value.
pub fn parse_network_status(value: &str) -> Result<Vec<NetworkStatus>, NetworkStatusError> {
    Ok(serde_json::from_str(value)?)
}

/// Renders entries as the annotation's value.
pub fn render_network_status(entries: &[NetworkStatus]) -> String {
    serde_json::to_string_pretty(entries).expect("network status entries always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_multus_writes() {
        let value = r#"[{"name":"cbr0","interface":"eth0","ips":["10.244.1.5"],"mac":"0a:58:0a:f4:01:05","default":true,"dns":{}},
            {"name":"default/macvlan-conf","interface":"net1","ips":["192.168.1.205","fd00::5"],"mac":"86:1d:96:ff:55:0d","dns":{}}]"#;
        let entries = parse_network_status(value).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries[0].default);
        assert_eq!(entries[1].interface.as_deref(), Some("net1"));
        assert_eq!(entries[1].ips[1], "fd00::5".parse::<IpAddr>().unwrap());
        let again = parse_network_status(&render_network_status(&entries)).unwrap();
        assert_eq!(again, entries);
    }

    #[test]
    fn prefixed_addresses_are_refused() {
        let err = parse_network_status(r#"[{"name":"a/b","ips":["10.0.0.1/24"]}]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("network-status"), "{err}");
    }
}
