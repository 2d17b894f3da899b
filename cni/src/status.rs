//! The pod annotation `k8s.v1.cni.cncf.io/network-status`: one entry per sandbox
//! interface, written by the attach component and read by every agent to learn peer
//! addresses.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cache::AttachmentRecord;

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

/// The entries for a sandbox's attachments, in attachment order (cluster network first).
/// Per attachment: the addresses (bare, no prefix) the delegate gave the interface it
/// created in the sandbox, that interface's MAC and MTU, the DNS the result carries,
/// `default: true` only for the cluster network, and the `default-route` gateways.
/// Attachments whose ADD has not completed have no entry.
pub fn build_network_status(attachments: &[AttachmentRecord]) -> Vec<NetworkStatus> {
    attachments
        .iter()
        .filter_map(|attachment| {
            let result = attachment.result.as_ref()?;
            let interface = result.sandbox_interface(attachment.ifname.as_str());
            let ips = result
                .ips
                .iter()
                .filter(|ip| match (ip.interface, interface) {
                    (Some(index), Some((own, _))) => index == own,
                    // Results that do not say which interface an address is on.
                    _ => true,
                })
                .map(|ip| ip.address.addr())
                .collect();
            Some(NetworkStatus {
                name: attachment.network.clone(),
                interface: Some(attachment.ifname.to_string()),
                ips,
                mac: interface.and_then(|(_, i)| i.mac.clone()),
                mtu: interface.and_then(|(_, i)| i.mtu),
                default: attachment.is_default,
                dns: Some(serde_json::to_value(&result.dns).expect("DNS always serializes")),
                gateway: attachment.default_route.clone(),
                device_info: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        delegate::{Delegate, DelegateRequest},
        protocol::{CniResult, ConfList},
    };

    fn attachment(network: &str, ifname: &str, is_default: bool, result: &str) -> AttachmentRecord {
        let config = ConfList::parse(r#"{"cniVersion":"1.0.0","type":"x"}"#, Some("n")).unwrap();
        AttachmentRecord {
            network: network.into(),
            ifname: ifname.parse().unwrap(),
            is_default,
            default_route: vec![],
            delegate: Delegate::new(config, DelegateRequest::default()).unwrap(),
            result: Some(CniResult::parse(result.as_bytes()).unwrap().0),
        }
    }

    #[test]
    fn builds_the_documented_entries() {
        let cluster = attachment(
            "cbr0",
            "eth0",
            true,
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","mac":"0a:58:0a:f4:01:05","sandbox":"/run/netns/p"}],
                "ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":2}],"dns":{}}"#,
        );
        let mut secondary = attachment(
            "default/macvlan-conf",
            "net1",
            false,
            r#"{"cniVersion":"0.3.1","interfaces":[{"name":"net1","mac":"86:1d:96:ff:55:0d","mtu":1400,"sandbox":"/run/netns/p"}],
                "ips":[{"version":"4","address":"192.168.1.205/24","interface":0}],"dns":{"nameservers":["10.0.0.10"]}}"#,
        );
        secondary.default_route = vec!["192.168.1.1".parse().unwrap()];
        let mut pending = secondary.clone();
        pending.result = None;
        let status = build_network_status(&[cluster, secondary, pending]);
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::json!([
                {"name":"cbr0","interface":"eth0","ips":["10.244.1.5"],"mac":"0a:58:0a:f4:01:05","default":true,"dns":{}},
                {"name":"default/macvlan-conf","interface":"net1","ips":["192.168.1.205"],"mac":"86:1d:96:ff:55:0d","mtu":1400,
                 "dns":{"nameservers":["10.0.0.10"]},"gateway":["192.168.1.1"]}
            ])
        );
    }

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
