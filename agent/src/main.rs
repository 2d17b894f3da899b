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
    /// The datapath benchmark `cargo xtask bench datapath` runs (needs root): prints the
    /// table and writes it as Markdown to `output`.
    #[command(hide = true)]
    BenchDatapath {
        #[arg(long)]
        output: std::path::PathBuf,
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
        Command::BenchDatapath { output } => bench_datapath(&output),
    }
}

fn bench_datapath(output: &std::path::Path) -> anyhow::Result<()> {
    use netwarden_agent::datapath::bench;
    let rows = bench::run(&bench::RULE_COUNTS)?;
    let table = bench::markdown(&rows);
    println!("{table}");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let document = format!(
        "# Datapath benchmark\n\n\
         Written by `cargo xtask bench datapath`: nanoseconds per packet as the kernel measures \
         them with BPF_PROG_TEST_RUN (kernel {}, {cpus} CPUs), for the pass-through program \
         (the floor), a packet of an established flow, the first packet of a new allowed flow \
         (one run per distinct flow: a repeated packet would be established) and a new denied \
         flow (peer known, port not: both lookups, then the deny and its rate-limited event). \
         Each rule is one peer host on one TCP port, so the tables hold as many peer classes \
         and port entries as rules. Figures from one run on a shared machine, not assertions.\n\n{table}",
        kernel.trim()
    );
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(output, document)?;
    println!("wrote {}", output.display());
    Ok(())
}
