//! `netwarden`: the node agent and its command line.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "netwarden",
    version,
    about = "Multus-compatible pod networks with eBPF MultiNetworkPolicy enforcement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a flow passing, dropped by the eBPF classifier in a network namespace, and
    /// passing again (needs root).
    Demo,
    /// A local lab: nodes and pods as network namespaces, real agents, real CNI.
    Lab(netwarden_agent::lab::cli::LabArgs),
    /// Serve the attach socket netwarden-cni talks to (the attach part of the agent alone;
    /// for tests and the lab).
    #[command(hide = true)]
    AttachService {
        /// The attach configuration (JSON).
        #[arg(long)]
        config: std::path::PathBuf,
        /// Where cluster state comes from: `kube` or `dir:PATH`.
        #[arg(long, default_value = "kube")]
        cluster: netwarden_agent::cluster::source::ClusterSourceSpec,
        /// This node's name (the Kubernetes source keeps this node's pods in full).
        #[arg(long, default_value = "")]
        node: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Demo => netwarden_agent::lab::demo::run().await,
        Command::Lab(args) => {
            let code = netwarden_agent::lab::cli::run(args)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::AttachService {
            config,
            cluster,
            node,
        } => {
            let config = netwarden_agent::attach::AttachConfig::load(&config)?;
            let source = cluster
                .open(netwarden_agent::cluster::source::NodeName(node))
                .await?;
            Ok(netwarden_agent::attach::run(config, source).await?)
        }
    }
}
