//! A node for end-to-end tests and benchmarks, made of real parts: a network namespace
//! whose `eth0` (one end of a veth pair: this kernel has no dummy driver) is the macvlan
//! master, a directory of manifests (namespaces, the seed macvlan NAD with host-local, pods,
//! policies) as the cluster state, and a real `netwarden agent` process running in that
//! namespace on it, pinning under its own bpffs directory. Pods are sandboxes (network
//! namespaces). CNI plugins, `netwarden-cni` or the reference ones in /usr/lib/cni, are
//! executed the way a container runtime does: CNI_* environment, the network config on
//! stdin, JSON on stdout, exit status, from the node namespace.
//!
//! The binaries: cargo builds other packages' binaries only for their own integration
//! tests, so these are found beside the running test or bench executable
//! (`target/<profile>/`, the parent of `deps/`). `cargo xtask test` builds them; alone, run
//! `cargo build [--release] -p netwarden-agent -p netwarden-cni` first.
use std::{
    ffi::OsString,
    fs::File,
    io::{Read, Write},
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use netwarden_agent::{datapath::pins::ScratchPinRoot, lab::topology::NetNamespace};
use netwarden_cni::status::{parse_network_status, NetworkStatus, NETWORK_STATUS_ANNOTATION};
pub use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// The node's name in the agent's configuration and in every pod's `spec.nodeName`.
pub const NODE: &str = "node-a";
/// The agent's HTTP endpoint, inside the node namespace (each node has its own loopback).
pub const AGENT_HTTP: &str = "127.0.0.1:9465";

pub const PLUGINS: &str = "/usr/lib/cni";

/// A binary of this workspace, built for the running executable's profile.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build [--release] -p netwarden-agent -p netwarden-cni` first",
        path.display()
    );
    path
}

/// A seed-style macvlan NAD config (Multus quickstart) over the node's `eth0`.
pub fn macvlan(subnet: &str, start: &str, end: &str, data_dir: &Path) -> Value {
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

/// Runs a CNI plugin `command` (environment set) with `config` on its stdin; returns the
/// exit code and stdout JSON (Null when empty).
pub fn run_plugin(command: &mut Command, config: &Value) -> (i32, Value) {
    let (code, stdout) = run_plugin_raw(command, config.to_string().as_bytes());
    (code, stdout_json(&stdout))
}

/// Runs a prepared CNI plugin command with `stdin` as its input: its exit code and stdout.
pub fn run_plugin_raw(command: &mut Command, stdin: &[u8]) -> (i32, Vec<u8>) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("CNI plugin starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("config written");
    let out = child.wait_with_output().expect("CNI plugin ends");
    (out.status.code().unwrap_or(-1), out.stdout)
}

/// A plugin's stdout as JSON (`Null` when it printed nothing).
fn stdout_json(stdout: &[u8]) -> Value {
    if stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(stdout).expect("stdout is JSON")
    }
}

/// A node running the agent, a manifest directory, a cache.
pub struct Lab {
    pub node: NetNamespace,
    pub dir: tempfile::TempDir,
    agent: Option<Child>,
    next_pod: u32,
    /// `KUBECONFIG` for the agent, when it reads a Kubernetes API ([`Lab::use_kube`]).
    kubeconfig: Option<PathBuf>,
    /// Dropped after the agent is stopped: removing it detaches every link it pinned.
    pins: ScratchPinRoot,
}

/// A pod: its manifest, its sandbox namespace, its container ID.
pub struct Pod {
    pub netns: NetNamespace,
    pub namespace: String,
    pub name: String,
    pub container_id: String,
    /// What the runtime passes as `K8S_POD_UID`: the pod object's uid.
    pub uid: String,
}

impl Lab {
    /// The node (namespaces `default`, `development`, `privileged`; NADs `macvlan-conf`
    /// in `default` and `privileged`, `wide-conf` and `broken-conf` in `default`; the
    /// cluster network [`Lab::cluster_network`]) with the agent running.
    pub fn new(prefix: &str) -> Self {
        let mut lab = Self::prepare(prefix);
        lab.start_agent();
        lab
    }

