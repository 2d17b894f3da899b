//! Privileged: a real container runtime calls netwarden the way kubelet makes it.
//!
//! Debian's containerd (with runc) runs in the test node's network namespace on a socket,
//! root and state directory of its own. Its CNI configuration directory holds the cluster's
//! primary network (ptp) and the `00-netwarden.conflist` that a running
//! `netwarden cni-config` generated from it; its plugin directory holds `netwarden-cni`, put
//! there by `netwarden install-cni`, beside the reference plugins. The pause image is
//! busybox's `sleep`, packed as an image archive and imported locally (no registry). The
//! agent runs on the node's directory store, which holds the pod object asking for the seed
//! macvlan NAD. Through the CRI API (RunPodSandbox, PodSandboxStatus, StopPodSandbox,
//! RemovePodSandbox) the test runs the pod's sandbox and checks its interfaces, its
//! network-status, a MultiNetworkPolicy on its net1 against real traffic from a peer pod,
//! and that nothing of the sandbox is left once it is removed.
use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use netwarden_agent::{install::conflist, lab::topology::NetNamespace};
use netwarden_tests::{
    node::{binary, interfaces_in, ipv4_in, Lab, PLUGINS},
    wait::eventually,
};
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint, Uri};

const NAD: &str = "macvlan-conf";

/// Prints how long each phase took.
struct Phases(Instant);

impl Phases {
    fn done(&mut self, phase: &str) {
        println!("phase {phase}: {:.2?}", self.0.elapsed());
        self.0 = Instant::now();
    }
}

/// Runs a command to success; its output.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} could not start: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// An image archive (the `docker save` layout: manifest.json, the config, one layer) whose
/// only process is busybox's `sleep infinity`: a pause container. Returns the archive.
fn pause_image(dir: &Path, reference: &str) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("/bin/busybox (busybox-static; `cargo xtask setup` installs it)");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sleep")).unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(dir.join("layer.tar"))
        .arg("."));
    let sum = run(Command::new("sha256sum").arg(dir.join("layer.tar"))).stdout;
    let digest = String::from_utf8(sum).unwrap();
    let digest = digest.split_whitespace().next().unwrap();
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = json!({
        "architecture": architecture, "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "infinity"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let manifest =
        json!([{"Config": "config.json", "RepoTags": [reference], "Layers": ["layer.tar"]}]);
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let archive = dir.join("pause.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(&archive)
        .args(["manifest.json", "config.json", "layer.tar"]));
    archive
}

/// containerd on its own socket, root and state directory (never the machine's), in the
/// node's network namespace, with the CRI plugin's CNI directories pointing at the test's.
/// Killed on drop, and whatever it left mounted under its directory is unmounted.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start(node: &NetNamespace, conf_dir: &Path, bin_dir: &Path, sandbox_image: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nw-containerd-")
            .tempdir()
            .unwrap();
        let path = dir.path();
        // restrict_oom_score_adj and disable_cgroup: this machine gives no CAP_SYS_RESOURCE
        // and has hybrid cgroups (shared/TOOLCHAIN.md).
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_cgroup = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
"#,
            root = path.join("root").display(),
            state = path.join("state").display(),
            socket = path.join("containerd.sock").display(),
            bin = bin_dir.display(),
            conf = conf_dir.display(),
        );
        std::fs::write(path.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(path.join("containerd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", node.path().display()))
            .args(["containerd", "--config"])
            .arg(path.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd starts (`cargo xtask setup` installs it)");
        let containerd = Self { child, dir };
        let up = eventually(Duration::from_secs(20), || {
            containerd.ctr(&["version"]).status.success()
        });
        assert!(up, "containerd answers: {}", containerd.log());
        containerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// `ctr` on this containerd, in the CRI plugin's namespace.
    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .expect("ctr runs")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Deepest first, so nested mounts come off before their parents.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter(|mount| Path::new(mount).starts_with(self.dir.path()))
            .collect();
        ours.sort_by_key(|mount| std::cmp::Reverse(mount.len()));
        for mount in ours {
            let _ = Command::new("umount").args(["-l", mount]).status();
        }
    }
}

