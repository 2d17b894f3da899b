//! `00-netwarden.conflist`: the configuration the runtime loads (it sorts first), whose
//! only plugin is `netwarden-cni`. The agent then runs the primary network as `eth0` and the
//! pod's requested networks after it.
use std::path::{Path, PathBuf};

use netwarden_cni::protocol::Version;
use serde_json::json;

use super::primary::Primary;

/// The file name: `00-` sorts before the configurations CNI installers write (`05-cilium`,
/// `10-calico`, `10-flannel`, ...), so the runtime uses this one.
pub const FILE_NAME: &str = "00-netwarden.conflist";

/// What a primary of version 0.3.0 (read, but not offered to runtimes) becomes: 0.3.0's
/// result format is 0.3.1's.
const FALLBACK_VERSION: Version = Version::V0_3_1;

/// What the generated configuration tells `netwarden-cni`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginSettings {
    /// The agent's attach socket.
    pub socket: PathBuf,
    /// The agent's sandbox cache (for DEL while the agent is down).
    pub cache_dir: PathBuf,
}

/// The conflist delegating to `primary`, as written to disk. It speaks the primary's CNI
/// version (the runtime already speaks it) when netwarden offers it to runtimes, else 0.3.1.
/// `clusterNetwork` records which file the agent runs as `eth0`; `netwarden-cni` itself only
/// reads `socket` and `cacheDir`.
pub fn render(primary: &Primary, settings: &PluginSettings) -> String {
    let version = primary.network.cni_version;
    let version = if Version::RUNTIME_SUPPORTED.contains(&version) {
        version
    } else {
        FALLBACK_VERSION
    };
    let conflist = json!({
        "cniVersion": version.as_str(),
        "name": "netwarden",
        "plugins": [{
            "type": "netwarden-cni",
            "socket": settings.socket,
            "cacheDir": settings.cache_dir,
            "clusterNetwork": primary.path,
        }],
    });
    let mut text = serde_json::to_string_pretty(&conflist).expect("JSON value serializes");
    text.push('\n');
    text
}

/// The primary file the configuration at `path` names, if it is one of ours.
pub fn delegates_to(text: &str) -> Option<PathBuf> {
    let conflist: serde_json::Value = serde_json::from_str(text).ok()?;
    let plugin = conflist.get("plugins")?.get(0)?;
    (plugin.get("type")?.as_str()? == "netwarden-cni")
        .then(|| plugin.get("clusterNetwork")?.as_str().map(Path::new))
        .flatten()
        .map(Path::to_owned)
}

#[cfg(test)]
mod tests {
    use netwarden_cni::protocol::ConfList;

    use super::*;

    fn primary(text: &str) -> Primary {
        Primary {
            path: "/etc/cni/net.d/10-flannel.conflist".into(),
            text: text.into(),
            network: ConfList::parse(text, None).unwrap(),
        }
    }

    fn settings() -> PluginSettings {
        PluginSettings {
            socket: "/run/netwarden/cni.sock".into(),
            cache_dir: "/var/lib/netwarden/cache".into(),
        }
    }

    #[test]
    fn delegates_to_the_primary_in_its_version() {
        let text = render(
            &primary(r#"{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel"}]}"#),
            &settings(),
        );
        let parsed = ConfList::parse(&text, None).unwrap();
        assert_eq!(parsed.cni_version, Version::V0_3_1);
        assert_eq!(parsed.name, "netwarden");
        assert_eq!(parsed.plugins.len(), 1);
        let plugin = parsed.plugins[0].body();
        assert_eq!(plugin["type"], "netwarden-cni");
        assert_eq!(plugin["socket"], "/run/netwarden/cni.sock");
        assert_eq!(plugin["cacheDir"], "/var/lib/netwarden/cache");
        assert_eq!(
            delegates_to(&text).unwrap(),
            Path::new("/etc/cni/net.d/10-flannel.conflist")
        );
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn a_0_3_0_primary_is_spoken_to_as_0_3_1() {
        let text = render(
            &primary(r#"{"cniVersion":"0.3.0","name":"old","type":"bridge"}"#),
            &settings(),
        );
        assert_eq!(
            ConfList::parse(&text, None).unwrap().cni_version,
            Version::V0_3_1
        );
    }

    #[test]
    fn other_configs_delegate_to_nothing() {
        assert_eq!(delegates_to(r#"{"plugins":[{"type":"flannel"}]}"#), None);
        assert_eq!(delegates_to("not json"), None);
    }
}
