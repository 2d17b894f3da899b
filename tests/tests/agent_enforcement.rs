//! Privileged: a real `netwarden agent` on a directory of manifests, pods created through
//! the real `netwarden-cni` binary with the seed macvlan NAD on net1 (macvlan bridge mode
//! over one node's `eth0`, so pods on it talk to each other), and real TCP between their
//! net1 addresses. MultiNetworkPolicies and labels change in the manifests while it runs.
//! The node is [`netwarden_tests::node`]'s (see there for the binaries these tests need).

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::Path,
    process::{Child, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use aya::programs::links::{FdLink, PinnedLink};
use netwarden_agent::{lab::topology::NetNamespace, netns};
use netwarden_cni::status::NETWORK_STATUS_ANNOTATION;
use netwarden_common::PeerKey;
use netwarden_tests::{
    greeting::{connects, connects_from, Server, PORT},
    hooks::{hooked, Hooked},
    node::{Lab, Pod},
    tamper::PinnedTables,
    wait::eventually,
};
use serde_json::{json, Value};

const NAD: &str = "default/macvlan-conf";

fn net1(pod: &Pod) -> Ipv4Addr {
    pod.ipv4("net1").expect("net1 exists")[0]
}

/// `netwarden flows` against the agent, its lines delivered as they come; killed on drop.
struct Flows {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Flows {
    fn start(lab: &Lab) -> Self {
        let mut child = lab
            .netwarden(&["flows"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("netwarden flows starts");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The first line containing every one of `needles`, within `limit`.
    fn find(&self, needles: &[&str], limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Flows {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn explain(lab: &Lab, from: &Pod, to: &Pod) -> String {
    let out = lab
        .netwarden(&[
            "explain",
            "--from",
            &format!("default/{}", from.name),
            "--to",
            &format!("default/{}", to.name),
            "--network",
            NAD,
            "--port",
            &PORT.to_string(),
            "--protocol",
            "TCP",
        ])
        .output()
        .expect("netwarden explain runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn deny_ingress_to_servers() -> Value {
    json!({"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"]})
}

fn allow_ingress_from(labels: Value) -> Value {
    json!({"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
           "ingress": [{"from": [{"podSelector": {"matchLabels": labels}}]}]})
}

/// The kernel ids of the links pinned in `dir`.
fn pinned_link_ids(dir: &Path) -> BTreeSet<u32> {
    std::fs::read_dir(dir)
        .expect("links dir")
        .filter_map(|entry| PinnedLink::from_pin(entry.expect("entry").path()).ok())
        .map(|link| FdLink::from(link).info().expect("link info").id())
        .collect()
}

/// Creates a pod through CNI ADD; asserts it succeeded.
fn add_pod(lab: &mut Lab, labels: Value) -> Pod {
    let pod = lab.pod_labelled("default", "macvlan-conf", &labels);
    let (code, result) = lab.cni("ADD", &pod);
    assert_eq!(code, 0, "{result}");
    pod
}

#[test]
fn policy_and_label_changes_reach_the_kernel_and_can_be_explained_and_watched() {
    let mut lab = Lab::new("ag-policy");
    let server = add_pod(&mut lab, json!({"app": "server"}));
    let client = add_pod(&mut lab, json!({"role": "other"}));
    let _serving = Server::start(&server);
    let to = net1(&server);
    assert!(
        eventually(Duration::from_secs(3), || connects(&client, to)),
        "no policy, yet no connection"
    );
    let flows = Flows::start(&lab);

    lab.multi_network_policy("default", "servers", NAD, &deny_ingress_to_servers());
    assert!(
        eventually(Duration::from_secs(2), || !connects(&client, to)),
        "default deny did not take effect"
    );
    assert!(!connects(&client, to), "denied only once");
    let denied = flows.find(
        &[&format!("default/{}/net1", server.name), "ingress DENY"],
        Duration::from_secs(3),
    );
    assert!(
        denied.as_ref().is_some_and(|l| l.contains(&to.to_string())),
        "no deny event: {denied:?}"
    );
    let why = explain(&lab, &client, &server);
    assert!(
        why.contains("DENIED") && why.contains("default/servers"),
        "{why}"
    );

    lab.multi_network_policy(
        "default",
        "servers",
        NAD,
        &allow_ingress_from(json!({"role": "frontend"})),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !connects(&client, to),
        "allowed a pod the rule does not select"
    );
    lab.set_labels(&client, &json!({"role": "frontend"}));
    assert!(
        eventually(Duration::from_secs(2), || connects(&client, to)),
        "the client's new label did not admit it"
    );
    let why = explain(&lab, &client, &server);
    assert!(
        why.contains("ALLOWED") && why.contains("default/servers ingress rule 0"),
        "{why}"
    );

    assert_eq!(lab.http_get("/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(lab.http_get("/healthz"), (200, "ok\n".to_owned()));
    // `logFormat: json`: every line an object with a level and its fields.
    let log = std::fs::read_to_string(lab.agent_log()).expect("agent log");
    assert!(log.lines().count() > 1, "{log}");
    for line in log.lines() {
        let record: Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(
            record["level"].is_string() && record["fields"].is_object(),
            "{line}"
        );
    }
    let (status, metrics) = lab.http_get("/metrics");
    assert_eq!(status, 200);
    for expected in [
        "netwarden_endpoints 2",
        "netwarden_attach_seconds_count 2",
        "netwarden_policy_update_seconds_count",
        "netwarden_map_entries{map=\"ENDPOINTS\"} 2",
        "netwarden_events_suppressed",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
    let denied_packets: i64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("netwarden_verdict_packets")
                && l.contains("direction=\"ingress\"")
                && l.contains("verdict=\"deny\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("ingress deny counter");
    assert!(denied_packets > 0, "{metrics}");
}

#[test]
fn enforcement_holds_while_the_agent_is_down_and_a_restarted_agent_adopts() {
    let mut lab = Lab::new("ag-restart");
    let server = add_pod(&mut lab, json!({"app": "server"}));
    let client = add_pod(&mut lab, json!({"role": "client"}));
    let _serving = Server::start(&server);
    let to = net1(&server);
    lab.multi_network_policy("default", "servers", NAD, &deny_ingress_to_servers());
    assert!(eventually(Duration::from_secs(2), || !connects(
        &client, to
    )));
    assert_eq!(hooked(&server.netns, "net1"), Hooked::tcx());

    lab.stop_agent();
    for _ in 0..3 {
        assert!(!connects(&client, to), "enforcement stopped with the agent");
    }
    lab.start_agent();
    assert_eq!(
        hooked(&server.netns, "net1"),
        Hooked::tcx(),
        "attached twice"
    );
    assert!(!connects(&client, to), "the restart opened a window");

    lab.multi_network_policy(
        "default",
        "servers",
        NAD,
        &allow_ingress_from(json!({"role": "client"})),
    );
    assert!(
        eventually(Duration::from_secs(2), || connects(&client, to)),
        "the restarted agent did not apply the change"
    );
    assert_eq!(hooked(&server.netns, "net1"), Hooked::tcx());
    assert_eq!(lab.cni("DEL", &server).0, 0);
    assert_eq!(lab.cni("DEL", &client).0, 0);
    let (_, metrics) = lab.http_get("/metrics");
    assert!(metrics.contains("netwarden_endpoints 0"), "{metrics}");
}

#[test]
fn a_new_pods_net1_never_admits_a_denied_peer_right_after_add() {
    let mut lab = Lab::new("ag-closed");
    lab.multi_network_policy("default", "servers", NAD, &deny_ingress_to_servers());
    let client = add_pod(&mut lab, json!({"role": "client"}));
    let own = net1(&client);
    // The client tries every address of the seed range, from before the server exists
    // until well after its ADD returned.
    let stop = Arc::new(AtomicBool::new(false));
    let reached = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicUsize::new(0));
    let hammer = {
        let (stop, reached, attempts) = (stop.clone(), reached.clone(), attempts.clone());
        let netns = client.netns.path();
        std::thread::spawn(move || {
            netns::run_in(&netns, || {
                while !stop.load(Ordering::Relaxed) {
                    for last in 200..=216 {
                        let to = Ipv4Addr::new(192, 168, 1, last);
                        if to == own {
                            continue;
                        }
                        let address = SocketAddr::from((to, PORT));
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let timeout = Duration::from_millis(20);
                        if TcpStream::connect_timeout(&address, timeout).is_ok() {
                            reached.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
            .expect("client namespace");
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let server = add_pod(&mut lab, json!({"app": "server"}));
    // As a runtime does: the container (here the server) starts once ADD has returned.
    let _serving = Server::start(&server);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    hammer.join().expect("client thread");
    assert!(
        attempts.load(Ordering::Relaxed) > 50,
        "the client hardly tried"
    );
    assert_eq!(
        reached.load(Ordering::Relaxed),
        0,
        "a denied peer reached the new pod"
    );
    // The same client does get through once a policy admits it.
    lab.multi_network_policy(
        "default",
        "servers",
        NAD,
        &allow_ingress_from(json!({"role": "client"})),
    );
    let to = net1(&server);
    assert!((200..=216).contains(&to.octets()[3]), "{to} was not tried");
    assert!(eventually(Duration::from_secs(2), || connects(&client, to)));
}

#[test]
fn the_reconcile_reattaches_a_pod_interface_whose_links_were_removed() {
    let mut lab = Lab::new("ag-drift");
    let server = add_pod(&mut lab, json!({"app": "server"}));
    let client = add_pod(&mut lab, json!({"role": "client"}));
    let _serving = Server::start(&server);
    let to = net1(&server);
    lab.multi_network_policy("default", "servers", NAD, &deny_ingress_to_servers());
    assert!(eventually(Duration::from_secs(2), || !connects(
        &client, to
    )));

    // Drift: someone removes the pinned links (which detaches the programs). The reconcile
    // may re-attach before a poll could see the hooks empty, so the proof of repair is
    // new kernel links in place of the removed ones, not a transient state.
    let links = lab.pins().path().join("links");
    let removed = pinned_link_ids(&links);
    assert_eq!(
        removed.len(),
        4,
        "not every pod's net1 had its two links pinned"
    );
    for link in std::fs::read_dir(&links).expect("links dir") {
        std::fs::remove_file(link.expect("entry").path()).expect("link unpinned");
    }
    assert!(
        eventually(Duration::from_secs(5), || {
            let now = pinned_link_ids(&links);
            now.len() == removed.len()
                && now.is_disjoint(&removed)
                && hooked(&server.netns, "net1") == Hooked::tcx()
        }),
        "the reconcile did not attach again: pinned {:?} (removed {removed:?}), hooks {:?}",
        pinned_link_ids(&links),
        hooked(&server.netns, "net1")
    );
    assert!(!connects(&client, to), "re-attached without its tables");

    // No policy lists the network any more: the interface stays attached, open.
    lab.remove_manifest("mnp-default-servers");
    assert!(
        eventually(Duration::from_secs(2), || connects(&client, to)),
        "deleting the policy did not open the interface"
    );
    assert_eq!(hooked(&server.netns, "net1"), Hooked::tcx());
}

/// A networking.k8s.io/v1 NetworkPolicy covers net1 exactly while the agent's
/// `standardPolicyNetworks` lists the network: one policy language for every interface.
#[test]
fn a_network_policy_covers_net1_only_while_the_network_is_listed() {
    let mut lab = Lab::new("ag-std");
    let server = add_pod(&mut lab, json!({"app": "server"}));
    let client = add_pod(&mut lab, json!({"role": "other"}));
    let _serving = Server::start(&server);
    let to = net1(&server);
    lab.write_manifest(
        "np-default-servers",
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "servers", "namespace": "default"},
                "spec": deny_ingress_to_servers()}),
    );
    lab.reconfigure(|config| config["standardPolicyNetworks"] = json!([NAD]));
    assert!(
        eventually(Duration::from_secs(3), || !connects(&client, to)),
        "the NetworkPolicy did not isolate net1 with the network listed"
    );
    lab.reconfigure(|config| config["standardPolicyNetworks"] = json!([]));
    assert!(
        eventually(Duration::from_secs(3), || connects(&client, to)),
        "the NetworkPolicy still covers net1 with the network no longer listed"
    );
}

/// Another process with access to bpffs changes an isolated pod's tables: it admits a
/// denied client, then deletes the allowed client's entry. The reconcile finds both and
/// rewrites the tables from the policy.
#[test]
fn the_reconcile_rewrites_tables_changed_behind_its_back() {
    let mut lab = Lab::new("ag-tamper");
    let server = add_pod(&mut lab, json!({"app": "server"}));
    let allowed = add_pod(&mut lab, json!({"role": "client"}));
    let denied = add_pod(&mut lab, json!({"role": "other"}));
    let _serving = Server::start(&server);
    let to = net1(&server);
    lab.multi_network_policy(
        "default",
        "servers",
        NAD,
        &allow_ingress_from(json!({"role": "client"})),
    );
    // Applied once the other client is refused (the server was open before).
    assert!(eventually(Duration::from_secs(2), || !connects(
        &denied, to
    )));
    assert!(connects(&allowed, to));

    let tables = PinnedTables::new(lab.pins());
    let host = |pod: &Pod| net1(pod).to_ipv6_mapped().octets();
    let entries_for = |pod: &Pod| {
        tables
            .peer_host_entries()
            .into_iter()
            .filter(|(key, _)| key.addr == host(pod))
            .collect::<Vec<_>>()
    };
    let [(key, value)] = entries_for(&allowed)[..] else {
        panic!("the allowed client has not exactly one entry");
    };
    tables
        .peer_hosts()
        .insert(
            PeerKey {
                addr: host(&denied),
                ..key
            },
            value,
            0,
        )
        .expect("entry added");
    assert!(
        eventually(Duration::from_secs(4), || entries_for(&denied).is_empty()),
        "the reconcile kept an entry the policy does not give"
    );
    assert!(!connects(&denied, to));
    assert!(connects(&allowed, to));

    let [(key, _)] = entries_for(&allowed)[..] else {
        panic!("the allowed client has not exactly one entry");
    };
    tables.peer_hosts().remove(&key).expect("entry removed");
    assert!(
        eventually(Duration::from_secs(4), || entries_for(&allowed).len() == 1),
        "the reconcile did not restore the allowed client's entry"
    );
    assert!(eventually(Duration::from_secs(2), || connects(
        &allowed, to
    )));
    assert!(!connects(&denied, to));
}

/// A peer on another node is known only by the network-status its own agent writes: until
/// its pod carries one, its address matches no rule and an isolated pod denies it; once
/// the status appears it is admitted, and when the pod goes it is denied again. The peer
/// is a namespace of this test's on net1's segment (macvlan over the node's eth0) at an
/// address outside the NAD's range, and its pod is scheduled on `node-b`.
#[test]
fn a_peer_on_another_node_is_denied_until_its_network_status_names_it() {
    let mut lab = Lab::new("ag-remote");
    let server = add_pod(&mut lab, json!({"app": "server"}));
    let friend = add_pod(&mut lab, json!({"app": "client"}));
    let _serving = Server::start(&server);
    let to = net1(&server);

    let remote = NetNamespace::create("ag-remote-peer").expect("peer namespace");
    for argv in [
        &[
            "ip", "link", "add", "link", "eth0", "name", "nwpeer0", "type", "macvlan", "mode",
            "bridge",
        ][..],
        &["ip", "link", "set", "nwpeer0", "netns", remote.name()],
    ] {
        lab.node.exec(argv).expect("peer link");
    }
    for argv in [
        &["ip", "addr", "add", "192.168.1.250/24", "dev", "nwpeer0"][..],
        &["ip", "link", "set", "nwpeer0", "up"],
    ] {
        remote.exec(argv).expect("peer address");
    }
    assert!(
        eventually(Duration::from_secs(3), || connects_from(&remote.path(), to)),
        "no policy, yet the peer does not connect"
    );

    let pod = |status: Option<Value>| {
        let mut annotations = json!({"k8s.v1.cni.cncf.io/networks": "macvlan-conf"});
        if let Some(status) = status {
            annotations[NETWORK_STATUS_ANNOTATION] = status.to_string().into();
        }
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "remote", "namespace": "default", "uid": "uid-remote",
                            "labels": {"app": "client"}, "annotations": annotations},
               "spec": {"nodeName": "node-b", "containers": [{"name": "c", "image": "pause"}]}})
    };
    lab.write_manifest("pod-default-remote", &pod(None));
    lab.multi_network_policy(
        "default",
        "servers",
        NAD,
        &allow_ingress_from(json!({"app": "client"})),
    );
    assert!(
        eventually(Duration::from_secs(3), || !connects_from(
            &remote.path(),
            to
        )),
        "a peer whose addresses are unknown was admitted"
    );
    assert!(connects(&friend, to), "the local client is admitted");
    assert!(!connects_from(&remote.path(), to), "denied only once");

    let status = json!([
        {"name": "cluster-net", "interface": "eth0", "ips": ["10.244.2.9"], "default": true},
        {"name": NAD, "interface": "net1", "ips": ["192.168.1.250"]}
    ]);
    lab.write_manifest("pod-default-remote", &pod(Some(status)));
    assert!(
        eventually(Duration::from_secs(3), || connects_from(&remote.path(), to)),
        "the peer was not admitted once its network-status named its address"
    );

    lab.remove_manifest("pod-default-remote");
    assert!(
        eventually(Duration::from_secs(3), || !connects_from(
            &remote.path(),
            to
        )),
        "the peer stayed admitted after its pod was deleted"
    );
    assert!(connects(&friend, to), "the local client is still admitted");
}