/// A CRI client on containerd's socket, with its own runtime so the test stays synchronous
/// (and a drop guard can make calls).
struct Cri {
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl Cri {
    fn connect(socket: PathBuf) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = runtime
            .block_on(
                Endpoint::try_from("http://[::]")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(socket).await?,
                            ))
                        }
                    })),
            )
            .expect("CRI connection");
        Self {
            runtime,
            client: RuntimeServiceClient::new(channel),
        }
    }
}

/// A pod sandbox run through the CRI; stopped and removed on drop if the test did not.
struct Sandbox {
    cri: Cri,
    id: String,
    removed: bool,
}

impl Sandbox {
    fn run(mut cri: Cri, namespace: &str, name: &str) -> Self {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: namespace.into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            hostname: name.into(),
            ..PodSandboxConfig::default()
        };
        let request = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        let Cri { runtime, client } = &mut cri;
        let id = runtime
            .block_on(client.run_pod_sandbox(request))
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        Self {
            cri,
            id,
            removed: false,
        }
    }

    /// PodSandboxStatus, verbose: the runtime's status and its info (JSON).
    fn status(&mut self) -> (k8s_cri::v1::PodSandboxStatus, Value) {
        let Cri { runtime, client } = &mut self.cri;
        let response = runtime
            .block_on(client.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: self.id.clone(),
                verbose: true,
            }))
            .expect("PodSandboxStatus")
            .into_inner();
        let info = response
            .info
            .get("info")
            .map(|text| serde_json::from_str(text).expect("info is JSON"))
            .unwrap_or(Value::Null);
        (response.status.expect("a status"), info)
    }

    /// The sandbox's network namespace, as the runtime spec names it.
    fn netns(&mut self) -> PathBuf {
        let (_, info) = self.status();
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .expect("runtimeSpec namespaces")
            .iter()
            .find(|ns| ns["type"] == "network")
            .and_then(|ns| ns["path"].as_str())
            .map(PathBuf::from)
            .expect("a network namespace path")
    }

    /// StopPodSandbox (CNI DEL), then RemovePodSandbox.
    fn stop_and_remove(&mut self) -> Result<(), tonic::Status> {
        let Cri { runtime, client } = &mut self.cri;
        runtime.block_on(client.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: self.id.clone(),
        }))?;
        runtime.block_on(client.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: self.id.clone(),
        }))?;
        self.removed = true;
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(status) = self.stop_and_remove() {
                eprintln!("cleanup of sandbox {}: {status}", self.id);
            }
        }
    }
}

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn only_ipv4(netns: &Path, ifname: &str) -> Ipv4Addr {
    let addresses = ipv4_in(netns, ifname).unwrap_or_else(|| panic!("{ifname} exists"));
    assert_eq!(addresses.len(), 1, "{ifname}: {addresses:?}");
    addresses[0]
}

fn rss_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix("VmRSS:")
                .map(str::trim)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