    /// [`Lab::new`] without starting the agent.
    pub fn prepare(prefix: &str) -> Self {
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
        let lab = Self {
            node,
            dir,
            agent: None,
            next_pod: 0,
            kubeconfig: None,
            pins: ScratchPinRoot::create(prefix),
        };
        std::fs::create_dir_all(lab.manifests()).expect("manifest dir");
        for ns in ["default", "development", "privileged"] {
            lab.write_manifest(
                &format!("ns-{ns}"),
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            );
        }
        let seed = lab.seed_network();
        for ns in ["default", "privileged"] {
            lab.add_nad(ns, "macvlan-conf", &seed);
        }
        let data = lab.data_dir();
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
        std::fs::write(
            lab.path("cluster.conflist"),
            lab.cluster_network().to_string(),
        )
        .expect("cluster");
        let config = json!({
            "node": NODE,
            "cluster": format!("dir:{}", lab.manifests().display()),
            "bpffs": lab.pins.root().path(),
            "metricsAddress": AGENT_HTTP,
            "reconcileSeconds": 1,
            "socket": lab.socket(),
            "cacheDir": lab.path("cache"),
            "binDirs": [PLUGINS],
            "clusterNetwork": lab.path("cluster.conflist"),
            "namespaceIsolation": true,
            "configDir": lab.path("net.d"),
            "maxConcurrent": 4,
            "maxQueued": 64,
            "podWaitSeconds": 10,
            "logFormat": "json",
        });
        std::fs::write(lab.path("agent.json"), config.to_string()).expect("agent config");
        lab
    }

    /// Points the (not yet started) agent at a Kubernetes API instead of the manifest
    /// directory: `cluster: kube`, found through `kubeconfig`. The manifests are still
    /// written; the test publishes them to its API server.
    pub fn use_kube(&mut self, kubeconfig: &Path) {
        self.kubeconfig = Some(kubeconfig.to_owned());
        self.edit_config(|config| config["cluster"] = "kube".into());
    }

    /// The config of the seed NAD `macvlan-conf` (range .200-.216 of 192.168.1.0/24).
    pub fn seed_network(&self) -> Value {
        macvlan(
            "192.168.1.0/24",
            "192.168.1.200",
            "192.168.1.216",
            &self.data_dir(),
        )
    }

