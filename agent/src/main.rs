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
    }
}
