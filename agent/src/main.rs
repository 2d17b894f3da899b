//! `netwarden`: the node agent and its command line.
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use netwarden_agent::{
    agent::{
        self,
        api::ExplainQuery,
        client::{self, DEFAULT_AGENT},
        AgentConfig, LogFormat, Overrides,
    },
    install,
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
    /// A local lab: nodes and pods as network namespaces, real agents, real CNI.
    Lab(netwarden_agent::lab::cli::LabArgs),
    /// Run the node agent: attach socket for netwarden-cni, policy enforcement, metrics.
    Agent {
        /// The agent configuration (JSON); flags override its keys.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Copy `netwarden-cni` into the runtime's CNI plugin directory, atomically (the
    /// DaemonSet's init container).
    InstallCni(install::cli::InstallCniArgs),
    /// Write `00-netwarden.conflist` delegating to the cluster's primary CNI configuration,
    /// and keep it (and the agent's copy of the primary) current as the directory changes.
    CniConfig(install::cli::CniConfigArgs),
    /// Remove what `install-cni` and `cni-config` wrote (and, with --bpffs, the agent's
    /// pinned programs) from this node.
    UninstallCni(install::cli::UninstallCniArgs),
    /// Ask a running agent whether a flow is allowed, and which policy rule decides it.
    Explain {
        /// The sending pod, NAMESPACE/POD.
        #[arg(long)]
        from: String,
        /// The receiving pod, NAMESPACE/POD.
        #[arg(long)]
        to: String,
        /// The NetworkAttachmentDefinition, NAMESPACE/NAD; the cluster network when
        /// omitted.
        #[arg(long)]
        network: Option<String>,
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
    match Cli::parse().command {
        Command::Lab(args) => {
            init_logs(LogFormat::Text);
            let code = netwarden_agent::lab::cli::run(args)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Agent { config, overrides } => {
            let config = AgentConfig::load(&config, overrides)?;
            init_logs(config.log_format);
            Ok(agent::run(config).await?)
        }
        Command::InstallCni(args) => Ok(install::cli::install_cni(&args)?),
        Command::CniConfig(args) => {
            init_logs(LogFormat::Text);
            Ok(install::cli::cni_config(&args).await?)
        }
        Command::UninstallCni(args) => Ok(install::cli::uninstall_cni(&args)?),
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
                network: network.unwrap_or_default(),
                port,
                protocol,
            };
            let answer = client::explain(&agent, &query).await?;
            let network = match query.network.as_str() {
                "" => "the cluster network",
                nad => nad,
            };
            println!(
                "{} -> {} on {network} {}/{}: {}",
                query.from,
                query.to,
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
        Command::BenchDatapath { output } => bench_datapath(&output),
    }
}

fn bench_datapath(output: &std::path::Path) -> anyhow::Result<()> {
    use netwarden_agent::datapath::bench;
    let quick = std::env::var_os("NETWARDEN_BENCH_QUICK").is_some();
    let (rule_counts, attach_rounds) = if quick {
        (&bench::RULE_COUNTS[..2], 5)
    } else {
        (&bench::RULE_COUNTS[..], 30)
    };
    let rows = bench::run(rule_counts)?;
    let table = format!(
        "{}\n{}\n{}",
        bench::markdown(&rows),
        bench::bounds_markdown(&rows),
        bench::targets_markdown(&rows)
    );
    println!("{table}");
    let attach = bench::attach_markdown(&bench::attach_latency(attach_rounds)?);
    println!("{attach}");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let document = format!(
        "# Datapath benchmark\n\n\
         Written by `cargo xtask bench datapath`: nanoseconds per packet as the kernel measures \
         them with BPF_PROG_TEST_RUN (kernel {}, {cpus} CPUs), for the pass-through program \
         (the floor), a packet of an established flow, a new denied flow (peer known, port \
         not: both lookups, then the deny and its rate-limited event) and the first packet of \
         a new allowed flow. A new allowed flow can only be measured one run per call (a \
         repeated packet would be established), which costs the per-call overhead and cold \
         caches, so it is set against the pass-through program measured the same way (one \
         run per call). Each rule is one peer host on one TCP port, so the tables hold as \
         many peer classes and port entries as rules. Each row starts from an empty flow \
         table, after one round thrown away (a never-used table inserts faster). The drift \
         check is the agent's reconcile for that endpoint: every table read back from the \
         kernel (one scan of each map) and compared with what the policy compiles to. \
         Figures from one run on a shared machine, not assertions{}.\n\n{table}\n\
         The second table sets the classifiers beside lower bounds measured in the same \
         run: reference programs that make only the map lookups these packets cannot do \
         without (the flow lookup of an established packet; the flow, peer-host and port \
         lookups of a new flow; for an allowed one, also its insert into the flow table), \
         on the real key read from the frame with no header checks, and nothing else (no \
         clock, counters or event). Their lookups all miss, which costs less than a hit, so \
         they bound from below any datapath that tracks connections in a hash table and \
         answers policy with hash lookups, as issue 3 prescribes. Between a bound and the \
         classifier are the header checks, the endpoint, the clock, the counters, the \
         flow's state and, for a denied flow, the rate-limited event. Rule counts change \
         none of these.\n\n\
         {attach}\n\
         The cold load parses the object and the kernel's BTF and verifies both classifiers; \
         from the pool, what remains is entering the pod's namespace, two TCX attaches (each \
         waits for an RCU grace period in the kernel) and writing the tables.\n",
        kernel.trim(),
        if quick {
            " (NETWARDEN_BENCH_QUICK: 10 and 1000 rules only)"
        } else {
            ""
        }
    );
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(output, document)?;
    println!("wrote {}", output.display());
    Ok(())
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
