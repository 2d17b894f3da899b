//! Plugin results, held in one version-independent shape and written out for any version
//! from 0.3.0 on. The only difference on the wire between 0.3.x/0.4.0 and 1.x is the
//! `ips[].version` field ("4"/"6"), which 1.0.0 dropped.
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Version, VersionError};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the sandbox; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// `socketPath`, `pciID` and whatever a later spec adds.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// `mtu`, `advmss`, `priority`, `table`, `scope` (1.1.0) pass through untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    #[error("result is not valid JSON: {0}")]
    NotJson(String),
    #[error("result has no string \"cniVersion\"")]
    NoVersion,
    #[error("result \"cniVersion\": {0}")]
    Version(#[from] VersionError),
    #[error("result does not have the {version} shape: {problem}")]
    Shape { version: Version, problem: String },
}

impl CniResult {
    /// Reads a result of any supported version; returns it and the version it was in.
    pub fn parse(output: &[u8]) -> Result<(Self, Version), ResultError> {
        let value: Value =
            serde_json::from_slice(output).map_err(|e| ResultError::NotJson(e.to_string()))?;
        Self::from_value(value)
    }

    pub fn from_value(mut value: Value) -> Result<(Self, Version), ResultError> {
        let version: Version = value
            .get("cniVersion")
            .and_then(Value::as_str)
            .ok_or(ResultError::NoVersion)?
            .parse()?;
        if let Some(ips) = value.get_mut("ips").and_then(Value::as_array_mut) {
            for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
                ip.remove("version");
            }
        }
        if let Some(top) = value.as_object_mut() {
            top.remove("cniVersion");
        }
        let result = serde_json::from_value(value).map_err(|e| ResultError::Shape {
            version,
            problem: e.to_string(),
        })?;
        Ok((result, version))
    }

    /// The result as `version` writes it.
    pub fn to_value(&self, version: Version) -> Value {
        let mut value = serde_json::to_value(self).expect("a result always serializes");
        let top = value.as_object_mut().expect("a result is an object");
        if version.ips_carry_version() {
            if let Some(ips) = top.get_mut("ips").and_then(Value::as_array_mut) {
                for (ip, config) in ips.iter_mut().zip(&self.ips) {
                    let family = if config.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    ip["version"] = family.into();
                }
            }
        }
        top.insert("cniVersion".into(), version.as_str().into());
        value
    }

    /// The interface named `ifname` inside the sandbox, with its index.
    pub fn sandbox_interface(&self, ifname: &str) -> Option<(usize, &Interface)> {
        self.interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == ifname && i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V031: &str = r#"{"cniVersion":"0.3.1",
        "interfaces":[{"name":"net1","mac":"86:1d:96:ff:55:0d","sandbox":"/var/run/netns/x"}],
        "ips":[{"version":"4","address":"192.168.1.205/24","gateway":"192.168.1.1","interface":0},
               {"version":"6","address":"fd00::5/64","interface":0}],
        "routes":[{"dst":"0.0.0.0/0"}],
        "dns":{"nameservers":["10.0.0.10"]}}"#;

    #[test]
    fn old_results_read_and_lose_the_ip_version_in_1_0() {
        let (result, version) = CniResult::parse(V031.as_bytes()).unwrap();
        assert_eq!(version, Version::V0_3_1);
        assert_eq!(result.ips[0].address.to_string(), "192.168.1.205/24");
        assert_eq!(result.ips[1].interface, Some(0));
        let v1 = result.to_value(Version::V1_0_0);
        assert_eq!(v1["cniVersion"], "1.0.0");
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["ips"][0]["gateway"], "192.168.1.1");
    }

    #[test]
    fn every_version_round_trips() {
        let (result, _) = CniResult::parse(V031.as_bytes()).unwrap();
        for version in [
            Version::V0_3_0,
            Version::V0_3_1,
            Version::V0_4_0,
            Version::V1_0_0,
            Version::V1_1_0,
        ] {
            let value = result.to_value(version);
            assert_eq!(
                value["ips"][1].get("version").and_then(Value::as_str),
                version.ips_carry_version().then_some("6"),
                "{version}"
            );
            let (again, read_version) = CniResult::from_value(value).unwrap();
            assert_eq!((again, read_version), (result.clone(), version));
        }
    }

    #[test]
    fn unknown_interface_and_route_keys_pass_through() {
        let text = r#"{"cniVersion":"1.1.0","interfaces":[{"name":"net1","pciID":"0000:03:00.1"}],
            "routes":[{"dst":"10.0.0.0/8","table":100,"scope":253}]}"#;
        let (result, _) = CniResult::parse(text.as_bytes()).unwrap();
        let out = result.to_value(Version::V1_1_0);
        assert_eq!(out["interfaces"][0]["pciID"], "0000:03:00.1");
        assert_eq!(out["routes"][0]["table"], 100);
    }

    #[test]
    fn malformed_results_are_refused() {
        assert!(matches!(
            CniResult::parse(b"{}"),
            Err(ResultError::NoVersion)
        ));
        assert!(matches!(
            CniResult::parse(br#"{"cniVersion":"0.2.0","ip4":{}}"#),
            Err(ResultError::Version(_))
        ));
        let err =
            CniResult::parse(br#"{"cniVersion":"1.0.0","ips":[{"address":"nope"}]}"#).unwrap_err();
        assert!(matches!(err, ResultError::Shape { .. }), "{err}");
    }

    #[test]
    fn finds_the_sandbox_interface_by_name() {
        let (result, _) = CniResult::parse(V031.as_bytes()).unwrap();
        assert_eq!(result.sandbox_interface("net1").unwrap().0, 0);
        assert!(result.sandbox_interface("eth0").is_none());
    }
}
