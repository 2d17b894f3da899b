//! The test bed: a lab (two nodes, net1 a dual-stack macvlan NAD) with a server pod on
//! node-1 and a client and an outsider pod on node-2, all attached through netwarden; and
//! beside them, on the same nodes and the same net1 segment, pods attached by the
//! reference macvlan plugin directly (no netwarden): the system without enforcement and
//! the one the iptables rules go into.
use std::{net::IpAddr, path::PathBuf, process::Command};

use netwarden_agent::lab::{spec::PodName, store, topology::NetNamespace};
use netwarden_tests::{
    lab::RunningLab,
    node::{run_plugin, PLUGINS},
};
use serde_json::{json, Value};

use crate::{peers::Family, traffic::Servers};

const NAD: &str = "default/net1";
const MASTER: &str = "eth0";
/// The plain pods' static addresses: on net1's subnets, outside host-local's range.
const PLAIN_SERVER_NONE: (&str, &str) = ("192.168.1.100", "fd00:1::100");
const PLAIN_SERVER_IPTABLES: (&str, &str) = ("192.168.1.101", "fd00:1::101");
const PLAIN_CLIENT: (&str, &str) = ("192.168.1.102", "fd00:1::102");

/// A pod: its namespace and its net1 addresses.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub netns: String,
    v4: IpAddr,
    v6: IpAddr,
}

impl Endpoint {
    pub fn address(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }
}

/// A client and the server it measures against.
#[derive(Debug, Clone)]
pub struct Pair {
    pub client: Endpoint,
    pub server: Endpoint,
}

/// Everything the bench runs on; removed on drop (also when a measurement panics): the
/// servers, the plain pods, then the lab (`lab down`).
pub struct Bed {
    _servers: Vec<Servers>,
    _plain: Vec<NetNamespace>,
    pub lab: RunningLab,
    /// Manifests, policies and host-local's allocations.
    pub dir: tempfile::TempDir,
    pub netwarden: Pair,
    pub none: Pair,
    pub iptables: Pair,
    /// A lab pod no policy allows: denied wherever a policy is in force.
    pub outsider: Endpoint,
}

impl Bed {
    pub fn up() -> Self {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let manifests = dir.path().join("lab");
        std::fs::create_dir(&manifests).expect("manifest directory");
        std::fs::write(
            manifests.join("objects.yaml"),
            lab_objects(&dir.path().join("ipam")),
        )
        .expect("lab manifests written");
        let lab = RunningLab::up(&manifests);
        let state = lab.state();
        let lab_pod = |name: &str| {
            let pod = PodName {
                namespace: "default".into(),
                name: name.into(),
            };
            let record = state.pod(&pod).expect("pod in the lab");
            let status = store::network_status(&state.store, &pod).expect("network-status");
            let ips = &status
                .iter()
                .find(|entry| entry.name == NAD)
                .unwrap_or_else(|| panic!("{pod} has no {NAD} in its network-status"))
                .ips;
            let of = |v6: bool| {
                *ips.iter().find(|ip| ip.is_ipv6() == v6).unwrap_or_else(|| {
                    panic!(
                        "{pod} has no {} address on {NAD}",
                        if v6 { "IPv6" } else { "IPv4" }
                    )
                })
            };
            Endpoint {
                netns: record.netns.clone(),
                v4: of(false),
                v6: of(true),
            }
        };
        let node = |name: &str| state.node(name).expect("lab node").netns.clone();
        let netwarden = Pair {
            server: lab_pod("server"),
            client: lab_pod("client"),
        };
        let outsider = lab_pod("outsider");
        let mut plain = Vec::new();
        let mut plain_pod = |node: &str, addresses: (&str, &str)| {
            let netns = NetNamespace::create("be-plain").expect("plain pod namespace");
            let endpoint = attach_plain(&netns, node, addresses);
            plain.push(netns);
            endpoint
        };
        let plain_client = plain_pod(&node("node-2"), PLAIN_CLIENT);
        let none = Pair {
            server: plain_pod(&node("node-1"), PLAIN_SERVER_NONE),
            client: plain_client.clone(),
        };
        let iptables = Pair {
            server: plain_pod(&node("node-1"), PLAIN_SERVER_IPTABLES),
            client: plain_client,
        };
        let servers = [&netwarden, &none, &iptables]
            .iter()
            .map(|pair| Servers::start(&pair.server.netns))
            .collect();
        Self {
            _servers: servers,
            _plain: plain,
            lab,
            dir,
            netwarden,
            none,
            iptables,
            outsider,
        }
    }

    /// A file for `lab apply`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// net1 (macvlan over eth0, host-local with an IPv4 and an IPv6 range), the server on
/// node-1, the client and the outsider on node-2.
fn lab_objects(ipam_dir: &std::path::Path) -> String {
    let config = json!({
        "cniVersion": "1.0.0", "type": "macvlan", "master": MASTER, "mode": "bridge",
        "ipam": {"type": "host-local", "dataDir": ipam_dir, "ranges": [
            [{"subnet": "192.168.1.0/24", "rangeStart": "192.168.1.200", "rangeEnd": "192.168.1.216"}],
            [{"subnet": "fd00:1::/64", "rangeStart": "fd00:1::200", "rangeEnd": "fd00:1::216"}],
        ]},
    });
    let nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "net1", "namespace": "default"},
        "spec": {"config": config.to_string()},
    });
    let pod = |name: &str, node: &str, labels: Value| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels,
                         "annotations": {"k8s.v1.cni.cncf.io/networks": NAD}},
            "spec": {"nodeName": node, "containers": [{"name": name, "image": "pause"}]},
        })
    };
    [
        nad,
        pod("server", "node-1", json!({"app": "server"})),
        pod("client", "node-2", json!({"app": "client"})),
        pod("outsider", "node-2", json!({"app": "outsider"})),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n---\n")
}

/// Attaches net1 to `netns` with the reference macvlan plugin (static addresses), run in
/// node namespace `node` as a runtime would; the interface goes with the namespace.
fn attach_plain(netns: &NetNamespace, node: &str, (v4, v6): (&str, &str)) -> Endpoint {
    // Static addresses are not probed for duplicates: none can exist on this segment.
    netns
        .exec(&["sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"])
        .expect("sysctl in the plain pod");
    let config = json!({
        "cniVersion": "1.0.0", "name": "plain-net1", "type": "macvlan", "master": MASTER,
        "mode": "bridge",
        "ipam": {"type": "static", "addresses": [
            {"address": format!("{v4}/24")}, {"address": format!("{v6}/64")},
        ]},
    });
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", node])
        .arg(format!("{PLUGINS}/macvlan"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", netns.name())
        .env("CNI_NETNS", netns.path())
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", PLUGINS);
    let (code, result) = run_plugin(&mut command, &config);
    assert_eq!(code, 0, "macvlan ADD for {}: {result}", netns.name());
    Endpoint {
        netns: netns.name().to_owned(),
        v4: v4.parse().expect("address"),
        v6: v6.parse().expect("address"),
    }
}
