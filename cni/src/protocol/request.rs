//! The runtime environment of one CNI invocation, parsed and validated once.
use std::{
    ffi::{OsStr, OsString},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use super::{
    args::CniArgsError, command::CommandError, CniArgs, Command, ContainerId, ContainerIdError,
};
use crate::{ifname::InterfaceNameError, InterfaceName};

/// CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH, typed.
/// Read from JSON (the attach socket), it must be exactly what the environment could
/// have given: the same checks apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RequestFields")]
pub struct Request {
    pub command: Command,
    /// Present for ADD, DEL and CHECK.
    pub container_id: Option<ContainerId>,
    /// Required for ADD and CHECK; DEL may come without it (the sandbox is gone).
    pub netns: Option<PathBuf>,
    pub ifname: Option<InterfaceName>,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("environment variable {0} is missing or empty")]
    Missing(&'static str),
    #[error("environment variable {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("CNI_COMMAND: {0}")]
    Command(#[from] CommandError),
    #[error("CNI_CONTAINERID: {0}")]
    ContainerId(#[from] ContainerIdError),
    #[error("CNI_IFNAME: {0}")]
    Ifname(#[from] InterfaceNameError),
    #[error("CNI_ARGS: {0}")]
    Args(#[from] CniArgsError),
    #[error("CNI_NETNS {0:?} is not an absolute path")]
    Netns(String),
    #[error("{0} holds a value no runtime environment can")]
    NotFromEnvironment(&'static str),
}

/// A [`Request`]'s fields as they arrive, before the environment's checks.
#[derive(Deserialize)]
struct RequestFields {
    command: Command,
    container_id: Option<ContainerId>,
    netns: Option<PathBuf>,
    ifname: Option<InterfaceName>,
    args: CniArgs,
    path: Vec<PathBuf>,
}

impl TryFrom<RequestFields> for Request {
    type Error = RequestError;

    /// Renders the fields as the environment and reads them back: anything the
    /// environment would refuse, or could not carry, is refused.
    fn try_from(fields: RequestFields) -> Result<Self, Self::Error> {
        let given = Self {
            command: fields.command,
            container_id: fields.container_id,
            netns: fields.netns,
            ifname: fields.ifname,
            args: fields.args,
            path: fields.path,
        };
        let vars: std::collections::HashMap<_, _> = given.to_vars().into_iter().collect();
        let read = Self::from_vars(|key| vars.get(key).cloned())?;
        let differs = [
            ("CNI_COMMAND", read.command != given.command),
            ("CNI_CONTAINERID", read.container_id != given.container_id),
            ("CNI_NETNS", read.netns != given.netns),
            ("CNI_IFNAME", read.ifname != given.ifname),
            ("CNI_ARGS", read.args != given.args),
            ("CNI_PATH", read.path != given.path),
        ];
        match differs.into_iter().find(|(_, differs)| *differs) {
            Some((variable, _)) => Err(RequestError::NotFromEnvironment(variable)),
            None => Ok(read),
        }
    }
}

impl Request {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, RequestError> {
        Self::from_vars(|key| std::env::var_os(key))
    }

    /// Reads the variables through `get` (the process environment, or a test's map).
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> Result<Self, RequestError> {
        let var = |key: &'static str| -> Result<Option<String>, RequestError> {
            match get(key) {
                None => Ok(None),
                Some(value) if value.is_empty() => Ok(None),
                Some(value) => value
                    .into_string()
                    .map(Some)
                    .map_err(|_| RequestError::NotUtf8(key)),
            }
        };
        let required = |key: &'static str| var(key)?.ok_or(RequestError::Missing(key));

        let command: Command = required("CNI_COMMAND")?.parse()?;
        let per_container = command.is_per_container();
        let container_id = if per_container {
            Some(required("CNI_CONTAINERID")?.parse()?)
        } else {
            var("CNI_CONTAINERID")?.map(|id| id.parse()).transpose()?
        };
        let ifname = if per_container {
            Some(required("CNI_IFNAME")?.parse()?)
        } else {
            None
        };
        let netns = match var("CNI_NETNS")? {
            None if matches!(command, Command::Add | Command::Check) => {
                return Err(RequestError::Missing("CNI_NETNS"))
            }
            None => None,
            Some(path) if !path.starts_with('/') => return Err(RequestError::Netns(path)),
            Some(path) => Some(PathBuf::from(path)),
        };
        let args = CniArgs::parse(&var("CNI_ARGS")?.unwrap_or_default())?;
        let path = var("CNI_PATH")?
            .map(|p| {
                std::env::split_paths(OsStr::new(&p))
                    .filter(|dir| !dir.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The variables to hand a delegate for this request.
    pub fn to_vars(&self) -> Vec<(&'static str, OsString)> {
        let mut vars = vec![
            ("CNI_COMMAND", OsString::from(self.command.as_str())),
            (
                "CNI_CONTAINERID",
                self.container_id
                    .as_ref()
                    .map(|id| id.as_str().into())
                    .unwrap_or_default(),
            ),
            (
                "CNI_NETNS",
                self.netns
                    .as_ref()
                    .map(|p| p.as_os_str().to_owned())
                    .unwrap_or_default(),
            ),
            (
                "CNI_IFNAME",
                self.ifname
                    .as_ref()
                    .map(|n| n.as_str().into())
                    .unwrap_or_default(),
            ),
            ("CNI_ARGS", self.args.to_string().into()),
        ];
        vars.push((
            "CNI_PATH",
            std::env::join_paths(&self.path).unwrap_or_default(),
        ));
        vars
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, os::unix::ffi::OsStringExt};

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Request, RequestError> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(*v)))
            .collect();
        Request::from_vars(|key| map.get(key).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=true;K8S_POD_NAME=p"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn a_full_add_parses_and_renders_back() {
        let request = parse(ADD).unwrap();
        assert_eq!(request.command, Command::Add);
        assert_eq!(request.ifname.as_ref().unwrap().as_str(), "eth0");
        assert_eq!(request.args.get("K8S_POD_NAME"), Some("p"));
        assert_eq!(request.path.len(), 2);
        let vars: HashMap<_, _> = request.to_vars().into_iter().collect();
        assert_eq!(vars["CNI_PATH"], "/opt/cni/bin:/usr/lib/cni");
        assert_eq!(vars["CNI_CONTAINERID"], "abc123");
    }

    #[test]
    fn every_bad_variable_is_named() {
        let with = |key: &str, value: &str| {
            let mut vars: Vec<_> = ADD.iter().filter(|(k, _)| *k != key).copied().collect();
            vars.push((key, value));
            parse(&vars).unwrap_err().to_string()
        };
        assert!(with("CNI_CONTAINERID", "../x").contains("CNI_CONTAINERID"));
        assert!(with("CNI_IFNAME", "way-too-long-interface").contains("CNI_IFNAME"));
        assert!(with("CNI_NETNS", "relative").contains("CNI_NETNS"));
        assert!(with("CNI_NETNS", "").contains("CNI_NETNS"));
        assert!(with("CNI_COMMAND", "FROB").contains("FROB"));
        assert!(with("CNI_ARGS", "x").contains("CNI_ARGS"));
    }

    #[test]
    fn del_needs_no_netns_and_version_needs_nothing() {
        let del: Vec<_> = ADD
            .iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .map(|(k, v)| (*k, if *k == "CNI_COMMAND" { "DEL" } else { *v }))
            .collect();
        assert_eq!(parse(&del).unwrap().netns, None);
        assert_eq!(
            parse(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }

    #[test]
    fn json_requests_are_held_to_the_environment_checks() {
        let json = |request: serde_json::Value| {
            serde_json::from_value::<Request>(request)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let add = serde_json::to_value(parse(ADD).unwrap()).unwrap();
        assert_eq!(json(add.clone()), Ok(()));
        for (field, value, variable) in [
            ("container_id", serde_json::Value::Null, "CNI_CONTAINERID"),
            ("netns", "relative/netns".into(), "CNI_NETNS"),
            ("netns", "".into(), "CNI_NETNS"),
            (
                "args",
                serde_json::json!([["K8S_POD_NAME", "a;b=c"]]),
                "CNI_ARGS",
            ),
            ("path", serde_json::json!(["/opt/cni/bin:/tmp"]), "CNI_PATH"),
        ] {
            let mut request = add.clone();
            request[field] = value;
            let error = json(request).unwrap_err();
            assert!(error.contains(variable), "{field}: {error}");
        }
        let mut gc = serde_json::to_value(parse(&[("CNI_COMMAND", "GC")]).unwrap()).unwrap();
        gc["ifname"] = "eth0".into();
        assert!(json(gc).unwrap_err().contains("CNI_IFNAME"));
    }

    #[test]
    fn non_utf8_is_refused() {
        let error = Request::from_vars(|key| match key {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some(OsString::from_vec(vec![0xff, 0x61])),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(error, RequestError::NotUtf8("CNI_CONTAINERID"));
    }
}
