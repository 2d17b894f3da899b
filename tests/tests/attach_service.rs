//! Privileged: the real `netwarden-cni` binary, executed the way a container runtime does
//! (CNI_* environment, the netwarden network config on stdin, JSON on stdout, exit status),
//! talks over a real unix socket to a real `netwarden attach-service` process, which runs
//! the reference plugins in /usr/lib/cni. Cluster state is a directory of manifests (pods,
//! namespaces, NADs) that the agent watches and writes network-status back into.
//!
//! The agent and every `netwarden-cni` run inside a "node" namespace whose `eth0` (one end
//! of a veth pair: this kernel has no dummy driver) is the macvlan master.
//!
//! The binaries: cargo builds other packages' binaries only for their own integration
//! tests, so these are found beside this test executable (`target/<profile>/`, the parent of
//! `deps/`). `cargo xtask test` builds them (the cni and agent packages' own integration
//! tests make cargo build them); alone, run `cargo build -p netwarden-agent -p netwarden-cni`
//! first.
use std::{
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netwarden_agent::lab::topology::NetNamespace;
use netwarden_cni::status::{parse_network_status, NetworkStatus, NETWORK_STATUS_ANNOTATION};
use serde_json::{json, Value};

const PLUGINS: &str = "/usr/lib/cni";

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build -p netwarden-agent -p netwarden-cni` first",
        path.display()
    );
    path
}

/// A seed-style macvlan NAD config (Multus quickstart) over the node's `eth0`.
fn macvlan(subnet: &str, start: &str, end: &str, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "0.3.0",
        "type": "macvlan",
        "master": "eth0",
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "subnet": subnet,
            "rangeStart": start,
            "rangeEnd": end,
            "routes": [{ "dst": "0.0.0.0/0" }],
            "gateway": subnet.replace(".0/24", ".1"),
            "dataDir": data_dir,
        }
    })
}

/// A node running the agent, a manifest directory, a cache.
struct Lab {
    node: NetNamespace,
    dir: tempfile::TempDir,
    agent: Option<Child>,
    next_pod: u32,
}

/// A pod: its manifest, its sandbox namespace, its container ID.
struct Pod {
    netns: NetNamespace,
    namespace: String,
    name: String,
    container_id: String,
}

impl Lab {
    fn new(prefix: &str) -> Self {
        let node = NetNamespace::create(&format!("{prefix}-n")).expect("node netns");
        for argv in [
            &[
                "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "uplink0",
            ][..],
            &["ip", "link", "set", "eth0", "up"],
            &["ip", "link", "set", "uplink0", "up"],
        ] {
            node.exec(argv).expect("node uplink");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut lab = Self {
            node,
            dir,
            agent: None,
            next_pod: 0,
        };
        let data = lab.data_dir();
        std::fs::create_dir_all(lab.manifests()).expect("manifest dir");
        for ns in ["default", "development", "privileged"] {
            lab.write_manifest(
                &format!("ns-{ns}"),
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            );
        }
        let seed = macvlan("192.168.1.0/24", "192.168.1.200", "192.168.1.216", &data);
        for ns in ["default", "privileged"] {
            lab.add_nad(ns, "macvlan-conf", &seed);
        }
        lab.add_nad(
            "default",
            "wide-conf",
            &macvlan("192.168.2.0/24", "192.168.2.10", "192.168.2.250", &data),
        );
        // Fails in its second plugin, after macvlan and host-local have done their work.
        let mut broken = macvlan("192.168.3.0/24", "192.168.3.10", "192.168.3.20", &data);
        broken["name"] = "broken-conf".into();
        lab.add_nad(
            "default",
            "broken-conf",
            &json!({"cniVersion": "1.0.0", "name": "broken-conf", "plugins": [
                broken, {"type": "tuning", "sysctl": {"net.no.such.sysctl": "1"}}]}),
        );
        let cluster = json!({"cniVersion": "1.0.0", "name": "cluster-net", "plugins": [{
            "type": "ptp",
            "ipam": {"type": "host-local", "subnet": "10.244.1.0/24", "dataDir": data,
                     "routes": [{"dst": "0.0.0.0/0"}]}}]});
        std::fs::write(lab.path("cluster.conflist"), cluster.to_string()).expect("cluster");
        let config = json!({
            "socket": lab.socket(),
            "cacheDir": lab.path("cache"),
            "binDirs": [PLUGINS],
            "clusterNetwork": lab.path("cluster.conflist"),
            "namespaceIsolation": true,
            "configDir": lab.path("net.d"),
            "maxConcurrent": 4,
            "maxQueued": 64,
            "podWaitSeconds": 10,
        });
        std::fs::write(lab.path("attach.json"), config.to_string()).expect("attach config");
        lab.start_agent();
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn manifests(&self) -> PathBuf {
        self.path("manifests")
    }
    fn data_dir(&self) -> PathBuf {
        self.path("host-local")
    }
    fn socket(&self) -> PathBuf {
        self.path("attach.sock")
    }

    fn write_manifest(&self, file: &str, object: &Value) {
        let path = self.manifests().join(format!("{file}.json"));
        std::fs::write(path, object.to_string()).expect("manifest written");
    }

    fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.manifests().join(format!("{file}.json"))).expect("removed");
    }

    fn add_nad(&self, namespace: &str, name: &str, config: &Value) {
        self.write_manifest(
            &format!("nad-{namespace}-{name}"),
            &json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"config": config.to_string()}}),
        );
    }

    /// `netwarden attach-service` in the node namespace; returns once it answers a ping.
    fn start_agent(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", self.node.name()])
            .arg(binary("netwarden"))
            .arg("attach-service")
            .arg("--config")
            .arg(self.path("attach.json"))
            .arg("--cluster")
            .arg(format!("dir:{}", self.manifests().display()))
            .stdout(Stdio::null())
            .spawn()
            .expect("agent starts");
        self.agent = Some(child);
        let client = netwarden_cni::agent_link::AgentClient::new(self.socket());
        client
            .wait_ready(Duration::from_secs(20))
            .expect("agent ready");
    }

    fn stop_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            // `ip netns exec` execs the agent, so this is the agent's own pid.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A pod manifest in `namespace` asking for `networks` (none when empty), and its
    /// sandbox.
    fn pod(&mut self, namespace: &str, networks: &str) -> Pod {
        self.next_pod += 1;
        let name = format!("pod{}", self.next_pod);
        let mut annotations = json!({});
        if !networks.is_empty() {
            annotations["k8s.v1.cni.cncf.io/networks"] = networks.into();
        }
        self.write_manifest(
            &format!("pod-{namespace}-{name}"),
            &json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                                 "annotations": annotations},
                    "spec": {"containers": [{"name": "c", "image": "pause"}]}}),
        );
        let netns = NetNamespace::create("att-p").expect("pod netns");
        let container_id = netns.name().replace("nw-", "c");
        Pod {
            netns,
            namespace: namespace.into(),
            name,
            container_id,
        }
    }

    /// Runs `netwarden-cni` as the runtime would; returns the exit code and stdout JSON.
    fn cni(&self, command: &str, pod: &Pod) -> (i32, Value) {
        let args = format!(
            "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=uid-{}",
            pod.namespace, pod.name, pod.container_id, pod.name
        );
        let netns = pod.netns.path();
        let config = json!({"cniVersion": "1.0.0", "name": "netwarden", "type": "netwarden-cni",
                            "socket": self.socket(), "cacheDir": self.path("cache"),
                            "agentWaitSeconds": 10});
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.node.name()])
            .arg(binary("netwarden-cni"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs([
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", &pod.container_id),
                ("CNI_NETNS", netns.to_str().expect("utf-8 path")),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", &args),
                ("CNI_PATH", PLUGINS),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("netwarden-cni starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(config.to_string().as_bytes())
            .expect("config written");
        let out = child.wait_with_output().expect("netwarden-cni ends");
        let json = if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).expect("stdout is JSON")
        };
        (out.status.code().unwrap_or(-1), json)
    }

    /// The network-status the agent wrote into the pod's manifest.
    fn network_status(&self, pod: &Pod) -> Vec<NetworkStatus> {
        let file = self
            .manifests()
            .join(format!("pod-{}-{}.json", pod.namespace, pod.name));
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(file).expect("pod manifest")).expect("JSON");
        let value = manifest["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION]
            .as_str()
            .expect("network-status written");
        parse_network_status(value).expect("network-status parses")
    }

    /// Every address host-local holds, across networks.
    fn allocations(&self) -> Vec<String> {
        let mut held = Vec::new();
        for network in std::fs::read_dir(self.data_dir()).into_iter().flatten() {
            let network = network.expect("entry").path();
            for entry in std::fs::read_dir(&network).expect("network dir") {
                let name = entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8");
                if name.parse::<std::net::IpAddr>().is_ok() {
                    held.push(name);
                }
            }
        }
        held
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_agent();
    }
}

impl Pod {
    /// The IPv4 addresses of `ifname` in the sandbox; None when it does not exist.
    fn ipv4(&self, ifname: &str) -> Option<Vec<Ipv4Addr>> {
        let out = self
            .netns
            .exec(&["ip", "-j", "addr", "show", "dev", ifname])
            .ok()?;
        let links: Value = serde_json::from_slice(&out.stdout).ok()?;
        let addrs = links.get(0)?.get("addr_info")?.as_array()?.clone();
        Some(
            addrs
                .iter()
                .filter(|a| a["family"] == "inet")
                .filter_map(|a| a["local"].as_str()?.parse().ok())
                .collect(),
        )
    }

    /// Interfaces other than lo in the sandbox.
    fn interfaces(&self) -> Vec<String> {
        let out = self
            .netns
            .exec(&["ip", "-j", "link", "show"])
            .expect("ip link");
        let links: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        links
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .filter(|n| n != "lo")
            .collect()
    }
}

fn in_seed_range(address: &Ipv4Addr) -> bool {
    let last = address.octets()[3];
    address.octets()[..3] == [192, 168, 1] && (200..=216).contains(&last)
}

#[test]
fn the_seed_macvlan_pod_gets_eth0_and_net1_and_network_status_names_both() {
    let mut lab = Lab::new("att-seed");
    let pod = lab.pod("default", "macvlan-conf");
    let (code, result) = lab.cni("ADD", &pod);
    assert_eq!(code, 0, "{result}");
    // The runtime gets the cluster network's result, in its version.
    assert_eq!(result["cniVersion"], "1.0.0");
    let eth0 = pod.ipv4("eth0").expect("eth0 exists");
    assert!(
        eth0.iter().any(|a| a.octets()[..3] == [10, 244, 1]),
        "{eth0:?}"
    );
    assert!(result["ips"][0]["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("10.244.1.")));
    let net1 = pod.ipv4("net1").expect("net1 exists");
    assert!(net1.len() == 1 && in_seed_range(&net1[0]), "{net1:?}");

    let status = lab.network_status(&pod);
    let summary: Vec<_> = status
        .iter()
        .map(|s| (s.name.as_str(), s.interface.as_deref(), s.default))
        .collect();
    assert_eq!(
        summary,
        [
            ("cluster-net", Some("eth0"), true),
            ("default/macvlan-conf", Some("net1"), false)
        ]
    );
    assert_eq!(status[1].ips, [std::net::IpAddr::V4(net1[0])]);

    assert_eq!(lab.cni("CHECK", &pod).0, 0);
    assert_eq!(lab.cni("DEL", &pod), (0, Value::Null));
    assert!(pod.interfaces().is_empty(), "{:?}", pod.interfaces());
    assert!(lab.allocations().is_empty(), "{:?}", lab.allocations());
    assert_eq!(
        lab.cni("DEL", &pod),
        (0, Value::Null),
        "a repeated DEL fails"
    );
}

#[test]
fn the_same_network_twice_gives_net1_and_net2() {
    let mut lab = Lab::new("att-twice");
    let pod = lab.pod("default", "macvlan-conf,macvlan-conf");
    let (code, result) = lab.cni("ADD", &pod);
    assert_eq!(code, 0, "{result}");
    for ifname in ["eth0", "net1", "net2"] {
        assert!(pod.ipv4(ifname).is_some(), "{ifname} missing");
    }
    assert_eq!(lab.network_status(&pod).len(), 3);
    assert_eq!(lab.cni("DEL", &pod).0, 0);
    assert!(lab.allocations().is_empty());
}

#[test]
fn namespace_isolation_refuses_another_namespaces_network_and_attaches_nothing() {
    let mut lab = Lab::new("att-iso");
    let pod = lab.pod("development", "privileged/macvlan-conf");
    let (code, error) = lab.cni("ADD", &pod);
    assert_ne!(code, 0);
    let msg = error["msg"].as_str().expect("CNI error msg");
    assert!(
        msg.contains("development") && msg.contains("privileged") && msg.contains("isolation"),
        "{msg}"
    );
    assert!(pod.interfaces().is_empty(), "{:?}", pod.interfaces());
    assert!(lab.allocations().is_empty());

    // The global namespace `default` is allowed.
    let allowed = lab.pod("development", "default/macvlan-conf");
    assert_eq!(lab.cni("ADD", &allowed).0, 0);
    assert_eq!(lab.cni("DEL", &allowed).0, 0);
}

#[test]
fn a_delegate_failing_midway_leaves_no_interface_and_no_address() {
    let mut lab = Lab::new("att-fail");
    let pod = lab.pod("default", "macvlan-conf,broken-conf");
    let (code, error) = lab.cni("ADD", &pod);
    assert_ne!(code, 0);
    let msg = error["msg"].as_str().expect("CNI error msg");
    assert!(
        msg.contains(&format!("pod default/{}", pod.name))
            && msg.contains("default/broken-conf")
            && msg.contains("sysctl"),
        "{msg}"
    );
    assert!(pod.interfaces().is_empty(), "{:?}", pod.interfaces());
    assert!(lab.allocations().is_empty(), "{:?}", lab.allocations());
    assert_eq!(lab.cni("DEL", &pod), (0, Value::Null));
}

#[test]
fn del_with_the_agent_stopped_is_done_by_the_binary_from_the_cache() {
    let mut lab = Lab::new("att-down");
    let pod = lab.pod("default", "macvlan-conf");
    assert_eq!(lab.cni("ADD", &pod).0, 0);
    lab.stop_agent();
    assert_eq!(lab.cni("DEL", &pod), (0, Value::Null));
    assert!(pod.interfaces().is_empty());
    assert!(lab.allocations().is_empty());
    // CHECK needs the agent, and says so.
    let (code, error) = lab.cni("CHECK", &pod);
    assert_ne!(code, 0);
    assert!(
        error["msg"].as_str().unwrap_or("").contains("attach.sock"),
        "{error}"
    );
}

#[test]
fn del_works_after_the_nad_and_the_pod_are_deleted_and_after_an_agent_restart() {
    let mut lab = Lab::new("att-gone");
    let pod = lab.pod("default", "macvlan-conf");
    assert_eq!(lab.cni("ADD", &pod).0, 0);
    lab.remove_manifest("nad-default-macvlan-conf");
    lab.remove_manifest(&format!("pod-default-{}", pod.name));
    lab.stop_agent();
    lab.start_agent();
    assert_eq!(lab.cni("DEL", &pod), (0, Value::Null));
    assert!(pod.interfaces().is_empty());
    assert!(lab.allocations().is_empty(), "{:?}", lab.allocations());
    assert_eq!(lab.cni("DEL", &pod), (0, Value::Null));
}

#[test]
fn a_burst_of_concurrent_adds_all_succeed() {
    let mut lab = Lab::new("att-burst");
    let pods: Vec<Pod> = (0..30).map(|_| lab.pod("default", "wide-conf")).collect();
    let started = Instant::now();
    let results: Vec<(i32, Value)> = std::thread::scope(|scope| {
        let lab = &lab;
        let running: Vec<_> = pods
            .iter()
            .map(|pod| scope.spawn(move || lab.cni("ADD", pod)))
            .collect();
        running
            .into_iter()
            .map(|t| t.join().expect("ADD thread"))
            .collect()
    });
    for (pod, (code, out)) in pods.iter().zip(&results) {
        assert_eq!(*code, 0, "{}: {out}", pod.name);
        assert!(
            pod.ipv4("net1").is_some_and(|a| a.len() == 1),
            "{}",
            pod.name
        );
    }
    eprintln!("30 ADDs in {:?}", started.elapsed());
    assert_eq!(
        lab.allocations().len(),
        60,
        "one cluster and one wide-conf address each"
    );
    std::thread::scope(|scope| {
        let lab = &lab;
        for pod in &pods {
            scope.spawn(move || assert_eq!(lab.cni("DEL", pod), (0, Value::Null)));
        }
    });
    assert!(lab.allocations().is_empty(), "{:?}", lab.allocations());
}

#[test]
fn a_non_root_caller_gets_a_cni_error_even_when_it_can_reach_the_socket() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new("att-uid");
    // The socket is root-only (0600); open it up so the peer-credential check is what
    // refuses the caller. The temp dir must be traversable too.
    for path in [lab.dir.path().to_owned(), lab.socket()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let config = json!({"cniVersion": "1.0.0", "name": "netwarden", "socket": lab.socket()});
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(binary("netwarden-cni"))
        .env_clear()
        .env("CNI_COMMAND", "STATUS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("netwarden-cni starts as nobody");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(config.to_string().as_bytes())
        .expect("config written");
    let out = child.wait_with_output().expect("netwarden-cni ends");
    let error: Value = serde_json::from_slice(&out.stdout).expect("CNI error JSON");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error["msg"].as_str().unwrap_or("").contains("only root"),
        "{error}"
    );
}
