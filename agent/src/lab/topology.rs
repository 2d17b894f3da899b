//! Network namespaces and links the lab (and the end-to-end tests) create, each removed
//! when its owner is dropped, also when a step in between fails.
//!
//! These call iproute2 and ping: the same tools an operator uses to check the result.
use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use netwarden_cni::InterfaceName;

use crate::datapath::InterfaceTarget;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("`{command}` could not run: {source} (is iproute2 installed? `cargo xtask setup` installs it)")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// A named network namespace under /run/netns, deleted on drop.
#[derive(Debug)]
pub struct NetNamespace {
    name: String,
}

impl NetNamespace {
    /// Creates a namespace named `nw-<prefix>-<pid>-<n>`: unique on this machine, and easy
    /// to trace back to the process that made it.
    pub fn create(prefix: &str) -> Result<Self, TopologyError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "nw-{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ifname` inside this namespace, as the datapath addresses it.
    pub fn interface(&self, ifname: &InterfaceName) -> InterfaceTarget {
        InterfaceTarget {
            netns: self.path(),
            ifname: ifname.clone(),
        }
    }

    /// Runs a command inside the namespace and returns its output when it succeeds.
    pub fn exec(&self, argv: &[&str]) -> Result<Output, TopologyError> {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(argv);
        ip(&full)
    }

    /// Whether one ICMP echo to `address` is answered within a second.
    pub fn ping(&self, address: &str) -> Result<bool, TopologyError> {
        let command = format!("ip netns exec {} ping -c 1 -W 1 {address}", self.name);
        let status = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "ping", "-c", "1", "-W", "1", "-q", address,
            ])
            .output()
            .map_err(|source| TopologyError::Spawn { command, source })?
            .status;
        Ok(status.success())
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        // Deleting the namespace also deletes every link that lives only in it.
        if let Err(e) = ip(&["netns", "delete", &self.name]) {
            tracing::warn!("cleanup: {e}");
        }
    }
}

/// An interface end of a veth pair, with the address given to it.
#[derive(Debug, Clone)]
pub struct VethEnd<'a> {
    pub netns: &'a NetNamespace,
    pub ifname: &'a InterfaceName,
    /// Address with prefix length, e.g. `198.18.0.1/24`.
    pub address: &'a str,
}

/// Joins two namespaces with a veth pair, addresses both ends and brings them up.
/// The pair is created directly inside the namespaces, so its names never meet the host's.
pub fn veth_pair(a: &VethEnd<'_>, b: &VethEnd<'_>) -> Result<(), TopologyError> {
    ip(&[
        "link",
        "add",
        "name",
        a.ifname.as_str(),
        "netns",
        a.netns.name(),
        "type",
        "veth",
        "peer",
        "name",
        b.ifname.as_str(),
        "netns",
        b.netns.name(),
    ])?;
    for end in [a, b] {
        end.netns
            .exec(&["ip", "addr", "add", end.address, "dev", end.ifname.as_str()])?;
        end.netns
            .exec(&["ip", "link", "set", end.ifname.as_str(), "up"])?;
    }
    Ok(())
}

/// Runs `ip ARGS` and returns its output when it succeeds.
pub fn ip(args: &[&str]) -> Result<Output, TopologyError> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| TopologyError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(TopologyError::Failed {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// Two namespaces joined by a veth pair: the smallest network the datapath can guard.
/// `client` (198.18.0.1) talks to `server` (198.18.0.2), each on its own `eth0`.
/// 198.18.0.0/15 is reserved for benchmarking: it never routes anywhere outside these two.
#[derive(Debug)]
pub struct PodPair {
    pub client: NetNamespace,
    pub server: NetNamespace,
    pub ifname: InterfaceName,
}

impl PodPair {
    pub const CLIENT_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 1);
    pub const SERVER_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 2);

    pub fn create(prefix: &str) -> Result<Self, TopologyError> {
        let client = NetNamespace::create(&format!("{prefix}-c"))?;
        let server = NetNamespace::create(&format!("{prefix}-s"))?;
        let ifname: InterfaceName = "eth0".parse().expect("valid interface name");
        veth_pair(
            &VethEnd {
                netns: &client,
                ifname: &ifname,
                address: &format!("{}/24", Self::CLIENT_ADDRESS),
            },
            &VethEnd {
                netns: &server,
                ifname: &ifname,
                address: &format!("{}/24", Self::SERVER_ADDRESS),
            },
        )?;
        Ok(Self {
            client,
            server,
            ifname,
        })
    }

    /// Whether the client's ping reaches the server and comes back.
    pub fn client_reaches_server(&self) -> Result<bool, TopologyError> {
        self.client.ping(&Self::SERVER_ADDRESS.to_string())
    }

    /// The server's interface, where the demo and the tests attach the classifier.
    pub fn server_interface(&self) -> InterfaceTarget {
        self.server.interface(&self.ifname)
    }
}
