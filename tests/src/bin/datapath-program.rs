//! One datapath process, for the restart tests: loads the datapath pinned under `--pins`,
//! attaches to an interface (adopting what an earlier process left there), gives it a
//! policy, prints the endpoint's table id and policy revision, and exits. What it attached
//! has to go on enforcing once it is gone.
use std::{net::IpAddr, path::PathBuf};

use clap::Parser;
use netwarden_agent::datapath::{
    pins::PinRoot,
    rules::{EndpointPolicy, Isolation, PeerBlock, Peers, Ports, Rule},
    AttachMode, Datapath, EndpointSettings, InterfaceTarget,
};
use netwarden_cni::InterfaceName;

#[derive(Parser)]
struct Args {
    /// The bpffs directory of the datapath.
    #[arg(long)]
    pins: PathBuf,
    /// The interface's network namespace, e.g. /run/netns/NAME.
    #[arg(long)]
    netns: PathBuf,
    #[arg(long)]
    ifname: InterfaceName,
    #[arg(long, value_enum)]
    attach_mode: AttachMode,
    /// The interface's own address (anti-spoofing).
    #[arg(long)]
    address: IpAddr,
    /// Ingress is isolated; this peer may send anything.
    #[arg(long)]
    allow_from: IpAddr,
    /// Isolate egress too: without a rule, only replies of allowed flows leave.
    #[arg(long)]
    isolate_egress: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut datapath = Datapath::load_at(PinRoot::new(args.pins))?;
    datapath.set_attach_mode(args.attach_mode);
    let endpoint = datapath.attach(&InterfaceTarget {
        netns: args.netns,
        ifname: args.ifname,
    })?;
    let policy = EndpointPolicy {
        ingress: Isolation::Isolated(vec![Rule {
            peers: Peers::Blocks(vec![PeerBlock::host(args.allow_from)]),
            ports: Ports::Any,
        }]),
        egress: if args.isolate_egress {
            Isolation::Isolated(Vec::new())
        } else {
            Isolation::Open
        },
    };
    let config = datapath.program(
        &endpoint,
        &policy,
        &[args.address],
        EndpointSettings::default(),
    )?;
    println!("{} {}", config.id, config.revision);
    Ok(())
}
