//! Container IDs (CNI_CONTAINERID): also the cache's file name, so validated strictly.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// The CNI spec's container ID: alphanumerics plus `_`, `.` and `-`, starting with an
/// alphanumeric. At most 200 bytes, so `<id>.json` and its temporary sibling stay under
/// the file-name limit; the charset keeps `/`, NUL and `..` out of any path built from it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerIdError {
    #[error("container ID is empty")]
    Empty,
    #[error("container ID {0:?} is longer than 200 bytes")]
    TooLong(String),
    #[error("container ID {0:?} may only hold letters, digits, '_', '.' and '-', and must start with a letter or digit")]
    BadCharacter(String),
}

impl ContainerId {
    pub const MAX_LEN: usize = 200;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContainerId {
    type Err = ContainerIdError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        if id.is_empty() {
            return Err(ContainerIdError::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(ContainerIdError::TooLong(id.to_owned()));
        }
        let bytes = id.as_bytes();
        if !bytes[0].is_ascii_alphanumeric()
            || !bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(ContainerIdError::BadCharacter(id.to_owned()));
        }
        Ok(Self(id.to_owned()))
    }
}

impl TryFrom<String> for ContainerId {
    type Error = ContainerIdError;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        id.parse()
    }
}

impl From<ContainerId> for String {
    fn from(id: ContainerId) -> Self {
        id.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_ids_are_accepted() {
        for id in ["d9f3c2a1b0e4", "abc_def.1-2", "A"] {
            assert_eq!(id.parse::<ContainerId>().unwrap().as_str(), id);
        }
    }

    #[test]
    fn ids_that_could_escape_a_directory_are_refused() {
        for bad in ["..", "../x", "a/b", "/abs", ".hidden", "a\0b", "-x", "a b"] {
            assert!(
                matches!(
                    bad.parse::<ContainerId>(),
                    Err(ContainerIdError::BadCharacter(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!("".parse::<ContainerId>(), Err(ContainerIdError::Empty));
        assert!(matches!(
            "a".repeat(201).parse::<ContainerId>(),
            Err(ContainerIdError::TooLong(_))
        ));
        let err = serde_json::from_str::<ContainerId>(r#""../etc""#).unwrap_err();
        assert!(err.to_string().contains("../etc"), "{err}");
    }
}
