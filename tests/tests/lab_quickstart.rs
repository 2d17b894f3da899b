//! Privileged: `netwarden lab` brings up the quickstart example (two nodes, the seed's
//! macvlan NAD over `eth0`, pods with ports), and its truth tables are what the scenario
//! says: a pod reaches another on a network they share exactly when the other serves the
//! probed port (no policy is enforced yet). Pods come and go with `lab apply`/`lab delete`,
//! `lab exec` runs in a pod, `lab probe`'s table and `lab status` say what the lab is, and
//! `lab down` leaves nothing of the lab behind, also after `lab up` was killed half-way.
//!
//! The expectations are computed from the example's manifests, so scenarios with
//! policies can add "and no policy denies it" to [`expected`].
use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use netwarden_agent::lab::{
    spec::{self, ContainerPort, Manifest, PodName, Protocol},
    state::LABS_BPFFS_DIR,
};
use netwarden_tests::lab::{example, RunningLab as Lab, Table};
use serde_json::Value;

/// What the scenario says: every pod on `network` (all pods for the cluster network;
/// those whose networks annotation names the NAD otherwise) reaches every other one on
/// it that declares `port`.
fn expected(manifests: &[Manifest], network: Option<&str>, port: ContainerPort) -> Table {
    let pods: Vec<(PodName, Vec<ContainerPort>)> = manifests
        .iter()
        .filter(|m| m.key.kind == "Pod")
        .filter(|m| network.is_none_or(|nad| attaches(m, nad)))
        .map(|m| {
            let pod = spec::pod_spec(m).expect("example pods are valid");
            (pod.pod, pod.ports)
        })
        .collect();
    pods.iter()
        .map(|(from, _)| {
            let row = pods
                .iter()
                .filter(|(to, _)| to != from)
                .map(|(to, ports)| (to.to_string(), ports.contains(&port)))
                .collect();
            (from.to_string(), row)
        })
        .collect()
}

/// Whether the pod's `k8s.v1.cni.cncf.io/networks` names `nad` (`namespace/name`).
fn attaches(pod: &Manifest, nad: &str) -> bool {
    let namespace = pod.key.namespace.as_deref().unwrap_or("default");
    pod.value
        .pointer("/metadata/annotations/k8s.v1.cni.cncf.io~1networks")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .any(|n| {
            let full = if n.contains('/') {
                n.to_owned()
            } else {
                format!("{namespace}/{n}")
            };
            full == nad
        })
}

const NET1: &str = "default/macvlan-conf";

fn tcp(port: u16) -> ContainerPort {
    ContainerPort {
        protocol: Protocol::Tcp,
        port,
    }
}

fn leftovers(name: &str) -> Vec<String> {
    let prefix = format!("nwlab-{name}-");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) {
            found.push(format!("netns {file}"));
        }
    }
    let root = format!("/run/netwarden-lab/{name}");
    let pins = format!("{LABS_BPFFS_DIR}/{name}");
    for dir in [&root, &pins] {
        if Path::new(dir).exists() {
            found.push(dir.clone());
        }
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&format!("{root}/")) || cmdline.contains(&format!("--name {name} ")) {
            found.push(format!("process {cmdline}"));
        }
    }
    for network in std::fs::read_dir("/var/lib/cni/networks")
        .into_iter()
        .flatten()
        .flatten()
    {
        for entry in std::fs::read_dir(network.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .starts_with(&prefix)
            {
                found.push(format!("allocation {}", entry.path().display()));
            }
        }
    }
    found
}

