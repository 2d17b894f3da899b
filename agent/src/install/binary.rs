//! `netwarden install-cni`: the CNI binary into the runtime's plugin directory.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use super::{atomic, InstallError};

/// Copies `from` into `to_dir` under its own file name, atomically (see
/// [`atomic::replace_file`]): during an upgrade a runtime executes the old binary or the new
/// one, never a half-copied file. Returns the installed path.
pub fn install(from: &Path, to_dir: &Path) -> Result<PathBuf, InstallError> {
    let name = from.file_name().ok_or_else(|| InstallError::Io {
        action: "install",
        path: from.to_owned(),
        source: std::io::Error::other("not a file name"),
    })?;
    let mut source = File::open(from).map_err(InstallError::io("open", from))?;
    let destination = to_dir.join(name);
    atomic::replace_file(&destination, 0o755, |file| {
        std::io::copy(&mut source, file).map(drop)
    })?;
    Ok(destination)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn installs_an_executable_copy_and_replaces_an_older_one() {
        let source_dir = tempfile::tempdir().unwrap();
        let bin_dir = tempfile::tempdir().unwrap();
        let from = source_dir.path().join("netwarden-cni");
        std::fs::write(&from, b"#!/bin/sh\necho new\n").unwrap();
        std::fs::write(bin_dir.path().join("netwarden-cni"), b"old").unwrap();
        let installed = install(&from, bin_dir.path()).unwrap();
        assert_eq!(installed, bin_dir.path().join("netwarden-cni"));
        assert_eq!(std::fs::read(&installed).unwrap(), b"#!/bin/sh\necho new\n");
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn a_missing_source_is_named_and_nothing_is_written() {
        let bin_dir = tempfile::tempdir().unwrap();
        let error = install(Path::new("/nonexistent/netwarden-cni"), bin_dir.path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/netwarden-cni"), "{error}");
        assert_eq!(std::fs::read_dir(bin_dir.path()).unwrap().count(), 0);
    }
}