#[test]
fn containerd_runs_a_pod_sandbox_whose_networks_and_policy_netwarden_makes() {
    let mut phases = Phases(Instant::now());
    let mut lab = Lab::new("cri");

    // The node's CNI directories, as the DaemonSet's init container and cni-config leave
    // them: the primary network, netwarden's conflist delegating to it, the plugins.
    let conf_dir = lab.path("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let primary = conf_dir.join("10-cluster.conflist");
    std::fs::write(&primary, lab.cluster_network().to_string()).unwrap();
    let bin_dir = lab.path("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    run(Command::new(binary("netwarden"))
        .arg("install-cni")
        .arg("--from")
        .arg(binary("netwarden-cni"))
        .arg("--to")
        .arg(&bin_dir));
    for plugin in std::fs::read_dir(PLUGINS).unwrap() {
        let plugin = plugin.unwrap();
        std::os::unix::fs::symlink(plugin.path(), bin_dir.join(plugin.file_name())).unwrap();
    }
    let cni_config = Process(
        Command::new(binary("netwarden"))
            .arg("cni-config")
            .arg("--config-dir")
            .arg(&conf_dir)
            .arg("--cluster-network")
            .arg(lab.path("cluster.conflist"))
            .arg("--socket")
            .arg(lab.socket())
            .arg("--cache-dir")
            .arg(lab.path("cache"))
            .stdout(Stdio::null())
            .spawn()
            .expect("netwarden cni-config starts"),
    );
    let ours = conf_dir.join(conflist::FILE_NAME);
    assert!(
        eventually(Duration::from_secs(10), || ours.exists()),
        "cni-config writes {}",
        ours.display()
    );
    let generated = std::fs::read_to_string(&ours).unwrap();
    assert_eq!(conflist::delegates_to(&generated), Some(primary.clone()));
    assert_eq!(
        std::fs::read_to_string(lab.path("cluster.conflist")).unwrap(),
        lab.cluster_network().to_string(),
        "the agent's cluster network is the primary's copy"
    );
    phases.done("install-cni and cni-config");

    let image_dir = tempfile::tempdir().unwrap();
    let reference = format!("netwarden.test/pause:{}", std::process::id());
    let archive = pause_image(image_dir.path(), &reference);
    let containerd = Containerd::start(&lab.node, &conf_dir, &bin_dir, &reference);
    let imported = containerd.ctr(&["images", "import", archive.to_str().unwrap()]);
    assert!(
        imported.status.success(),
        "ctr images import: {}",
        String::from_utf8_lossy(&imported.stderr)
    );
    phases.done("containerd started, pause image imported");

    // A peer on the same macvlan network, attached as a runtime would (netwarden-cni).
    let peer = lab.pod_labelled("default", NAD, &json!({"app": "client"}));
    let (code, added) = lab.cni("ADD", &peer);
    assert_eq!(code, 0, "peer ADD: {added}");
    let endpoints_before: HashSet<_> = lab
        .pins()
        .attached_endpoints()
        .unwrap()
        .into_iter()
        .collect();
    let node_links_before = interfaces_in(&lab.node.path());

    let name = lab.write_pod("default", NAD, &json!({"app": "server"}));
    let mut sandbox = Sandbox::run(Cri::connect(containerd.socket()), "default", &name);
    phases.done("RunPodSandbox (CNI ADD through netwarden)");

    let netns = sandbox.netns();
    let mut interfaces = interfaces_in(&netns);
    interfaces.sort();
    assert_eq!(interfaces, ["eth0", "net1"], "the sandbox's interfaces");
    let eth0 = only_ipv4(&netns, "eth0");
    let net1 = only_ipv4(&netns, "net1");
    assert!(
        "10.244.1.0/24"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&eth0),
        "{eth0}"
    );
    assert!(
        (Ipv4Addr::new(192, 168, 1, 200)..=Ipv4Addr::new(192, 168, 1, 216)).contains(&net1),
        "{net1} from the seed NAD's range"
    );
    let (status, _) = sandbox.status();
    assert_eq!(
        status.network.expect("network status").ip,
        eth0.to_string(),
        "the runtime got the cluster network's result"
    );
    let statuses = lab.pod_network_status("default", &name);
    let reported: Vec<(String, Option<String>, Vec<String>, bool)> = statuses
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.interface.clone(),
                s.ips.iter().map(ToString::to_string).collect(),
                s.default,
            )
        })
        .collect();
    assert_eq!(
        reported,
        [
            (
                "cluster-net".into(),
                Some("eth0".into()),
                vec![eth0.to_string()],
                true
            ),
            (
                format!("default/{NAD}"),
                Some("net1".into()),
                vec![net1.to_string()],
                false
            ),
        ],
        "network-status in the pod's manifest"
    );
    phases.done("interfaces and network-status");

    let net1 = net1.to_string();
    assert!(
        peer.netns.ping(&net1).unwrap(),
        "no policy: the peer reaches net1"
    );
    lab.multi_network_policy(
        "default",
        "servers-from-friends",
        NAD,
        &json!({"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "friend"}}}]}]}),
    );
    assert!(
        eventually(Duration::from_secs(10), || !peer.netns.ping(&net1).unwrap()),
        "the policy denies the peer on net1"
    );
    lab.set_labels(&peer, &json!({"app": "friend"}));
    assert!(
        eventually(Duration::from_secs(10), || peer.netns.ping(&net1).unwrap()),
        "the relabelled peer is admitted"
    );
    phases.done("MultiNetworkPolicy enforced on the sandbox's net1");
    let endpoints_during: HashSet<_> = lab
        .pins()
        .attached_endpoints()
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        endpoints_during.is_superset(&endpoints_before)
            && endpoints_during.len() > endpoints_before.len(),
        "the sandbox's net1 is pinned while it runs: before {endpoints_before:?}, \
         during {endpoints_during:?}"
    );

    let id = sandbox.id.clone();
    sandbox
        .stop_and_remove()
        .expect("StopPodSandbox and RemovePodSandbox");
    phases.done("StopPodSandbox and RemovePodSandbox (CNI DEL through netwarden)");

    assert!(!netns.exists(), "{} is gone", netns.display());
    let held = lab.allocations();
    for address in [eth0.to_string(), net1] {
        assert!(!held.contains(&address), "{address} released: {held:?}");
    }
    assert!(
        !lab.path("cache").join(format!("{id}.json")).exists(),
        "the sandbox's cache entry is gone"
    );
    let endpoints_after: HashSet<_> = lab
        .pins()
        .attached_endpoints()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        endpoints_after, endpoints_before,
        "the sandbox's pinned links are gone"
    );
    assert_eq!(
        interfaces_in(&lab.node.path()),
        node_links_before,
        "no host-side interface is left"
    );
    if let Some(pid) = lab.agent_pid() {
        println!("agent VmRSS after the run: {}", rss_of(pid));
    }
    let (code, deleted) = lab.cni("DEL", &peer);
    assert_eq!(code, 0, "peer DEL: {deleted}");
    drop(sandbox);
    drop(containerd);

    // Another primary takes over (its file sorts first): cni-config follows it.
    let other = json!({"cniVersion": "0.4.0", "name": "other-net", "type": "bridge"});
    let replaced = conf_dir.join("05-other.conf");
    std::fs::write(conf_dir.join(".05-other.conf.tmp"), other.to_string()).unwrap();
    std::fs::rename(conf_dir.join(".05-other.conf.tmp"), &replaced).unwrap();
    let follows = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&ours)
            .ok()
            .and_then(|text| conflist::delegates_to(&text))
            == Some(replaced.clone())
    });
    assert!(follows, "00-netwarden.conflist follows the new primary");
    assert_eq!(
        std::fs::read_to_string(lab.path("cluster.conflist")).unwrap(),
        other.to_string()
    );

    // Uninstall, with the agent and cni-config stopped (the netwarden DaemonSet deleted) as
    // the uninstall DaemonSet expects: a running cni-config would write its file again.
    drop(cni_config);
    lab.stop_agent();
    run(Command::new(binary("netwarden"))
        .arg("uninstall-cni")
        .arg("--config-dir")
        .arg(&conf_dir)
        .arg("--cluster-network")
        .arg(lab.path("cluster.conflist"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--bpffs")
        .arg(lab.pins().path()));
    assert!(!ours.exists() && !lab.path("cluster.conflist").exists());
    assert!(!bin_dir.join("netwarden-cni").exists() && bin_dir.join("macvlan").exists());
    assert!(!lab.pins().path().exists(), "the pins are removed");
    assert!(primary.exists() && replaced.exists(), "the primaries stay");
    phases.done("primary change, uninstall-cni");
}
