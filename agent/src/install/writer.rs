//! Keeps `00-netwarden.conflist` delegating to the cluster's current primary CNI
//! configuration, and the agent's copy of that primary (its `clusterNetwork`) equal to it.
//!
//! The copy is written first, then the conflist: once the runtime can load netwarden's file,
//! the agent can run the network it names. Both are replaced whole, and only when their
//! contents change. A primary that cannot be read (being rewritten in place, or broken) is
//! reported and the previous files stay: pods keep getting the last good primary rather than
//! none. When the primary disappears the files stay too, so the runtime never falls back to
//! calling the primary alone (pods without their networks or policy); ADDs fail naming the
//! missing file until a primary is back.
use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{RecursiveMode, Watcher};

use super::{
    atomic,
    conflist::{self, PluginSettings},
    primary, InstallError,
};

/// Read everything again this often even without a notification (a full inotify queue
/// drops events).
const RESYNC: Duration = Duration::from_secs(30);
/// After a notification, wait this long for the rest of a burst (an installer writing
/// several files) before reading.
const SETTLE: Duration = Duration::from_millis(100);

/// Where the CNI configuration lives and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniConfig {
    /// The runtime's CNI configuration directory.
    pub config_dir: PathBuf,
    /// The primary configuration, when it is not to be discovered.
    pub primary: Option<PathBuf>,
    /// The copy of the primary the agent runs as `eth0` (its `clusterNetwork`).
    pub cluster_network: PathBuf,
    pub plugin: PluginSettings,
}

/// What one pass found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Synced {
    /// No primary configuration yet: nothing is written.
    NoPrimary,
    /// The files delegate to `primary`; `changed` when this pass rewrote one of them.
    Delegating { primary: PathBuf, changed: bool },
}

impl CniConfig {
    /// `00-netwarden.conflist` in the configuration directory.
    pub fn conflist(&self) -> PathBuf {
        self.config_dir.join(conflist::FILE_NAME)
    }

    /// One pass: find the primary, then bring the copy and the conflist up to date.
    pub fn sync(&self) -> Result<Synced, InstallError> {
        let found = match &self.primary {
            Some(path) => Some(primary::read(path)?),
            None => primary::discover(&self.config_dir, OsStr::new(conflist::FILE_NAME))?,
        };
        let Some(primary) = found else {
            return Ok(Synced::NoPrimary);
        };
        if let Some(dir) = self.cluster_network.parent() {
            std::fs::create_dir_all(dir).map_err(InstallError::io("create", dir))?;
        }
        let copied =
            atomic::write_if_changed(&self.cluster_network, 0o644, primary.text.as_bytes())?;
        let text = conflist::render(&primary, &self.plugin);
        let written = atomic::write_if_changed(&self.conflist(), 0o644, text.as_bytes())?;
        Ok(Synced::Delegating {
            primary: primary.path,
            changed: copied || written,
        })
    }

    /// Configuration files the runtime would load before netwarden's.
    pub fn shadowing(&self) -> Result<Vec<PathBuf>, InstallError> {
        primary::ahead_of(&self.config_dir, OsStr::new(conflist::FILE_NAME))
    }

    /// Passes forever, one at start, one after every change of the watched directories
    /// (the configuration directory and a configured primary's) and one every
    /// [`RESYNC`]; each outcome goes to `report`. Ends only if the watch cannot start.
    pub async fn watch(
        &self,
        mut report: impl FnMut(Result<Synced, InstallError>),
    ) -> Result<(), InstallError> {
        std::fs::create_dir_all(&self.config_dir)
            .map_err(InstallError::io("create", &self.config_dir))?;
        let (tell, mut changed) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = tell.send(());
        })
        .map_err(|source| InstallError::Watch {
            path: self.config_dir.clone(),
            source,
        })?;
        for dir in self.watched_dirs() {
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|source| InstallError::Watch { path: dir, source })?;
        }
        loop {
            report(self.sync());
            if let Ok(None) = tokio::time::timeout(RESYNC, changed.recv()).await {
                return Ok(());
            }
            tokio::time::sleep(SETTLE).await;
            while changed.try_recv().is_ok() {}
        }
    }

    fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.config_dir.clone()];
        if let Some(dir) = self.primary.as_deref().and_then(Path::parent) {
            if !dir.as_os_str().is_empty() && dir != self.config_dir {
                dirs.push(dir.to_owned());
            }
        }
        dirs
    }
}