/// `lab probe`'s table (title; header `from` and the destinations; a row per source with
/// `.` or `X` per destination, nothing on the diagonal) read back into a [`Table`].
fn parsed_table(text: &str) -> Table {
    let mut lines = text.lines().skip(1).filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(header.first(), Some(&"from"), "{text}");
    let names = &header[1..];
    lines
        .map(|line| {
            let mut cells = line.split_whitespace();
            let from = cells.next().expect("a source").to_owned();
            let others = names.iter().filter(|to| **to != from);
            let cells: Vec<&str> = cells.collect();
            assert_eq!(cells.len(), names.len() - 1, "row {from}: {line}");
            let row = others
                .zip(cells)
                .map(|(to, cell)| {
                    assert!(cell == "." || cell == "X", "row {from}: {line}");
                    (to.to_string(), cell == ".")
                })
                .collect();
            (from, row)
        })
        .collect()
}

#[test]
fn quickstart_tables_pods_coming_and_going_exec_and_a_clean_down() {
    let dir = example("quickstart");
    let mut manifests = spec::load(&dir).expect("example loads");
    let lab = Lab::up(&dir);

    let udp80 = ContainerPort {
        protocol: Protocol::Udp,
        port: 80,
    };
    for (network, port) in [
        (None, tcp(80)),
        (Some(NET1), tcp(80)),
        (Some(NET1), udp80),
        (Some(NET1), tcp(6379)),
    ] {
        assert_eq!(
            lab.probe(network, port),
            expected(&manifests, network, port),
            "{network:?} {port:?}"
        );
    }

    // The table form of a probe says what the JSON says.
    let table = lab.ok(&["probe", "--network", NET1, "--port", "80"]);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|title| title.contains(NET1)),
        "{table}"
    );
    assert_eq!(
        parsed_table(&table),
        lab.probe(Some(NET1), tcp(80)),
        "{table}"
    );

    // status: every node's agent runs, every pod is on its node with its addresses.
    let status = lab.ok(&["status"]);
    let state = lab.state();
    for node in &state.nodes {
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("node {} ", node.name)))
            .unwrap_or_else(|| panic!("no line for node {}: {status}", node.name));
        assert!(line.contains(": agent pid "), "{line}");
    }
    for manifest in manifests.iter().filter(|m| m.key.kind == "Pod") {
        let pod = spec::pod_spec(manifest).expect("valid pod").pod;
        let record = state.pod(&pod).expect("the pod is in the lab's state");
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("pod {pod} on {}: ", record.node)))
            .unwrap_or_else(|| panic!("no line for pod {pod}: {status}"));
        assert!(
            line.contains("eth0 ") && line.contains(" 10.244."),
            "{line}"
        );
        assert_eq!(
            line.contains(&format!("net1 {NET1} 192.168.1.")),
            attaches(manifest, NET1),
            "{line}"
        );
    }

    // A new pod on net1 serving 80 (no nodeName: the lab schedules it), then web-1 goes.
    let changes = tempfile::tempdir().expect("temp dir");
    let extra = changes.path().join("extra.yaml");
    std::fs::write(
        &extra,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: extra\n  annotations: {k8s.v1.cni.cncf.io/networks: macvlan-conf}\nspec:\n  containers: [{name: c, ports: [{containerPort: 80}]}]\n",
    )
    .expect("manifest written");
    lab.ok(&["apply", "-f", extra.to_str().expect("utf-8")]);
    manifests.extend(spec::load_file(&extra).expect("extra loads"));
    assert_eq!(
        lab.probe(Some(NET1), tcp(80)),
        expected(&manifests, Some(NET1), tcp(80))
    );

    let web1 = changes.path().join("web-1.yaml");
    std::fs::write(
        &web1,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1}\n",
    )
    .expect("written");
    lab.ok(&["delete", "-f", web1.to_str().expect("utf-8")]);
    manifests.retain(|m| !(m.key.kind == "Pod" && m.key.name == "web-1"));
    assert_eq!(
        lab.probe(None, tcp(80)),
        expected(&manifests, None, tcp(80))
    );
    assert!(!Path::new(&format!("/run/netns/nwlab-{}-default-web-1", lab.name)).exists());

    // exec runs in the pod: it sees the pod's own interfaces, and passes the exit code on.
    let addresses = lab.ok(&[
        "exec",
        "default/samplepod",
        "--",
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
    ]);
    for ifname in ["eth0", "net1", "net2"] {
        assert!(addresses.contains(ifname), "{addresses}");
    }
    assert!(
        addresses.contains("10.244.") && addresses.contains("192.168.1."),
        "{addresses}"
    );
    assert_eq!(
        lab.run(&["exec", "samplepod", "--", "false"]).status.code(),
        Some(1)
    );

    let name = lab.name.clone();
    assert!(
        !leftovers(&name).is_empty(),
        "the running lab is visible to leftovers()"
    );
    lab.ok(&["down"]);
    assert_eq!(leftovers(&name), Vec::<String>::new());
}