    /// The cluster's primary network: a conflist of ptp with host-local.
    pub fn cluster_network(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "cluster-net", "plugins": [{
            "type": "ptp",
            "ipam": {"type": "host-local", "subnet": "10.244.1.0/24", "dataDir": self.data_dir(),
                     "routes": [{"dst": "0.0.0.0/0"}]}}]})
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn manifests(&self) -> PathBuf {
        self.path("manifests")
    }
    /// Where host-local keeps its allocations, every network of this node.
    pub fn data_dir(&self) -> PathBuf {
        self.path("host-local")
    }
    pub fn socket(&self) -> PathBuf {
        self.path("attach.sock")
    }

    /// Writes (or replaces) a manifest at once: the watcher never reads half a file.
    pub fn write_manifest(&self, file: &str, object: &Value) {
        let path = self.manifests().join(format!("{file}.json"));
        let temporary = self.path(&format!(".{file}.json.tmp"));
        std::fs::write(&temporary, object.to_string()).expect("manifest written");
        std::fs::rename(&temporary, path).expect("manifest moved into place");
    }

    pub fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.manifests().join(format!("{file}.json"))).expect("removed");
    }

    pub fn add_nad(&self, namespace: &str, name: &str, config: &Value) {
        self.write_manifest(
            &format!("nad-{namespace}-{name}"),
            &json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"config": config.to_string()}}),
        );
    }

    /// `netwarden agent` in the node namespace; returns once it answers a ping (which it
    /// does only once the cluster state is listed and enforced).
    ///
    /// `nsenter --net`, not `ip netns exec`: the latter gives the process a mount namespace
    /// with a fresh /sys, without the bpffs at /sys/fs/bpf the agent pins into.
    pub fn start_agent(&mut self) {
        // Every run appends its logs (JSON lines, on stdout) to one file.
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.agent_log())
            .expect("agent log file");
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.node.path().display()))
            .arg(binary("netwarden"))
            .arg("agent")
            .arg("--config")
            .arg(self.path("agent.json"))
            .stdout(log);
        if let Some(kubeconfig) = &self.kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let child = command.spawn().expect("agent starts");
        self.agent = Some(child);
        let client = netwarden_cni::agent_link::AgentClient::new(self.socket());
        if let Err(problem) = client.wait_ready(Duration::from_secs(20)) {
            panic!("agent ready: {problem:?}\n{}", self.agent_report());
        }
    }

    /// Whether the agent still runs, and the end of its log: what a failed start needs.
    fn agent_report(&mut self) -> String {
        const LINES: usize = 40;
        let state = match self.agent.as_mut().map(|child| child.try_wait()) {
            Some(Ok(Some(status))) => format!("the agent exited: {status}"),
            Some(Ok(None)) => "the agent still runs".to_owned(),
            Some(Err(e)) => format!("the agent's state is unknown: {e}"),
            None => "no agent was started".to_owned(),
        };
        let log = std::fs::read_to_string(self.agent_log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LINES)..];
        format!(
            "{state}; the last {} lines of its log:\n{}",
            tail.len(),
            tail.join("\n")
        )
    }

    /// Where the agent's logs go.
    pub fn agent_log(&self) -> PathBuf {
        self.path("agent.log")
    }

    /// The running agent's process id (`nsenter` execs the agent).
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Sends `signal` to the agent without waiting for it: callable while a CNI call is in
    /// flight on another thread. [`Lab::stop_agent`] reaps it afterwards.
    pub fn signal_agent(&self, signal: Signal) {
        if let Some(pid) = self.agent_pid() {
            // `nsenter` execs the agent, so this is the agent's own pid; until it is
            // reaped the pid cannot be reused.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
    }

    /// Kills the agent (SIGKILL: a crash) and reaps it.
    pub fn stop_agent(&mut self) {
        self.stop_agent_with(Signal::SIGKILL);
    }

    /// Stops the agent with `signal` (SIGTERM: the kubelet stopping its pod) and waits
    /// until it has exited.
    pub fn stop_agent_with(&mut self, signal: Signal) {
        if self.agent.is_some() {
            self.signal_agent(signal);
        }
        if let Some(mut child) = self.agent.take() {
            let _ = child.wait();
        }
    }

    /// The agent's peak resident set so far (VmHWM), in KiB.
    pub fn agent_peak_rss_kib(&self) -> u64 {
        let pid = self.agent_pid().expect("the agent runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// Changes the agent's configuration file and restarts the agent on it.
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut Value)) {
        self.edit_config(change);
        self.stop_agent();
        self.start_agent();
    }

    /// Changes the agent's configuration file (read when the agent starts).
    fn edit_config(&self, change: impl FnOnce(&mut Value)) {
        let file = self.path("agent.json");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&file).expect("agent config")).expect("JSON");
        change(&mut config);
        std::fs::write(&file, config.to_string()).expect("agent config written");
    }

    /// A pod manifest in `namespace` asking for `networks` (none when empty), and its
    /// sandbox.
    pub fn pod(&mut self, namespace: &str, networks: &str) -> Pod {
        self.pod_labelled(namespace, networks, &json!({}))
    }

    /// A pod manifest with `labels`, scheduled on this node, and its sandbox.
    pub fn pod_labelled(&mut self, namespace: &str, networks: &str, labels: &Value) -> Pod {
        let name = self.write_pod(namespace, networks, labels);
        self.sandbox(namespace, name)
    }

    /// Only the manifest of a pod with `labels`, scheduled on this node (for a runtime that
    /// makes the sandbox itself); returns its name. Its uid is `uid-<name>`.
    pub fn write_pod(&mut self, namespace: &str, networks: &str, labels: &Value) -> String {
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
                                 "annotations": annotations, "labels": labels},
                    "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "pause"}]}}),
        );
        name
    }

    /// A sandbox for a pod the cluster does not know (plugins run without netwarden).
    pub fn sandbox(&self, namespace: &str, name: String) -> Pod {
        let netns = NetNamespace::create("att-p").expect("pod netns");
        let container_id = netns.name().replace("nw-", "c");
        Pod {
            netns,
            namespace: namespace.into(),
            uid: format!("uid-{name}"),
            name,
            container_id,
        }
    }

    /// Runs `netwarden-cni` as the runtime would; returns the exit code and stdout JSON.
    pub fn cni(&self, command: &str, pod: &Pod) -> (i32, Value) {
        let config = json!({"cniVersion": "1.0.0", "name": "netwarden", "type": "netwarden-cni",
                            "socket": self.socket(), "cacheDir": self.path("cache"),
                            "agentWaitSeconds": 10});
        self.exec_plugin(&binary("netwarden-cni"), command, pod, "eth0", &config)
    }

    /// Executes a CNI plugin as the runtime does, in the node namespace, for `pod`'s
    /// interface `ifname`; returns the exit code and stdout JSON (Null when empty).
    pub fn exec_plugin(
        &self,
        plugin: &Path,
        command: &str,
        pod: &Pod,
        ifname: &str,
        config: &Value,
    ) -> (i32, Value) {
        let (code, stdout) = self.exec_plugin_raw(
            plugin,
            command,
            pod,
            ifname,
            &[],
            config.to_string().as_bytes(),
        );
        (code, stdout_json(&stdout))
    }

    /// [`Lab::exec_plugin`] with any bytes: the environment as for `pod` with `overrides`
    /// replacing variables (non-UTF-8 values included), and `stdin` as given; returns the
    /// exit code and stdout.
    pub fn exec_plugin_raw(
        &self,
        plugin: &Path,
        command: &str,
        pod: &Pod,
        ifname: &str,
        overrides: &[(&str, OsString)],
        stdin: &[u8],
    ) -> (i32, Vec<u8>) {
        let args = format!(
            "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            pod.namespace, pod.name, pod.container_id, pod.uid
        );
        let mut vars: Vec<(&str, OsString)> = vec![
            ("CNI_COMMAND", command.into()),
            ("CNI_CONTAINERID", pod.container_id.as_str().into()),
            ("CNI_NETNS", pod.netns.path().into()),
            ("CNI_IFNAME", ifname.into()),
            ("CNI_ARGS", args.into()),
            ("CNI_PATH", PLUGINS.into()),
        ];
        for (key, value) in overrides {
            vars.retain(|(k, _)| k != key);
            vars.push((key, value.clone()));
        }
        let node = File::open(self.node.path()).expect("node netns handle");
        let mut child = Command::new(plugin);
        child
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(vars);
        // Only the network namespace, as a runtime does (`ip netns exec` would also give
        // the plugin a fresh /sys). SAFETY: between fork and exec the child only makes the
        // setns system call.
        unsafe {
            child.pre_exec(move || {
                nix::sched::setns(&node, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
        run_plugin_raw(&mut child, stdin)
    }

    /// The network-status the agent wrote into the pod's manifest.
    pub fn network_status(&self, pod: &Pod) -> Vec<NetworkStatus> {
        self.pod_network_status(&pod.namespace, &pod.name)
    }

    /// The network-status the agent wrote into the manifest of pod `namespace/name`.
    pub fn pod_network_status(&self, namespace: &str, name: &str) -> Vec<NetworkStatus> {
        let file = self
            .manifests()
            .join(format!("pod-{namespace}-{name}.json"));
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(file).expect("pod manifest")).expect("JSON");
        let value = manifest["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION]
            .as_str()
            .expect("network-status written");
        parse_network_status(value).expect("network-status parses")
    }

    /// Every address host-local holds, across networks.
    pub fn allocations(&self) -> Vec<String> {
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

impl Lab {
    /// Where the agent pins its maps and links.
    pub fn pins(&self) -> &netwarden_agent::datapath::pins::PinRoot {
        self.pins.root()
    }

    fn pod_file(pod: &Pod) -> String {
        format!("pod-{}-{}", pod.namespace, pod.name)
    }

    /// Replaces the pod's labels in its manifest, keeping everything else (the agent's
    /// network-status included).
    pub fn set_labels(&self, pod: &Pod, labels: &Value) {
        let file = Self::pod_file(pod);
        let path = self.manifests().join(format!("{file}.json"));
        let mut manifest: Value =
            serde_json::from_slice(&std::fs::read(path).expect("pod manifest")).expect("JSON");
        manifest["metadata"]["labels"] = labels.clone();
        self.write_manifest(&file, &manifest);
    }

    /// A MultiNetworkPolicy in `namespace` for `network` (its `spec` given).
    pub fn multi_network_policy(&self, namespace: &str, name: &str, network: &str, spec: &Value) {
        self.write_manifest(
            &format!("mnp-{namespace}-{name}"),
            &json!({"apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
                    "metadata": {"name": name, "namespace": namespace,
                                 "annotations": {"k8s.v1.cni.cncf.io/policy-for": network}},
                    "spec": spec}),
        );
    }

    /// GET `path` from the agent's HTTP endpoint: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n");
        let response = netwarden_agent::netns::run_in(&self.node.path(), move || {
            let mut stream = std::net::TcpStream::connect(AGENT_HTTP)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(request.as_bytes())?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok::<_, std::io::Error>(response)
        })
        .expect("node namespace")
        .expect("the agent answers HTTP");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("an HTTP status line");
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .to_owned();
        (status, body)
    }

    /// A gauge or counter from the agent's `/metrics` (`name` with its labels, as printed).
    pub fn metric(&self, name: &str) -> f64 {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{body}"))
    }

    /// `netwarden ARGS` in the node namespace (where the agent's HTTP endpoint is).
    pub fn netwarden(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.node.name()])
            .arg(binary("netwarden"))
            .args(args)
            .arg("--agent")
            .arg(format!("http://{AGENT_HTTP}"));
        command
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_agent();
    }
}

impl Pod {
    /// The IPv4 addresses of `ifname` in the sandbox; None when it does not exist.
    pub fn ipv4(&self, ifname: &str) -> Option<Vec<Ipv4Addr>> {
        ipv4_in(&self.netns.path(), ifname)
    }

    /// Interfaces other than lo in the sandbox.
    pub fn interfaces(&self) -> Vec<String> {
        interfaces_in(&self.netns.path())
    }

    /// Datagrams the sandbox's kernel handed to UDP (see [`udp_delivered`]).
    pub fn udp_delivered(&self) -> u64 {
        let snmp = self.netns.exec(&["cat", "/proc/net/snmp"]).expect("snmp");
        udp_delivered(&String::from_utf8_lossy(&snmp.stdout))
    }

    /// Packets that arrived on `ifname`, before its classifier judged them.
    pub fn rx_packets(&self, ifname: &str) -> u64 {
        let file = format!("/sys/class/net/{ifname}/statistics/rx_packets");
        let out = self.netns.exec(&["cat", &file]).expect("statistics");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().parse().expect("a counter")
    }
}

/// Datagrams a kernel handed to UDP (to a socket, or to none: NoPorts) and those it
/// dropped as bad, from its /proc/net/snmp: every datagram past the classifiers.
pub fn udp_delivered(snmp: &str) -> u64 {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (
        udp.next().expect("Udp header"),
        udp.next().expect("Udp values"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(name, _)| ["InDatagrams", "NoPorts", "InErrors"].contains(name))
        .map(|(_, value)| value.parse::<u64>().expect("a counter"))
        .sum()
}

/// `ip -j ARGS` in the network namespace at `netns` (any path: ours under /run/netns or a
/// runtime's); None when it fails.
fn ip_json_in(netns: &Path, args: &[&str]) -> Option<Value> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-j"])
        .args(args)
        .output()
        .ok()?;
    out.status.success().then_some(())?;
    serde_json::from_slice(&out.stdout).ok()
}

/// The IPv4 addresses of `ifname` in the network namespace at `netns`; None when it does
/// not exist.
pub fn ipv4_in(netns: &Path, ifname: &str) -> Option<Vec<Ipv4Addr>> {
    let links = ip_json_in(netns, &["addr", "show", "dev", ifname])?;
    let addrs = links.get(0)?.get("addr_info")?.as_array()?.clone();
    Some(
        addrs
            .iter()
            .filter(|a| a["family"] == "inet")
            .filter_map(|a| a["local"].as_str()?.parse().ok())
            .collect(),
    )
}

/// Interfaces other than lo in the network namespace at `netns`.
pub fn interfaces_in(netns: &Path) -> Vec<String> {
    let links = ip_json_in(netns, &["link", "show"]).expect("ip link lists the links");
    links
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .filter(|n| n != "lo")
        .collect()
}
