//! Privileged: the real `netwarden-cni` binary, executed the way a container runtime does
//! (CNI_* environment, the netwarden network config on stdin, JSON on stdout, exit status),
//! talks over a real unix socket to a real `netwarden agent` process, which runs the
//! reference plugins in /usr/lib/cni. Cluster state is a directory of manifests (pods,
//! namespaces, NADs) that the agent watches and writes network-status back into, on a node
//! made by [`netwarden_tests::node`] (see there for the binaries these tests need built).
use std::{
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use netwarden_agent::lab::topology;
use netwarden_tests::node::{binary, run_plugin, Lab, Pod, NODE, PLUGINS};
use serde_json::{json, Value};

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

/// A delegate that reports success and an interface it never made (`nw-ghost`, a script in
/// a plugin directory of this test's own): eth0 and its address are real, net1 cannot be
/// enforced on, so the ADD fails naming it and is rolled back whole.
#[test]
fn an_interface_that_cannot_be_enforced_on_fails_the_add_and_rolls_it_back() {
    let mut lab = Lab::new("att-unenf");
    let plugins = tempfile::tempdir().expect("temp dir");
    let ghost = plugins.path().join("nw-ghost");
    std::fs::write(
        &ghost,
        "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\n\
         printf '{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"%s\",\"sandbox\":\"%s\"}],\
         \"ips\":[{\"address\":\"192.0.2.9/24\",\"interface\":0}]}' \"$CNI_IFNAME\" \"$CNI_NETNS\"\n",
    )
    .expect("plugin written");
    std::fs::set_permissions(&ghost, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("plugin executable");
    lab.add_nad(
        "default",
        "ghost-conf",
        &json!({"cniVersion": "1.0.0", "name": "ghost", "type": "nw-ghost"}),
    );
    let dir = plugins.path().to_owned();
    lab.reconfigure(|config| config["binDirs"] = json!([dir, PLUGINS]));
    let pod = lab.pod("default", "ghost-conf");
    let (code, error) = lab.cni("ADD", &pod);
    assert_ne!(code, 0, "{error}");
    let msg = error["msg"].as_str().expect("CNI error msg");
    assert!(
        msg.contains(&format!("default/{}", pod.name))
            && msg.contains("enforcing policy on the new interfaces")
            && msg.contains("no interface net1")
            && msg.contains("every network was deleted again"),
        "{msg}"
    );
    assert!(pod.interfaces().is_empty(), "{:?}", pod.interfaces());
    assert!(lab.allocations().is_empty(), "{:?}", lab.allocations());
    assert!(!cached(&lab, &pod), "the sandbox's cache record is gone");
    assert_eq!(
        lab.pins().attached_endpoints().unwrap(),
        Vec::new(),
        "nothing stays attached"
    );
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
    // The binary could not touch the datapath: the agent, back, forgets what the
    // sandbox had there.
    lab.start_agent();
    assert_eq!(lab.pins().recorded_endpoints().expect("pins"), []);
    assert_eq!(lab.metric("netwarden_map_entries{map=\"ENDPOINTS\"}"), 0.0);
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
    let (code, error) = run_plugin(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(binary("netwarden-cni"))
            .env_clear()
            .env("CNI_COMMAND", "STATUS"),
        &config,
    );
    assert_eq!(code, 1);
    assert!(
        error["msg"].as_str().unwrap_or("").contains("only root"),
        "{error}"
    );
}

/// `netwarden-cni` with `config` on stdin and only CNI_COMMAND and CNI_PATH set, as a
/// runtime runs GC (no container, namespace or interface).
fn gc(config: &Value) -> (i32, Value) {
    run_plugin(
        Command::new(binary("netwarden-cni"))
            .env_clear()
            .env("CNI_COMMAND", "GC")
            .env("CNI_PATH", PLUGINS),
        config,
    )
}

/// What a reboot does to a sandbox: its network namespace, and every interface in it, is
/// gone; the cache, on disk, stays.
fn lose_namespace(pod: &Pod) {
    topology::ip(&["netns", "delete", pod.netns.name()]).expect("sandbox namespace deleted");
}

fn cached(lab: &Lab, pod: &Pod) -> bool {
    lab.path("cache")
        .join(format!("{}.json", pod.container_id))
        .exists()
}

#[test]
fn gc_deletes_every_attachment_the_runtime_no_longer_lists_through_every_delegate() {
    let mut lab = Lab::new("att-gc");
    let kept = lab.pod("default", "macvlan-conf");
    assert_eq!(lab.cni("ADD", &kept).0, 0);
    let kept_addresses = lab.allocations();
    let kept_endpoints = lab.metric("netwarden_endpoints");
    // Three delegates: the cluster network, macvlan-conf and wide-conf.
    let stale = lab.pod("default", "macvlan-conf,wide-conf");
    assert_eq!(lab.cni("ADD", &stale).0, 0);
    assert_eq!(lab.allocations().len(), kept_addresses.len() + 3);
    // The runtime lost the sandbox (a crash): GC is how it tells the plugins.
    lose_namespace(&stale);

    let config = json!({"cniVersion": "1.1.0", "name": "netwarden", "type": "netwarden-cni",
                        "socket": lab.socket(),
                        "cni.dev/valid-attachments": [
                            {"containerID": kept.container_id, "ifname": "eth0"}]});
    assert_eq!(gc(&config), (0, Value::Null));

    let mut left = lab.allocations();
    left.sort();
    let mut kept_sorted = kept_addresses.clone();
    kept_sorted.sort();
    assert_eq!(
        left, kept_sorted,
        "every delegate of the stale sandbox released"
    );
    assert!(!cached(&lab, &stale));
    assert!(cached(&lab, &kept));
    assert_eq!(
        lab.metric("netwarden_endpoints"),
        kept_endpoints,
        "the stale sandbox's interfaces are no longer enforced on"
    );
    // The listed sandbox is untouched.
    assert_eq!(kept.ipv4("net1").map(|a| a.len()), Some(1));
    assert_eq!(lab.cni("CHECK", &kept).0, 0);
    assert_eq!(lab.cni("DEL", &kept), (0, Value::Null));
    assert!(lab.allocations().is_empty(), "{:?}", lab.allocations());
}

#[test]
fn a_full_queue_refuses_at_once_with_agent_busy_and_the_admitted_adds_complete() {
    let mut lab = Lab::new("att-busy");
    lab.reconfigure(|config| {
        config["maxConcurrent"] = 1.into();
        config["maxQueued"] = 1.into();
    });

    // Two ADDs for pods the cluster state does not have yet: admitted, they wait for them.
    let late: Vec<Pod> = (0..2)
        .map(|i| lab.sandbox("default", format!("late{i}")))
        .collect();
    let third = lab.pod("default", "macvlan-conf");
    std::thread::scope(|scope| {
        let lab = &lab;
        let adds: Vec<_> = late
            .iter()
            .map(|pod| scope.spawn(move || lab.cni("ADD", pod)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while lab.metric("netwarden_attach_admitted") < 2.0 {
            assert!(
                Instant::now() < deadline,
                "the two ADDs were never admitted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        // A third finds the queue full: a CNI error the runtime retries on, at once.
        let (code, error) = lab.cni("ADD", &third);
        assert_eq!(code, 1, "{error}");
        assert_eq!(error["code"], 11, "try again later: {error}");
        let msg = error["msg"].as_str().unwrap_or("");
        assert!(msg.contains("agent busy") && msg.contains("retry"), "{msg}");
        assert!(third.interfaces().is_empty(), "{:?}", third.interfaces());

        for pod in &late {
            lab.write_manifest(
                &format!("pod-default-{}", pod.name),
                &json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": pod.name, "namespace": "default",
                                     "uid": format!("uid-{}", pod.name),
                                     "annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan-conf"}},
                        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "pause"}]}}),
            );
        }
        for (pod, add) in late.iter().zip(adds) {
            let (code, out) = add.join().expect("ADD thread");
            assert_eq!(code, 0, "{}: {out}", pod.name);
        }
    });
    // Retried once the burst is over, the refused ADD goes through.
    assert_eq!(lab.cni("ADD", &third).0, 0);
    for pod in late.iter().chain([&third]) {
        assert_eq!(pod.ipv4("net1").map(|a| a.len()), Some(1), "{}", pod.name);
        assert_eq!(lab.cni("DEL", pod), (0, Value::Null));
    }
    assert!(lab.allocations().is_empty(), "{:?}", lab.allocations());
}

#[test]
fn del_after_a_reboot_reaches_every_delegate_though_the_sandboxes_are_gone() {
    let mut lab = Lab::new("att-boot");
    let early = lab.pod("default", "macvlan-conf");
    let late = lab.pod("default", "macvlan-conf,wide-conf");
    for pod in [&early, &late] {
        assert_eq!(lab.cni("ADD", pod).0, 0);
    }
    lab.stop_agent();
    lose_namespace(&early);
    lose_namespace(&late);

    // The runtime's DEL may come before the agent is back: the binary does it.
    assert_eq!(lab.cni("DEL", &early), (0, Value::Null));
    assert!(!cached(&lab, &early));
    assert_eq!(lab.allocations().len(), 3, "{:?}", lab.allocations());
    // Or after: the agent does it, from the same cache.
    lab.start_agent();
    assert_eq!(lab.cni("DEL", &late), (0, Value::Null));
    assert!(!cached(&lab, &late));
    assert!(lab.allocations().is_empty(), "{:?}", lab.allocations());
    assert_eq!(lab.metric("netwarden_endpoints"), 0.0);
    assert_eq!(
        lab.cni("DEL", &late),
        (0, Value::Null),
        "a repeated DEL fails"
    );
}
