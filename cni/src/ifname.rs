//! Linux interface names, validated once where they enter.
use std::{fmt, str::FromStr};

/// A valid Linux interface name: 1 to 15 bytes (IFNAMSIZ - 1), no `/`, no whitespace,
/// no NUL, not `.` or `..` (the kernel's `dev_valid_name`).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct InterfaceName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceNameError {
    #[error("interface name is empty")]
    Empty,
    #[error("interface name {0:?} is longer than 15 bytes")]
    TooLong(String),
    #[error("interface name {0:?} contains '/', whitespace, ':' or NUL")]
    BadCharacter(String),
    #[error("interface name {0:?} is reserved")]
    Reserved(String),
}

impl InterfaceName {
    pub const MAX_LEN: usize = 15;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InterfaceName {
    type Err = InterfaceNameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if name.is_empty() {
            return Err(InterfaceNameError::Empty);
        }
        if name.len() > Self::MAX_LEN {
            return Err(InterfaceNameError::TooLong(name.to_owned()));
        }
        if name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
        {
            return Err(InterfaceNameError::BadCharacter(name.to_owned()));
        }
        if name == "." || name == ".." {
            return Err(InterfaceNameError::Reserved(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }
}

impl TryFrom<String> for InterfaceName {
    type Error = InterfaceNameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<InterfaceName> for String {
    fn from(name: InterfaceName) -> Self {
        name.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["eth0", "net1", "a", "fifteen-chars-x"] {
            assert_eq!(name.parse::<InterfaceName>().unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_what_the_kernel_rejects() {
        assert_eq!("".parse::<InterfaceName>(), Err(InterfaceNameError::Empty));
        assert!(matches!(
            "sixteen-chars-xx".parse::<InterfaceName>(),
            Err(InterfaceNameError::TooLong(_))
        ));
        for bad in ["a/b", "a b", "a:b", "a\0b", "tab\t"] {
            assert!(matches!(
                bad.parse::<InterfaceName>(),
                Err(InterfaceNameError::BadCharacter(_))
            ));
        }
        for reserved in [".", ".."] {
            assert!(matches!(
                reserved.parse::<InterfaceName>(),
                Err(InterfaceNameError::Reserved(_))
            ));
        }
    }
}
