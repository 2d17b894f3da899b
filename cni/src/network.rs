//! Names of networks: a NetworkAttachmentDefinition is `namespace/name`.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A NetworkAttachmentDefinition, by namespace and name (both DNS-1123 labels).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NetworkRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkRefError {
    #[error("network reference {0:?} is empty")]
    Empty(String),
    #[error("network reference {reference:?}: {part} {value:?} is not a DNS-1123 label (lowercase letters, digits and '-', 1-63 characters, starting and ending with a letter or digit)")]
    NotALabel {
        reference: String,
        part: &'static str,
        value: String,
    },
    #[error("network reference {0:?} has more than one '/'")]
    TooManySlashes(String),
}

impl NetworkRef {
    /// Parses `[namespace/]name`; a bare name is in `default_namespace`.
    pub fn parse(reference: &str, default_namespace: &str) -> Result<Self, NetworkRefError> {
        let reference = reference.trim();
        if reference.is_empty() {
            return Err(NetworkRefError::Empty(reference.to_owned()));
        }
        let (namespace, name) = match reference.split_once('/') {
            Some((_, rest)) if rest.contains('/') => {
                return Err(NetworkRefError::TooManySlashes(reference.to_owned()))
            }
            Some((namespace, name)) => (namespace, name),
            None => (default_namespace, reference),
        };
        for (part, value) in [("namespace", namespace), ("name", name)] {
            if !is_dns1123_label(value) {
                return Err(NetworkRefError::NotALabel {
                    reference: reference.to_owned(),
                    part,
                    value: value.to_owned(),
                });
            }
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for NetworkRef {
    /// `namespace/name`; a reference without a namespace (never a NAD: the agent's name
    /// for the cluster network) is just its name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            return f.write_str(&self.name);
        }
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for NetworkRef {
    type Err = NetworkRefError;

    /// Parses the fully qualified `namespace/name` form (as network-status writes it).
    fn from_str(reference: &str) -> Result<Self, Self::Err> {
        if !reference.contains('/') {
            return Err(NetworkRefError::NotALabel {
                reference: reference.to_owned(),
                part: "namespace",
                value: String::new(),
            });
        }
        Self::parse(reference, "")
    }
}

/// RFC 1123 label: what Kubernetes requires of namespace and object names used here.
pub fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// RFC 1123 subdomain: what Kubernetes requires of most object names (pods included):
/// at most 253 characters, dot-separated parts of lowercase letters, digits and '-',
/// each starting and ending with a letter or digit.
pub fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_name_takes_the_default_namespace() {
        let r = NetworkRef::parse(" macvlan-conf ", "development").unwrap();
        assert_eq!(r.to_string(), "development/macvlan-conf");
    }

    #[test]
    fn qualified_name_keeps_its_namespace() {
        let r = NetworkRef::parse("privileged/macvlan-conf", "development").unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("privileged", "macvlan-conf")
        );
        assert_eq!("privileged/macvlan-conf".parse::<NetworkRef>().unwrap(), r);
    }

    #[test]
    fn bad_references_name_the_part() {
        let err = NetworkRef::parse("Bad/x", "d").unwrap_err().to_string();
        assert!(err.contains("namespace \"Bad\""), "{err}");
        assert!(NetworkRef::parse("a/b/c", "d").is_err());
        assert!(NetworkRef::parse("", "d").is_err());
        assert!(NetworkRef::parse("a/-x", "d").is_err());
        assert!("plain".parse::<NetworkRef>().is_err());
    }

    #[test]
    fn subdomains_are_dotted_labels_of_any_length_up_to_253() {
        for good in ["web-1", "a.b-c.d", &"a".repeat(100), &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(good), "{good}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "a..b",
            "-a",
            "a-",
            "A",
            "a_b",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }
}
