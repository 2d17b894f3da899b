//! Replacing a file so that a reader (a runtime loading CNI configs, executing a plugin, or
//! the agent reading its cluster network) sees the old file or the new one, never part of
//! one, also across a crash.
use std::{
    fs::{File, Permissions},
    io::Write,
    os::unix::fs::PermissionsExt,
    path::Path,
};

use super::InstallError;

/// Writes `path` through `fill` into a hidden temporary file in the same directory (named
/// `.<name>.<random>.tmp`: no runtime loads or executes it), gives it `mode`, flushes it to
/// disk, renames it over `path` and flushes the directory. On failure the temporary file is
/// removed and `path` is untouched.
pub fn replace_file(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), InstallError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temporary = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(InstallError::io("create a temporary file in", dir))?;
    let write = InstallError::io("write", temporary.path().to_owned());
    fill(temporary.as_file_mut())
        .and_then(|()| temporary.as_file_mut().flush())
        .and_then(|()| {
            temporary
                .as_file()
                .set_permissions(Permissions::from_mode(mode))
        })
        .and_then(|()| temporary.as_file().sync_all())
        .map_err(write)?;
    temporary
        .persist(path)
        .map_err(|e| InstallError::io("rename a temporary file onto", path)(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(InstallError::io("flush the directory", dir))
}

/// [`replace_file`] with `contents`, unless the file already holds exactly them (so a
/// directory watcher is not woken by a write that changes nothing).
pub fn write_if_changed(path: &Path, mode: u32, contents: &[u8]) -> Result<bool, InstallError> {
    match std::fs::read(path) {
        Ok(current) if current == contents => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(InstallError::io("read", path)(e)),
    }
    replace_file(path, mode, |file| file.write_all(contents))?;
    Ok(true)
}

/// Removes `path`; true when it existed.
pub fn remove_file(path: &Path) -> Result<bool, InstallError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(InstallError::io("remove", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_whole_with_the_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00-x.conflist");
        std::fs::write(&path, "old").unwrap();
        replace_file(&path, 0o644, |f| f.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(names(dir.path()), ["00-x.conflist"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netwarden-cni");
        std::fs::write(&path, "old").unwrap();
        let error = replace_file(&path, 0o755, |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("disk full") && error.contains(".netwarden-cni."),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(names(dir.path()), ["netwarden-cni"]);
    }

    #[test]
    fn unchanged_contents_are_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.conflist");
        assert!(write_if_changed(&path, 0o644, b"{}").unwrap());
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(!write_if_changed(&path, 0o644, b"{}").unwrap());
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );
        assert!(write_if_changed(&path, 0o644, b"{\"a\":1}").unwrap());
        assert!(remove_file(&path).unwrap());
        assert!(!remove_file(&path).unwrap());
    }

    #[test]
    fn a_missing_directory_is_named() {
        let error = replace_file(Path::new("/nonexistent-netwarden/x"), 0o644, |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent-netwarden"), "{error}");
    }
}
