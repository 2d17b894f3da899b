//! CNI specification versions and the VERSION command's answer.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// The specification versions netwarden reads. 0.3.0 only appears in delegate
/// configurations (older NADs, e.g. the Multus quickstart); its result format is 0.3.1's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "CNI version {0:?} is not supported (netwarden speaks 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0)"
)]
pub struct VersionError(pub String);

impl Version {
    /// What netwarden offers the runtime (VERSION's `supportedVersions`).
    pub const RUNTIME_SUPPORTED: [Version; 4] = [
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];
    pub const LATEST: Version = Version::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Before 1.0.0 every `ips[]` entry carries `"version": "4"|"6"`.
    pub fn ips_carry_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// CHECK exists from 0.4.0 on; prevResult on DEL too.
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(match value {
            "0.3.0" => Version::V0_3_0,
            "0.3.1" => Version::V0_3_1,
            "0.4.0" => Version::V0_4_0,
            "1.0.0" => Version::V1_0_0,
            "1.1.0" => Version::V1_1_0,
            other => return Err(VersionError(other.to_owned())),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The VERSION command's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: Version,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<Version>,
}

impl VersionInfo {
    /// netwarden's own answer to the runtime.
    pub fn netwarden() -> Self {
        Self {
            cni_version: Version::LATEST,
            supported_versions: Version::RUNTIME_SUPPORTED.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_order() {
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            assert_eq!(v.parse::<Version>().unwrap().to_string(), v);
        }
        assert!(Version::V0_3_1 < Version::V1_0_0);
        assert!(Version::V0_4_0.ips_carry_version());
        assert!(!Version::V1_0_0.ips_carry_version());
        assert!(!Version::V0_3_1.has_check());
    }

    #[test]
    fn unknown_versions_are_named() {
        let err = "0.2.0".parse::<Version>().unwrap_err().to_string();
        assert!(err.contains("\"0.2.0\""), "{err}");
    }

    #[test]
    fn version_answer_is_what_runtimes_expect() {
        let json = serde_json::to_string(&VersionInfo::netwarden()).unwrap();
        assert_eq!(
            json,
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
    }
}