/// Uninstall: removes `00-netwarden.conflist` from `config_dir` first (the runtime stops
/// calling netwarden), then the agent's copy of the primary. Returns the files that existed.
pub fn remove(config_dir: &Path, cluster_network: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let mut removed = Vec::new();
    for path in [
        config_dir.join(conflist::FILE_NAME),
        cluster_network.to_owned(),
    ] {
        if atomic::remove_file(&path)? {
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLANNEL: &str = r#"{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel"}]}"#;
    const CALICO: &str =
        r#"{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico"}]}"#;

    struct Dirs {
        _root: tempfile::TempDir,
        config: CniConfig,
    }

    fn dirs() -> Dirs {
        let root = tempfile::tempdir().unwrap();
        let config_dir = root.path().join("net.d");
        std::fs::create_dir(&config_dir).unwrap();
        let config = CniConfig {
            config_dir,
            primary: None,
            cluster_network: root.path().join("run/cluster-network.conflist"),
            plugin: PluginSettings {
                socket: "/run/netwarden/cni.sock".into(),
                cache_dir: "/var/lib/netwarden/cache".into(),
            },
        };
        Dirs {
            _root: root,
            config,
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn nothing_is_written_until_a_primary_exists() {
        let d = dirs();
        assert_eq!(d.config.sync().unwrap(), Synced::NoPrimary);
        assert!(!d.config.conflist().exists() && !d.config.cluster_network.exists());
    }

    #[test]
    fn writes_the_copy_and_the_conflist_then_follows_the_primary() {
        let d = dirs();
        let flannel = d.config.config_dir.join("10-flannel.conflist");
        std::fs::write(&flannel, FLANNEL).unwrap();
        assert_eq!(
            d.config.sync().unwrap(),
            Synced::Delegating {
                primary: flannel.clone(),
                changed: true
            }
        );
        assert_eq!(read(&d.config.cluster_network), FLANNEL);
        assert_eq!(
            conflist::delegates_to(&read(&d.config.conflist())).unwrap(),
            flannel
        );
        // A second pass changes nothing.
        assert_eq!(
            d.config.sync().unwrap(),
            Synced::Delegating {
                primary: flannel.clone(),
                changed: false
            }
        );
        // The primary is edited in place: the copy follows.
        std::fs::write(&flannel, FLANNEL.replace("cbr0", "cbr1")).unwrap();
        assert!(matches!(
            d.config.sync().unwrap(),
            Synced::Delegating { changed: true, .. }
        ));
        assert!(read(&d.config.cluster_network).contains("cbr1"));
        // Another CNI takes over with a file sorting first.
        let calico = d.config.config_dir.join("05-calico.conflist");
        std::fs::write(&calico, CALICO).unwrap();
        d.config.sync().unwrap();
        assert_eq!(read(&d.config.cluster_network), CALICO);
        let ours = read(&d.config.conflist());
        assert_eq!(conflist::delegates_to(&ours).unwrap(), calico);
        assert!(ours.contains("\"1.0.0\""), "{ours}");
    }

    #[test]
    fn a_broken_or_vanished_primary_leaves_the_last_good_files() {
        let d = dirs();
        let flannel = d.config.config_dir.join("10-flannel.conflist");
        std::fs::write(&flannel, FLANNEL).unwrap();
        d.config.sync().unwrap();
        let before = read(&d.config.conflist());
        std::fs::write(&flannel, "{\"cniVersion\": \"0.3.1\", \"na").unwrap();
        let error = d.config.sync().unwrap_err().to_string();
        assert!(error.contains("10-flannel.conflist"), "{error}");
        assert_eq!(read(&d.config.conflist()), before);
        assert_eq!(read(&d.config.cluster_network), FLANNEL);
        std::fs::remove_file(&flannel).unwrap();
        assert_eq!(d.config.sync().unwrap(), Synced::NoPrimary);
        assert_eq!(read(&d.config.conflist()), before);
    }

    #[test]
    fn a_configured_primary_wins_over_discovery() {
        let mut d = dirs();
        std::fs::write(d.config.config_dir.join("05-calico.conflist"), CALICO).unwrap();
        let flannel = d.config.config_dir.join("10-flannel.conflist");
        std::fs::write(&flannel, FLANNEL).unwrap();
        d.config.primary = Some(flannel.clone());
        assert_eq!(
            d.config.sync().unwrap(),
            Synced::Delegating {
                primary: flannel,
                changed: true
            }
        );
        assert_eq!(read(&d.config.cluster_network), FLANNEL);
    }

    #[test]
    fn remove_takes_both_files_and_is_idempotent() {
        let d = dirs();
        std::fs::write(d.config.config_dir.join("10-flannel.conflist"), FLANNEL).unwrap();
        d.config.sync().unwrap();
        let remove = || remove(&d.config.config_dir, &d.config.cluster_network).unwrap();
        assert_eq!(
            remove(),
            [d.config.conflist(), d.config.cluster_network.clone()]
        );
        assert!(remove().is_empty());
        assert!(d.config.config_dir.join("10-flannel.conflist").exists());
    }

    #[tokio::test]
    async fn the_watch_rewrites_the_conflist_when_the_primary_changes() {
        let d = dirs();
        let config = d.config.clone();
        let (tell, mut passes) = tokio::sync::mpsc::unbounded_channel();
        let watching = tokio::spawn(async move {
            config
                .watch(|synced| {
                    let _ = tell.send(synced.map_err(|e| e.to_string()));
                })
                .await
        });
        assert_eq!(passes.recv().await.unwrap(), Ok(Synced::NoPrimary));
        let flannel = d.config.config_dir.join("10-flannel.conflist");
        std::fs::write(&flannel, FLANNEL).unwrap();
        let delegating = |primary: &Path| {
            Ok(Synced::Delegating {
                primary: primary.to_owned(),
                changed: true,
            })
        };
        // Well inside RESYNC: the pass comes from the notification. A pass may catch the
        // file half-written (this test writes it in place, as some installers do); the
        // next notification brings another.
        let pass = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let pass = passes.recv().await.unwrap();
                if matches!(pass, Ok(Synced::Delegating { .. })) {
                    return pass;
                }
            }
        })
        .await
        .expect("a pass after the primary appeared");
        assert_eq!(pass, delegating(&flannel));
        assert_eq!(read(&d.config.cluster_network), FLANNEL);
        watching.abort();
    }
}
