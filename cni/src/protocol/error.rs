//! The CNI error object plugins print on stdout with a non-zero exit.
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Version;

/// The error codes the CNI spec reserves (1-99).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
    LimitedConnectivity = 51,
}

/// `{"cniVersion", "code", "msg", "details"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(version: Version, code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            cni_version: version.to_string(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Reads a plugin's stdout as an error object, if that is what it is.
    pub fn parse(output: &[u8]) -> Option<Self> {
        let error: Self = serde_json::from_slice(output).ok()?;
        (error.code != 0).then_some(error)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a CNI error always serializes")
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_reads_the_spec_shape() {
        let error =
            CniError::new(Version::V1_0_0, ErrorCode::InvalidConfig, "bad").with_details("field x");
        assert_eq!(
            error.to_json(),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"field x"}"#
        );
        assert_eq!(CniError::parse(error.to_json().as_bytes()), Some(error));
        assert_eq!(CniError::parse(b"not json"), None);
        assert_eq!(CniError::parse(br#"{"cniVersion":"1.0.0","ips":[]}"#), None);
    }
}
