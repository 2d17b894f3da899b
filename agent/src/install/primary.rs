//! The cluster's primary CNI configuration: the network every pod gets as `eth0`, which
//! netwarden delegates to. Runtimes (containerd, CRI-O, kubelet's CNI loaders) use the
//! alphabetically first `*.conf`, `*.conflist` or `*.json` file of their configuration
//! directory; netwarden's own file sorts first, so the primary is the first of the others.
use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

use netwarden_cni::protocol::ConfList;

use super::InstallError;

/// The extensions runtimes load network configurations from.
pub const EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// Plugin types that mean another multi-network plugin still owns the directory.
const MULTUS_TYPES: [&str; 2] = ["multus", "multus-shim"];

/// The primary configuration as read: where it is, its text and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct Primary {
    pub path: PathBuf,
    pub text: String,
    pub network: ConfList,
}

/// The configuration files of `dir` a runtime would consider, in the order it does (by
/// file name, byte-wise). Hidden files are temporary files of writers, never configs here.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let entries = std::fs::read_dir(dir).map_err(InstallError::io("list", dir))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(InstallError::io("list", dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let loadable = path
            .extension()
            .and_then(OsStr::to_str)
            .is_some_and(|e| EXTENSIONS.contains(&e));
        if loadable && !name.to_string_lossy().starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// The alphabetically first configuration of `dir` other than `ours`; None when there is
/// none yet (the primary CNI is not installed on this node yet).
pub fn discover(dir: &Path, ours: &OsStr) -> Result<Option<Primary>, InstallError> {
    let first = config_files(dir)?
        .into_iter()
        .find(|path| path.file_name() != Some(ours));
    first.map(|path| read(&path)).transpose()
}

/// Reads and checks the primary configuration at `path`. It is refused when it cannot be
/// delegated to: not a CNI config, netwarden itself (a loop), or Multus (remove Multus
/// first: netwarden does its job).
pub fn read(path: &Path) -> Result<Primary, InstallError> {
    let problem = |problem: String| InstallError::Primary {
        path: path.to_owned(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
    let network = ConfList::parse(&text, None)
        .map_err(|e| problem(format!("not a CNI network configuration: {e}")))?;
    for plugin in &network.plugins {
        let kind = plugin.plugin_type();
        if kind == "netwarden-cni" {
            return Err(problem(
                "it calls netwarden-cni itself, so netwarden cannot delegate to it (remove it, or configure the primary with --primary)".into(),
            ));
        }
        if MULTUS_TYPES.contains(&kind) {
            return Err(problem(format!(
                "it is Multus (type {kind:?}): netwarden replaces Multus; uninstall Multus and remove this file"
            )));
        }
    }
    Ok(Primary {
        path: path.to_owned(),
        text,
        network,
    })
}

/// Configuration files that sort before `ours`: the runtime would use the first of them
/// instead of netwarden's.
pub fn ahead_of(dir: &Path, ours: &OsStr) -> Result<Vec<PathBuf>, InstallError> {
    Ok(config_files(dir)?
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|name| name < ours))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "00-netwarden.conflist";

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn flannel() -> &'static str {
        r#"{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel","delegate":{"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#
    }

    #[test]
    fn the_first_config_by_name_other_than_ours_is_the_primary() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            OURS,
            r#"{"cniVersion":"1.0.0","name":"netwarden","plugins":[{"type":"netwarden-cni"}]}"#,
        );
        write(
            dir.path(),
            "20-other.conf",
            r#"{"cniVersion":"0.4.0","name":"other","type":"bridge"}"#,
        );
        write(dir.path(), "10-flannel.conflist", flannel());
        write(dir.path(), "05-notes.txt", "not a config");
        write(dir.path(), ".10-flannel.conflist.abc.tmp", "{");
        std::fs::create_dir(dir.path().join("01-dir.conf")).unwrap();
        let primary = discover(dir.path(), OsStr::new(OURS)).unwrap().unwrap();
        assert_eq!(primary.path, dir.path().join("10-flannel.conflist"));
        assert_eq!(primary.network.name, "cbr0");
        assert_eq!(primary.text, flannel());
    }

    #[test]
    fn no_config_yet_is_none() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), OURS, "{}");
        assert_eq!(discover(dir.path(), OsStr::new(OURS)).unwrap(), None);
    }

    /// The error discovery gives in a directory holding `files`.
    fn discovery_error(files: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            write(dir.path(), name, text);
        }
        discover(dir.path(), OsStr::new(OURS))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unusable_primaries_are_errors_naming_the_file_never_skipped() {
        let good = (
            "20-good.conf",
            r#"{"cniVersion":"0.4.0","name":"good","type":"bridge"}"#,
        );
        let cases = [
            (
                "10-half.conflist",
                r#"{"cniVersion":"0.3.1","na"#,
                "not valid JSON",
            ),
            (
                "05-loop.conf",
                r#"{"cniVersion":"1.0.0","name":"x","type":"netwarden-cni"}"#,
                "netwarden-cni itself",
            ),
            (
                "00-multus.conf",
                r#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim"}"#,
                "uninstall Multus",
            ),
        ];
        for (name, text, problem) in cases {
            let error = discovery_error(&[(name, text), good]);
            assert!(error.contains(name) && error.contains(problem), "{error}");
        }
    }

    #[test]
    fn files_sorting_before_ours_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "00-aaa.conf", "{}");
        write(dir.path(), OURS, "{}");
        write(dir.path(), "10-flannel.conflist", flannel());
        let ahead = ahead_of(dir.path(), OsStr::new(OURS)).unwrap();
        assert_eq!(ahead, [dir.path().join("00-aaa.conf")]);
        std::fs::remove_file(dir.path().join("00-aaa.conf")).unwrap();
        assert!(ahead_of(dir.path(), OsStr::new(OURS)).unwrap().is_empty());
    }
}