/// Seed 000 as written, with `lab up --namespace-isolation`: each namespace's samplepod
/// gets net1 from its own namespace's macvlan-conf, and a development pod asking for
/// `privileged/macvlan-conf` is refused for Multus's reason, with nothing attached to it.
#[test]
fn namespace_isolation_refuses_another_namespaces_nad_as_the_seed_shows() {
    let lab = Lab::up_with(&example("namespace-isolation"), &["--namespace-isolation"]);
    for pod in ["privileged/samplepod", "development/samplepod"] {
        let net1 = lab.ok(&["exec", pod, "--", "ip", "-o", "-4", "addr", "show", "net1"]);
        assert!(net1.contains("inet 192.168.1.2"), "{pod}: {net1}");
    }

    let cross = example("namespace-isolation-cross.yaml");
    let out = lab.run(&["apply", "-f", cross.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the cross-namespace pod was admitted"
    );
    for part in [
        "namespace isolation",
        "development",
        "privileged/macvlan-conf",
    ] {
        assert!(stderr.contains(part), "{part:?} missing from: {stderr}");
    }
    let links = lab.ok(&["exec", "development/crosspod", "--", "ip", "-o", "link"]);
    assert_eq!(
        links.lines().count(),
        1,
        "only lo in the refused pod: {links}"
    );
}

/// `lab down` after `lab up` died (SIGKILL) half-way: once its agents run and the first
/// pod's namespace exists, and once the first pod server is up (which it may not have
/// recorded yet). Nothing of the lab is left either way.
#[test]
fn lab_down_after_a_killed_lab_up_leaves_nothing() {
    let dir = example("quickstart");
    for kill_point in [KillPoint::FirstPodNamespace, KillPoint::FirstServerReady] {
        let lab = Lab::named();
        let mut up = lab
            .command(&["up", dir.to_str().expect("utf-8")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lab up starts");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !kill_point.reached(&lab.name) {
            assert!(
                up.try_wait().expect("lab up waits").is_none(),
                "lab up ended before {kill_point:?}"
            );
            assert!(Instant::now() < deadline, "{kill_point:?} not reached");
            std::thread::sleep(Duration::from_millis(5));
        }
        up.kill().expect("SIGKILL to lab up");
        up.wait().expect("lab up reaped");
        assert!(
            !leftovers(&lab.name).is_empty(),
            "{kill_point:?}: the killed lab is visible to leftovers()"
        );
        lab.ok(&["down"]);
        assert_eq!(leftovers(&lab.name), Vec::<String>::new(), "{kill_point:?}");
    }
}

#[derive(Debug, Clone, Copy)]
enum KillPoint {
    FirstPodNamespace,
    FirstServerReady,
}

impl KillPoint {
    fn reached(self, lab: &str) -> bool {
        let (dir, prefix, suffix) = match self {
            Self::FirstPodNamespace => {
                ("/run/netns".to_owned(), format!("nwlab-{lab}-default-"), "")
            }
            Self::FirstServerReady => (
                format!("/run/netwarden-lab/{lab}/pods"),
                String::new(),
                ".ready",
            ),
        };
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.starts_with(&prefix) && name.ends_with(suffix)
            })
    }
}
