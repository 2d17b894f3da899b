//! The install subcommands of `netwarden`, as the DaemonSet runs them:
//! `install-cni` (init container), `cni-config` (a container beside the agent) and
//! `uninstall-cni` (the uninstall DaemonSet, or by hand on a node).
use std::path::PathBuf;

use netwarden_cni::agent_link::DEFAULT_SOCKET;

use super::{
    atomic, binary,
    conflist::PluginSettings,
    writer::{self, CniConfig, Synced},
    InstallError,
};

/// Where the CNI configuration and the agent's copy of the primary live.
#[derive(Clone, Debug, clap::Args)]
pub struct CniFiles {
    /// The runtime's CNI configuration directory.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub config_dir: PathBuf,
    /// The copy of the primary configuration the agent runs as eth0: the agent's
    /// `clusterNetwork` must name this file.
    #[arg(long, default_value = "/run/netwarden/cluster-network.conflist")]
    pub cluster_network: PathBuf,
}

#[derive(Clone, Debug, clap::Args)]
pub struct InstallCniArgs {
    /// The `netwarden-cni` binary to install.
    #[arg(long)]
    pub from: PathBuf,
    /// The runtime's CNI plugin directory.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub to: PathBuf,
}

#[derive(Clone, Debug, clap::Args)]
pub struct CniConfigArgs {
    #[command(flatten)]
    pub files: CniFiles,
    /// The primary CNI configuration; by default the alphabetically first other
    /// `.conf`/`.conflist`/`.json` file of the configuration directory.
    #[arg(long)]
    pub primary: Option<PathBuf>,
    /// The agent's attach socket, for `netwarden-cni`.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The agent's sandbox cache, for `netwarden-cni`'s DEL while the agent is down.
    #[arg(long, default_value = "/var/lib/netwarden/cache")]
    pub cache_dir: PathBuf,
    /// Write once and exit (failing when there is no primary yet) instead of following
    /// the directory.
    #[arg(long)]
    pub once: bool,
}

#[derive(Clone, Debug, clap::Args)]
pub struct UninstallCniArgs {
    #[command(flatten)]
    pub files: CniFiles,
    /// The runtime's CNI plugin directory `netwarden-cni` was installed into.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// Also remove everything the agent pinned under this bpffs directory: the programs
    /// detach and policy stops being enforced on this node's pods.
    #[arg(long)]
    pub bpffs: Option<PathBuf>,
}

/// `netwarden install-cni`.
pub fn install_cni(args: &InstallCniArgs) -> Result<(), InstallError> {
    let installed = binary::install(&args.from, &args.to)?;
    println!("installed {}", installed.display());
    Ok(())
}

impl CniConfigArgs {
    pub fn config(&self) -> CniConfig {
        CniConfig {
            config_dir: self.files.config_dir.clone(),
            primary: self.primary.clone(),
            cluster_network: self.files.cluster_network.clone(),
            plugin: PluginSettings {
                socket: self.socket.clone(),
                cache_dir: self.cache_dir.clone(),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CniConfigError {
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("no primary CNI configuration in {0} yet: install the cluster's CNI first, or name it with --primary")]
    NoPrimary(PathBuf),
}

/// `netwarden cni-config`: once, or following the directory forever.
pub async fn cni_config(args: &CniConfigArgs) -> Result<(), CniConfigError> {
    let config = args.config();
    if args.once {
        return match config.sync()? {
            Synced::NoPrimary => Err(CniConfigError::NoPrimary(config.config_dir.clone())),
            Synced::Delegating { primary, .. } => {
                println!(
                    "{} delegates to {}",
                    config.conflist().display(),
                    primary.display()
                );
                warn_if_shadowed(&config);
                Ok(())
            }
        };
    }
    // Each condition is logged when it starts, not on every pass.
    let mut last = String::new();
    config
        .watch(|synced| {
            let now = match &synced {
                Ok(Synced::NoPrimary) => format!(
                    "no primary CNI configuration in {} yet; waiting for one",
                    config.config_dir.display()
                ),
                Ok(Synced::Delegating { primary, .. }) => format!(
                    "{} delegates to {} (the agent runs it from {})",
                    config.conflist().display(),
                    primary.display(),
                    config.cluster_network.display()
                ),
                Err(problem) => {
                    format!("{problem}; the previous configuration stays in place")
                }
            };
            if now != last {
                match synced {
                    Ok(Synced::Delegating { .. }) => {
                        tracing::info!("{now}");
                        warn_if_shadowed(&config);
                    }
                    Ok(Synced::NoPrimary) => tracing::warn!("{now}"),
                    Err(_) => tracing::error!("{now}"),
                }
                last = now;
            }
        })
        .await?;
    Ok(())
}

fn warn_if_shadowed(config: &CniConfig) {
    match config.shadowing() {
        Ok(ahead) if ahead.is_empty() => {}
        Ok(ahead) => tracing::error!(
            "the runtime loads {} before {}: pods get neither netwarden's networks nor its policy until it is removed",
            ahead[0].display(),
            config.conflist().display()
        ),
        Err(problem) => tracing::warn!("{problem}"),
    }
}

/// `netwarden uninstall-cni`: the conflist first (the runtime stops calling netwarden), the
/// agent's copy of the primary, the binary, and the pins when asked.
pub fn uninstall_cni(args: &UninstallCniArgs) -> Result<(), InstallError> {
    let mut removed = writer::remove(&args.files.config_dir, &args.files.cluster_network)?;
    let binary = args.bin_dir.join("netwarden-cni");
    if atomic::remove_file(&binary)? {
        removed.push(binary);
    }
    if let Some(bpffs) = &args.bpffs {
        match std::fs::remove_dir_all(bpffs) {
            Ok(()) => removed.push(bpffs.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(InstallError::io("remove the pins under", bpffs)(e)),
        }
    }
    for path in &removed {
        println!("removed {}", path.display());
    }
    if removed.is_empty() {
        println!("nothing of netwarden's was installed here");
    }
    Ok(())
}
