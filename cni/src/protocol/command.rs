//! The CNI commands (CNI_COMMAND).
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    #[serde(rename = "ADD")]
    Add,
    #[serde(rename = "DEL")]
    Del,
    #[serde(rename = "CHECK")]
    Check,
    #[serde(rename = "VERSION")]
    Version,
    #[serde(rename = "STATUS")]
    Status,
    #[serde(rename = "GC")]
    Gc,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI_COMMAND {0:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC")]
pub struct CommandError(pub String);

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Commands that act on one container's attachment and so need CNI_CONTAINERID and
    /// CNI_IFNAME.
    pub fn is_per_container(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

impl FromStr for Command {
    type Err = CommandError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(match value {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => return Err(CommandError(other.to_owned())),
        })
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for c in ["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"] {
            assert_eq!(c.parse::<Command>().unwrap().as_str(), c);
        }
        assert!("add".parse::<Command>().is_err());
    }
}
