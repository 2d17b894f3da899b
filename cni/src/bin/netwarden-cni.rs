//! `netwarden-cni`: the binary the container runtime executes. Forwarding ADD and CHECK to
//! the node agent comes with the attach service; until then this build answers VERSION,
//! performs DEL itself from the on-disk cache (what it will do whenever the agent is
//! unreachable), and refuses the rest with a CNI error, so a runtime never mistakes it for
//! a working plugin.
use std::{
    io::{Read, Write},
    path::PathBuf,
};

use netwarden_cni::{
    protocol::{CniError, Command, ErrorCode, Request, Version, VersionInfo},
    sandbox,
};

/// Where the agent keeps the per-sandbox cache, unless the network config says `cacheDir`.
const DEFAULT_CACHE_DIR: &str = "/var/lib/netwarden/cache";

fn main() {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let config: serde_json::Value = serde_json::from_slice(&stdin).unwrap_or_default();
    // Errors are written in the version the runtime asked for, when it is one we speak.
    let version = config
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse::<Version>().ok())
        .unwrap_or(Version::LATEST);
    match run(&config) {
        Ok(output) => {
            if let Some(output) = output {
                let _ = writeln!(std::io::stdout(), "{output}");
            }
        }
        Err((code, msg)) => {
            let error = CniError::new(version, code, msg);
            let _ = writeln!(std::io::stdout(), "{}", error.to_json());
            std::process::exit(1);
        }
    }
}

fn run(config: &serde_json::Value) -> Result<Option<String>, (ErrorCode, String)> {
    let request =
        Request::from_env().map_err(|e| (ErrorCode::InvalidEnvironment, e.to_string()))?;
    if request.command != Command::Version {
        let asked = config
            .get("cniVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let speaks = asked
            .parse::<Version>()
            .is_ok_and(|v| Version::RUNTIME_SUPPORTED.contains(&v));
        if !speaks {
            return Err((
                ErrorCode::IncompatibleVersion,
                format!("netwarden-cni: network config cniVersion {asked:?} is not one of 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
            ));
        }
    }
    match request.command {
        Command::Version => Ok(Some(
            serde_json::to_string(&VersionInfo::netwarden()).expect("version info serializes"),
        )),
        Command::Del => {
            let cache_dir = config
                .get("cacheDir")
                .and_then(|d| d.as_str())
                .unwrap_or(DEFAULT_CACHE_DIR);
            sandbox::delete_from_cache(&request, &PathBuf::from(cache_dir), &request.path)
                .map_err(|e| match e {
                    // A cache that cannot be read needs a person; failed delegates a retry.
                    sandbox::SandboxError::Cache(_) => (ErrorCode::Io, e.to_string()),
                    _ => (ErrorCode::TryAgainLater, e.to_string()),
                })?;
            Ok(None)
        }
        other => Err((
            ErrorCode::PluginNotAvailable,
            format!("netwarden-cni: {other} needs the netwarden agent, which this build does not reach yet"),
        )),
    }
}
