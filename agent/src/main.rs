//! `netwarden`: the node agent and its command line.
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use netwarden_agent::agent::{
    self,
    api::ExplainQuery,
    client::{self, DEFAULT_AGENT},
    AgentConfig, LogFormat, Overrides,
};

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
    /// Run the node agent: attach socket for netwarden-cni, policy enforcement, metrics.
    Agent {
        /// The agent configuration (JSON); flags override its keys.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Ask a running agent whether a flow is allowed, and which policy rule decides it.
    Explain {
        /// The sending pod, NAMESPACE/POD.
        #[arg(long)]
        from: String,
        /// The receiving pod, NAMESPACE/POD.
        #[arg(long)]
        to: String,
        /// The NetworkAttachmentDefinition, NAMESPACE/NAD.
        #[arg(long)]
        network: String,
        #[arg(long)]
        port: u16,
        /// TCP, UDP or SCTP.
        #[arg(long, default_value = "TCP")]
        protocol: String,
        /// The agent's HTTP endpoint (the node of the receiving pod knows its policy).
        #[arg(long, default_value = DEFAULT_AGENT)]
        agent: String,
    },
    /// Stream the verdict events of a running agent, one line each.
    Flows {
        #[arg(long, default_value = DEFAULT_AGENT)]
        agent: String,
        /// Print the JSON records as received.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo => {
            init_logs(LogFormat::Text);
            netwarden_agent::lab::demo::run().await
        }
        Command::Agent { config, overrides } => {
            let config = AgentConfig::load(&config, overrides)?;
            init_logs(config.log_format);
            Ok(agent::run(config).await?)
        }
        Command::Explain {
            from,
            to,
            network,
            port,
            protocol,
            agent,
        } => {
            init_logs(LogFormat::Text);
            let query = ExplainQuery {
                from,
                to,
                network,
                port,
                protocol,
            };
            let answer = client::explain(&agent, &query).await?;
            println!(
                "{} -> {} on {} {}/{}: {}",
                query.from,
                query.to,
                query.network,
                query.protocol.to_uppercase(),
                query.port,
                if answer.allowed { "ALLOWED" } else { "DENIED" }
            );
            println!("  egress at {}: {}", query.from, answer.egress.because);
            println!("  ingress at {}: {}", query.to, answer.ingress.because);
            Ok(())
        }
        Command::Flows { agent, json } => {
            init_logs(LogFormat::Text);
            Ok(client::flows(&agent, |record| {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(record).expect("records serialize")
                    );
                } else {
                    println!("{}", record.line());
                }
            })
            .await?)
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}
