//! The pod annotation `k8s.v1.cni.cncf.io/networks` (SPEC-NOTES section 1) and
//! `v1.multus-cni.io/default-network`. Pure parsing: every error names the item.
use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ifname::InterfaceNameError, network::NetworkRefError, InterfaceName, NetworkRef};

pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

/// One requested attachment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkSelection {
    pub network: NetworkRef,
    pub interface: Option<InterfaceName>,
    pub ips: Vec<RequestedIp>,
    pub mac: Option<MacAddress>,
    pub infiniband_guid: Option<String>,
    /// Merged into the delegate's `args.cni`; these win.
    pub cni_args: Map<String, Value>,
    pub port_mappings: Vec<Value>,
    pub bandwidth: Option<Value>,
    /// Gateways whose default route this attachment should carry.
    pub default_route: Vec<IpAddr>,
    pub ipam_claim_reference: Option<String>,
    pub device_id: Option<String>,
}

/// An address asked for in `ips`: with or without prefix length, written back as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RequestedIp {
    Address(IpAddr),
    Network(IpNet),
}

/// A MAC address `aa:bb:cc:dd:ee:ff` (hex, case kept as written, normalised to lowercase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("annotation {NETWORKS_ANNOTATION}: item {index} ({item:?}): {problem}")]
    Item {
        index: usize,
        item: String,
        problem: ItemProblem,
    },
    #[error("annotation {NETWORKS_ANNOTATION}: not a JSON list of network selections: {0}")]
    NotAList(String),
    #[error("annotation {DEFAULT_NETWORK_ANNOTATION} ({value:?}): {problem}")]
    DefaultNetwork { value: String, problem: ItemProblem },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemProblem {
    #[error("empty item")]
    Empty,
    #[error("{0}")]
    Reference(#[from] NetworkRefError),
    #[error("interface: {0}")]
    Interface(#[from] InterfaceNameError),
    #[error("more than one '@'")]
    TooManyAts,
    #[error("field {field:?}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("not a JSON object")]
    NotAnObject,
}

impl FromStr for RequestedIp {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Self::Network(net));
        }
        text.parse::<IpAddr>()
            .map(Self::Address)
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))
    }
}

impl TryFrom<String> for RequestedIp {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<RequestedIp> for String {
    fn from(ip: RequestedIp) -> Self {
        ip.to_string()
    }
}

impl fmt::Display for RequestedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(a) => a.fmt(f),
            Self::Network(n) => n.fmt(f),
        }
    }
}

impl MacAddress {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MacAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let octets: Vec<&str> = text.split(':').collect();
        if octets.len() != 6
            || !octets
                .iter()
                .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!("{text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        }
        Ok(Self(text.to_ascii_lowercase()))
    }
}

