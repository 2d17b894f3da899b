//! Privileged: fail closed. With a default-deny policy already in place, a new pod's net1
//! is under attack from the moment its ADD starts: peers on both nodes send it UDP
//! datagrams without pause (they know its address and MAC in advance: the pod asks for
//! both in its networks annotation, and the peers have a permanent neighbour entry for
//! it). Before anyone probes the pod, its kernel must count no datagram delivered, while
//! its net1 saw them arrive. Then the first probe is denied; allowing the peers lets the
//! same datagrams through, which shows the counters would have seen them.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use netwarden_agent::{lab::spec::PodName, netns::run_in};
use netwarden_tests::{
    lab::RunningLab,
    node,
    truth::{udp, Net},
};

const NAD: &str = "default/fixed";
const TARGET: &str = "guarded/target";
const TARGET_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 20);
const TARGET_MAC: &str = "02:00:00:77:00:20";
const PEERS: [(&str, Ipv4Addr); 2] = [
    ("default/peer-1", Ipv4Addr::new(192, 168, 77, 11)),
    ("default/peer-2", Ipv4Addr::new(192, 168, 77, 12)),
];

/// A NAD on one segment whose pods choose their address and MAC (static IPAM), the two
/// peers (one per node), and `guarded`, where every pod is denied all ingress on net1
/// and on the cluster network.
const SCENARIO: &str = r#"
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: fixed, namespace: default}
spec:
  config: '{"cniVersion": "0.4.0", "type": "macvlan", "master": "eth0", "mode": "bridge",
    "capabilities": {"ips": true, "mac": true}, "ipam": {"type": "static"}}'
---
apiVersion: v1
kind: Namespace
metadata: {name: guarded}
---
apiVersion: k8s.cni.cncf.io/v1beta2
kind: MultiNetworkPolicy
metadata:
  name: deny-all
  namespace: guarded
  annotations: {k8s.v1.cni.cncf.io/policy-for: default/fixed}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: guarded}
spec: {podSelector: {}}
---
apiVersion: v1
kind: Pod
metadata:
  name: peer-1
  annotations: {k8s.v1.cni.cncf.io/networks: '[{"name": "fixed", "ips": ["192.168.77.11/24"]}]'}
spec: {nodeName: node-1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: peer-2
  annotations: {k8s.v1.cni.cncf.io/networks: '[{"name": "fixed", "ips": ["192.168.77.12/24"]}]'}
spec: {nodeName: node-2, containers: [{name: c}]}
"#;

/// On node-2, like peer-2 (same node) and unlike peer-1; serves UDP 80 once attached.
const TARGET_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: target
  namespace: guarded
  annotations: {k8s.v1.cni.cncf.io/networks: '[{"name": "fixed", "namespace": "default", "ips": ["192.168.77.20/24"], "mac": "02:00:00:77:00:20"}]'}
spec:
  nodeName: node-2
  containers: [{name: c, ports: [{containerPort: 80, protocol: UDP}]}]
"#;

const ALLOW_PEERS: &str = r#"
apiVersion: k8s.cni.cncf.io/v1beta2
kind: MultiNetworkPolicy
metadata:
  name: from-default
  namespace: guarded
  annotations: {k8s.v1.cni.cncf.io/policy-for: default/fixed}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: default}}}]}]
"#;

/// Datagrams the pod's kernel handed to UDP: /proc/net/snmp inside the pod's namespace.
fn udp_delivered(lab: &RunningLab, pod: &str) -> u64 {
    node::udp_delivered(&lab.ok(&["exec", pod, "--", "cat", "/proc/net/snmp"]))
}

/// Packets that arrived on the pod's net1, before its classifier judged them.
fn received_on_net1(lab: &RunningLab, pod: &str) -> u64 {
    let stats = lab.ok(&[
        "exec",
        pod,
        "--",
        "cat",
        "/sys/class/net/net1/statistics/rx_packets",
    ]);
    stats.trim().parse().expect("a counter")
}

/// Sends datagrams to the target from `peer` until `stop`; counts them in `sent`.
fn hammer(netns: &Path, source: Ipv4Addr, stop: &AtomicBool, sent: &AtomicU64) {
    run_in(netns, || {
        let socket = UdpSocket::bind((source, 0)).expect("bind in the peer");
        let target = SocketAddrV4::new(TARGET_IP, 80);
        while !stop.load(Ordering::Relaxed) {
            if socket.send_to(b"hammer", target).is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    })
    .expect("the peer's namespace exists");
}

#[test]
fn a_new_pods_net1_passes_nothing_between_add_and_the_first_probe() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("scenario.yaml"), SCENARIO).expect("written");
    let lab = RunningLab::up(dir.path());
    let state = lab.state();
    let target_file = dir.path().join("target.yaml.later");
    std::fs::write(&target_file, TARGET_POD).expect("written");

    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (peer, address) in PEERS {
            lab.ok(&[
                "exec",
                peer,
                "--",
                "ip",
                "neigh",
                "replace",
                &TARGET_IP.to_string(),
                "lladdr",
                TARGET_MAC,
                "dev",
                "net1",
                "nud",
                "permanent",
            ]);
            let pod: PodName = peer.parse().expect("a pod name");
            let netns = Path::new("/run/netns").join(&state.pod(&pod).expect("a peer").netns);
            let (stop, sent) = (&stop, &sent);
            scope.spawn(move || hammer(&netns, address, stop, sent));
        }
        // The hammering has begun before the ADD and goes on past it.
        while sent.load(Ordering::Relaxed) < 100 {
            std::thread::sleep(Duration::from_millis(1));
        }
        lab.apply(&target_file);
        let after_add = sent.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        println!(
            "{after_add} datagrams sent before the ADD returned, {} in all, in {:.1?}",
            sent.load(Ordering::Relaxed),
            started.elapsed()
        );
    });

    let arrived = received_on_net1(&lab, TARGET);
    let delivered = udp_delivered(&lab, TARGET);
    println!("the target's net1 received {arrived} packets; its UDP saw {delivered}");
    assert_eq!(delivered, 0, "datagrams got through before the first probe");
    assert!(
        arrived >= 100,
        "the hammering reached net1 ({arrived} packets)"
    );

    let net1 = Net::Nad(NAD);
    let denied = lab.probe(net1.probe_arg(), udp(80));
    for (peer, _) in PEERS {
        assert!(!denied[peer][TARGET], "first probe, {peer} -> target");
    }
    let allow = dir.path().join("allow.yaml");
    std::fs::write(&allow, ALLOW_PEERS).expect("written");
    lab.apply(&allow);
    let deadline = Instant::now() + Duration::from_secs(30);
    while PEERS
        .iter()
        .any(|(peer, _)| !lab.probe(net1.probe_arg(), udp(80))[*peer][TARGET])
    {
        assert!(
            Instant::now() < deadline,
            "allowing the peers lets them through"
        );
    }
    assert!(
        udp_delivered(&lab, TARGET) > 0,
        "allowed datagrams are counted, so the zero above was not for want of counting"
    );
}
