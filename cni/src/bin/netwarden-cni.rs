//! `netwarden-cni`: the binary the container runtime executes. It answers VERSION itself
//! and forwards every other command to the node agent's attach service over a unix socket
//! (`"socket"` in the network config, default /run/netwarden/cni.sock). An ADD waits,
//! bounded (`"agentWaitSeconds"`, default 30), for the agent to accept it (the agent
//! listens only once it is ready); when the agent cannot be reached on DEL it performs the
//! DEL itself from the on-disk cache (`"cacheDir"`, default /var/lib/netwarden/cache), so a
//! pod's resources are released even while the agent is down.
use std::{
    io::{Read, Write},
    path::PathBuf,
    time::Duration,
};

use netwarden_cni::{
    agent_link::{AgentClient, AgentRequest, AgentResponse, LinkError, DEFAULT_SOCKET},
    protocol::{CniError, Command, ErrorCode, Request, Version, VersionInfo},
    sandbox,
};

/// Where the agent keeps the per-sandbox cache, unless the network config says `cacheDir`.
const DEFAULT_CACHE_DIR: &str = "/var/lib/netwarden/cache";

/// How long ADD waits for the agent, unless the network config says `agentWaitSeconds`.
const DEFAULT_AGENT_WAIT: Duration = Duration::from_secs(30);

type Failure = (ErrorCode, String);

fn main() {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let config: serde_json::Value = serde_json::from_slice(&stdin).unwrap_or_default();
    let error = match run(&config, stdin) {
        Ok(None) => return,
        Ok(Some(output)) => {
            let _ = writeln!(std::io::stdout(), "{output}");
            return;
        }
        Err(error) => error,
    };
    let _ = writeln!(std::io::stdout(), "{}", error.to_json());
    std::process::exit(1);
}

fn run(config: &serde_json::Value, stdin: Vec<u8>) -> Result<Option<String>, CniError> {
    let fail = |(code, msg): Failure| CniError::new(version_of(config), code, msg);
    let request =
        Request::from_env().map_err(|e| fail((ErrorCode::InvalidEnvironment, e.to_string())))?;
    if request.command == Command::Version {
        return Ok(Some(
            serde_json::to_string(&VersionInfo::netwarden()).expect("version info serializes"),
        ));
    }
    let stdin = String::from_utf8(stdin).map_err(|_| {
        fail((
            ErrorCode::Decode,
            "netwarden-cni: the network config on stdin is not UTF-8".into(),
        ))
    })?;
    if let Err(error) = serde_json::from_str::<serde_json::Value>(&stdin) {
        return Err(fail((
            ErrorCode::Decode,
            format!("netwarden-cni: the network config on stdin is not JSON: {error}"),
        )));
    }
    check_version(config).map_err(fail)?;
    let setting = |key: &str| config.get(key).and_then(|v| v.as_str()).map(PathBuf::from);
    let client = AgentClient::new(setting("socket").unwrap_or_else(|| DEFAULT_SOCKET.into()));
    let command = request.command;
    let forwarded = AgentRequest::Cni {
        request: request.clone(),
        config: stdin,
    };
    let answer = if command == Command::Add {
        let wait = config
            .get("agentWaitSeconds")
            .and_then(|v| v.as_f64())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(DEFAULT_AGENT_WAIT, Duration::from_secs_f64);
        client.call_when_ready(&forwarded, wait)
    } else {
        client.call(&forwarded)
    };
    match answer {
        Ok(AgentResponse::Success { stdout }) => Ok(stdout),
        Ok(AgentResponse::Failure { error }) => Err(error),
        Ok(AgentResponse::Pong) => Err(fail((
            ErrorCode::Io,
            format!(
                "netwarden-cni: the agent on {} answered a {command} with a pong",
                client.socket().display()
            ),
        ))),
        Err(not_ready @ LinkError::NotReady { .. }) => Err(fail((
            ErrorCode::TryAgainLater,
            format!(
                "netwarden-cni: the netwarden agent is not ready: {not_ready}. Check that the netwarden agent runs on this node and serves {} (the \"socket\" of this network config must be the agent's attach socket)",
                client.socket().display()
            ),
        ))),
        Err(unreachable) if command == Command::Del => {
            // The agent is down (or died mid-request): DEL is idempotent, so do it here.
            let cache_dir = setting("cacheDir").unwrap_or_else(|| DEFAULT_CACHE_DIR.into());
            sandbox::delete_from_cache(&request, &cache_dir, &request.path).map_err(|e| {
                fail((
                    e.cni_code(),
                    format!("netwarden-cni: DEL without the agent ({unreachable}): {e}"),
                ))
            })?;
            Ok(None)
        }
        Err(unreachable) => Err(fail((
            ErrorCode::PluginNotAvailable,
            format!("netwarden-cni: {command} needs the netwarden agent: {unreachable}"),
        ))),
    }
}

fn version_of(config: &serde_json::Value) -> Version {
    config
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(Version::LATEST)
}

fn check_version(config: &serde_json::Value) -> Result<(), Failure> {
    let asked = config
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let speaks = asked
        .parse::<Version>()
        .is_ok_and(|v| Version::RUNTIME_SUPPORTED.contains(&v));
    if speaks {
        return Ok(());
    }
    Err((
        ErrorCode::IncompatibleVersion,
        format!("netwarden-cni: network config cniVersion {asked:?} is not one of 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
    ))
}