impl TryFrom<String> for MacAddress {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<MacAddress> for String {
    fn from(mac: MacAddress) -> Self {
        mac.0
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl NetworkSelection {
    fn new(network: NetworkRef) -> Self {
        Self {
            network,
            interface: None,
            ips: Vec::new(),
            mac: None,
            infiniband_guid: None,
            cni_args: Map::new(),
            port_mappings: Vec::new(),
            bandwidth: None,
            default_route: Vec::new(),
            ipam_claim_reference: None,
            device_id: None,
        }
    }
}

/// Parses the networks annotation of a pod in `pod_namespace`. An empty value selects nothing.
pub fn parse_networks(
    value: &str,
    pod_namespace: &str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    if value.contains(['[', '{', '"']) {
        parse_json_form(value, pod_namespace)
    } else {
        value
            .split(',')
            .enumerate()
            .map(|(i, item)| {
                parse_short_item(item, pod_namespace).map_err(|problem| SelectionError::Item {
                    index: i + 1,
                    item: item.trim().to_owned(),
                    problem,
                })
            })
            .collect()
    }
}

/// Parses `v1.multus-cni.io/default-network`: `[namespace/]name`.
pub fn parse_default_network(
    value: &str,
    pod_namespace: &str,
) -> Result<NetworkRef, SelectionError> {
    NetworkRef::parse(value, pod_namespace).map_err(|e| SelectionError::DefaultNetwork {
        value: value.to_owned(),
        problem: e.into(),
    })
}

fn parse_short_item(item: &str, pod_namespace: &str) -> Result<NetworkSelection, ItemProblem> {
    let item = item.trim();
    if item.is_empty() {
        return Err(ItemProblem::Empty);
    }
    let (reference, interface) = match item.split_once('@') {
        Some((_, rest)) if rest.contains('@') => return Err(ItemProblem::TooManyAts),
        Some((reference, ifname)) => (reference, Some(ifname.parse()?)),
        None => (item, None),
    };
    let mut selection = NetworkSelection::new(NetworkRef::parse(reference, pod_namespace)?);
    selection.interface = interface;
    Ok(selection)
}

fn parse_json_form(
    value: &str,
    pod_namespace: &str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    let items: Vec<Value> =
        serde_json::from_str(value).map_err(|e| SelectionError::NotAList(e.to_string()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            parse_json_item(item, pod_namespace).map_err(|problem| SelectionError::Item {
                index: i + 1,
                item: item
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| item.to_string()),
                problem,
            })
        })
        .collect()
}

fn parse_json_item(item: &Value, pod_namespace: &str) -> Result<NetworkSelection, ItemProblem> {
    let object = item.as_object().ok_or(ItemProblem::NotAnObject)?;
    let string = |field: &'static str| -> Result<Option<&str>, ItemProblem> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ItemProblem::Field {
                field,
                problem: "not a string".into(),
            }),
        }
    };
    let list = |field: &'static str| -> Result<Vec<Value>, ItemProblem> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => Err(ItemProblem::Field {
                field,
                problem: "not a list".into(),
            }),
        }
    };
    let parsed_list = |field: &'static str| -> Result<Vec<String>, ItemProblem> {
        list(field)?
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(ItemProblem::Field {
                    field,
                    problem: format!("{other} is not a string"),
                }),
            })
            .collect()
    };

    let name = string("name")?.ok_or(ItemProblem::Field {
        field: "name",
        problem: "missing".into(),
    })?;
    let namespace = string("namespace")?.unwrap_or(pod_namespace);
    // A qualified name carries its own namespace; a bare one is in `namespace`.
    let mut selection = NetworkSelection::new(NetworkRef::parse(name, namespace)?);
    selection.interface = string("interface")?.map(str::parse).transpose()?;
    selection.ips = parsed_list("ips")?
        .iter()
        .map(|ip| {
            ip.parse().map_err(|problem| ItemProblem::Field {
                field: "ips",
                problem,
            })
        })
        .collect::<Result<_, _>>()?;
    selection.mac = string("mac")?
        .map(|mac| {
            mac.parse().map_err(|problem| ItemProblem::Field {
                field: "mac",
                problem,
            })
        })
        .transpose()?;
    selection.infiniband_guid = string("infiniband-guid")?.map(str::to_owned);
    selection.cni_args = match object.get("cni-args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(args)) => args.clone(),
        Some(_) => {
            return Err(ItemProblem::Field {
                field: "cni-args",
                problem: "not an object".into(),
            })
        }
    };
    selection.port_mappings = list("portMappings")?;
    selection.bandwidth = match object.get("bandwidth") {
        None | Some(Value::Null) => None,
        Some(bw @ Value::Object(_)) => Some(bw.clone()),
        Some(_) => {
            return Err(ItemProblem::Field {
                field: "bandwidth",
                problem: "not an object".into(),
            })
        }
    };
    selection.default_route = parsed_list("default-route")?
        .iter()
        .map(|gw| {
            gw.parse().map_err(|_| ItemProblem::Field {
                field: "default-route",
                problem: format!("{gw:?} is not an IP address"),
            })
        })
        .collect::<Result<_, _>>()?;
    selection.ipam_claim_reference = string("ipam-claim-reference")?.map(str::to_owned);
    selection.device_id = string("deviceID")?.map(str::to_owned);
    Ok(selection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(selections: &[NetworkSelection]) -> Vec<String> {
        selections.iter().map(|s| s.network.to_string()).collect()
    }

    #[test]
    fn short_form_items_with_namespaces_and_interfaces() {
        let parsed = parse_networks(" macvlan-conf , other/br@data0,macvlan-conf", "dev").unwrap();
        assert_eq!(
            refs(&parsed),
            ["dev/macvlan-conf", "other/br", "dev/macvlan-conf"]
        );
        assert_eq!(parsed[1].interface.as_ref().unwrap().as_str(), "data0");
        assert_eq!(parsed[0].interface, None);
        assert!(parse_networks("  ", "dev").unwrap().is_empty());
    }

    #[test]
    fn short_form_errors_name_the_item() {
        let cases = [
            ("a,,b", 2, "empty item"),
            ("a,Bad", 2, "\"Bad\""),
            ("a@b@c", 1, "more than one '@'"),
            ("a@this-name-is-too-long", 1, "interface"),
            ("x/y/z", 1, "more than one '/'"),
            ("a,", 2, "empty item"),
        ];
        for (value, index, problem) in cases {
            let err = parse_networks(value, "dev").unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, SelectionError::Item { index: i, .. } if *i == index),
                "{value}: {text}"
            );
            assert!(text.contains(problem), "{value}: {text}");
        }
    }

    #[test]
    fn json_form_with_every_field() {
        let value = r#"[
          {"name":"macvlan-conf","interface":"data1","ips":["10.1.1.5/24","fd00::5"],
           "mac":"C2:00:00:00:00:01","infiniband-guid":"c2:00:00:00:00:00:00:01",
           "cni-args":{"foo":"bar"},"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
           "bandwidth":{"ingressRate":1000},"default-route":["10.1.1.1"],
           "ipam-claim-reference":"claim-1","deviceID":"0000:03:00.1","unknownKey":1},
          {"name":"br","namespace":"other"}
        ]"#;
        let parsed = parse_networks(value, "dev").unwrap();
        assert_eq!(refs(&parsed), ["dev/macvlan-conf", "other/br"]);
        let first = &parsed[0];
        assert_eq!(first.interface.as_ref().unwrap().as_str(), "data1");
        assert_eq!(
            first
                .ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.1.1.5/24", "fd00::5"]
        );
        assert_eq!(first.mac.as_ref().unwrap().as_str(), "c2:00:00:00:00:01");
        assert_eq!(first.cni_args["foo"], "bar");
        assert_eq!(first.port_mappings.len(), 1);
        assert_eq!(first.bandwidth.as_ref().unwrap()["ingressRate"], 1000);
        assert_eq!(first.default_route, ["10.1.1.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(first.ipam_claim_reference.as_deref(), Some("claim-1"));
        assert_eq!(first.device_id.as_deref(), Some("0000:03:00.1"));
        assert_eq!(
            first.infiniband_guid.as_deref(),
            Some("c2:00:00:00:00:00:00:01")
        );
    }

    #[test]
    fn json_form_errors_name_the_item_and_field() {
        let cases = [
            (
                r#"[{"name":"a"},{"interface":"x"}]"#,
                2,
                "\"name\": missing",
            ),
            (r#"[{"name":"a","ips":["nope"]}]"#, 1, "\"ips\""),
            (r#"[{"name":"a","ips":"10.0.0.1"}]"#, 1, "not a list"),
            (r#"[{"name":"a","mac":"zz"}]"#, 1, "\"mac\""),
            (r#"[{"name":"a","cni-args":[1]}]"#, 1, "\"cni-args\""),
            (
                r#"[{"name":"a","default-route":["x"]}]"#,
                1,
                "\"default-route\"",
            ),
            (r#"[{"name":"a","interface":"a b"}]"#, 1, "interface"),
            (r#"[{"name":"A"}]"#, 1, "\"A\""),
            (r#"[{"name":"a","namespace":"B_"}]"#, 1, "namespace"),
            (
                r#"[{"name":"a","namespace":"../.."}]"#,
                1,
                r#"namespace "../.." is not a DNS-1123 label"#,
            ),
            (r#"["a"]"#, 1, "not a JSON object"),
        ];
        for (value, index, problem) in cases {
            let err = parse_networks(value, "dev").unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, SelectionError::Item { index: i, .. } if *i == index),
                "{value}: {text}"
            );
            assert!(text.contains(problem), "{value}: {text}");
        }
        let err = parse_networks(r#"{"name":"a"}"#, "dev").unwrap_err();
        assert!(matches!(err, SelectionError::NotAList(_)), "{err}");
    }

    #[test]
    fn default_network_annotation() {
        assert_eq!(
            parse_default_network("kube-system/calico", "dev")
                .unwrap()
                .to_string(),
            "kube-system/calico"
        );
        assert_eq!(
            parse_default_network("calico", "dev").unwrap().to_string(),
            "dev/calico"
        );
        let err = parse_default_network("a/b/c", "dev")
            .unwrap_err()
            .to_string();
        assert!(err.contains(DEFAULT_NETWORK_ANNOTATION), "{err}");
    }
}
