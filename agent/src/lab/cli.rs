//! `netwarden lab ...`: the command line of the local lab.
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{
    lifecycle::{self, LabError},
    probe, servers,
    spec::{PodName, Protocol},
    state::{Isolation, LabName, LabState},
    store,
};

#[derive(Args)]
pub struct LabArgs {
    /// Which lab (several can run side by side).
    #[arg(long, global = true, default_value = "lab")]
    name: LabName,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Bring up nodes, networks, agents and pods from a directory of Kubernetes manifests.
    Up {
        /// Namespaces, Pods, NetworkAttachmentDefinitions, (Multi)NetworkPolicies.
        dir: PathBuf,
        /// Pods may use only NADs of their own namespace and of the global ones (Multus's
        /// `namespaceIsolation`).
        #[arg(long)]
        namespace_isolation: bool,
        /// With --namespace-isolation: the namespaces whose NADs every pod may use,
        /// comma-separated (Multus's `globalNamespaces`; default `default`).
        #[arg(long, requires = "namespace_isolation")]
        global_namespaces: Option<String>,
    },
    /// Add or change objects (new pods are created; changes take effect in place).
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Remove the objects a file describes (pods are detached and removed).
    Delete {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Try every ordered pair of pods on a network and print the truth table.
    Probe {
        /// A NetworkAttachmentDefinition as `namespace/name`; the cluster network when
        /// omitted.
        #[arg(long)]
        network: Option<String>,
        #[arg(long, default_value_t = 80)]
        port: u16,
        #[arg(long, default_value = "TCP")]
        protocol: Protocol,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Run a command inside a pod's network namespace.
    Exec {
        /// `namespace/name`, or `name` in `default`.
        pod: PodName,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show the lab's nodes, agents and pods with their addresses.
    Status,
    /// Remove everything the lab created.
    Down,
    /// The server run inside each pod (started by `lab up`).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        pod: PodName,
        #[arg(long)]
        tcp: Vec<u16>,
        #[arg(long)]
        udp: Vec<u16>,
        /// Created once every port is bound.
        #[arg(long)]
        ready: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

/// Runs a lab command; returns the process exit code.
pub fn run(args: LabArgs) -> anyhow::Result<i32> {
    let name = args.name;
    match args.command {
        LabCommand::Up {
            dir,
            namespace_isolation,
            global_namespaces,
        } => {
            let isolation = Isolation {
                namespace_isolation,
                global_namespaces,
            };
            let lab = lifecycle::up(name, &dir, isolation)?;
            println!("{}", status(&lab)?);
        }
        LabCommand::Apply { file } => lifecycle::apply(&mut LabState::load(&name)?, &file)?,
        LabCommand::Delete { file } => lifecycle::delete(&mut LabState::load(&name)?, &file)?,
        LabCommand::Probe {
            network,
            port,
            protocol,
            output,
        } => {
            let lab = LabState::load(&name)?;
            let endpoints = lifecycle::endpoints(&lab, network.as_deref())?;
            let shown = network.unwrap_or_else(|| super::fabric::CLUSTER_NETWORK_NAME.into());
            let matrix = probe::probe(shown, &endpoints, port, protocol);
            match output {
                Output::Table => print!("{}", matrix.table()),
                Output::Json => println!("{}", serde_json::to_string_pretty(&matrix)?),
            }
        }
        LabCommand::Exec { pod, command } => {
            let lab = LabState::load(&name)?;
            let record = lab.pod(&pod).ok_or(LabError::NoPod(pod))?;
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", &record.netns])
                .args(&command)
                .status()?;
            return Ok(status.code().unwrap_or(1));
        }
        LabCommand::Status => println!("{}", status(&LabState::load(&name)?)?),
        LabCommand::Down => lifecycle::down(&LabState::load(&name)?)?,
        LabCommand::Serve {
            pod,
            tcp,
            udp,
            ready,
        } => servers::serve(&pod.to_string(), &tcp, &udp, &ready)?,
    }
    Ok(0)
}

/// A readable summary: nodes with their agents, pods with node and addresses.
fn status(lab: &LabState) -> Result<String, LabError> {
    let mut out = format!(
        "lab {} from {} (store {})\n",
        lab.name,
        lab.source.display(),
        lab.store.display()
    );
    for node in &lab.nodes {
        let agent = match &node.agent {
            Some(agent) if super::process::is_running(agent) => format!("agent pid {}", agent.pid),
            _ => "agent not running".into(),
        };
        out.push_str(&format!(
            "node {} (netns {}): {agent}\n",
            node.name, node.netns
        ));
    }
    for pod in &lab.pods {
        let addresses = store::network_status(&lab.store, &pod.pod)?
            .iter()
            .map(|entry| {
                let ips: Vec<String> = entry.ips.iter().map(ToString::to_string).collect();
                let interface = entry.interface.as_deref().unwrap_or("?");
                format!("{interface} {} {}", entry.name, ips.join(","))
            })
            .collect::<Vec<_>>()
            .join("; ");
        out.push_str(&format!("pod {} on {}: {addresses}\n", pod.pod, pod.node));
    }
    Ok(out)
}
