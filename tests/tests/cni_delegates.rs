//! Privileged: the attach library drives the real reference CNI plugins (Debian's
//! containernetworking-plugins in /usr/lib/cni) between a "node" namespace, whose
//! `eth0` is the macvlan master, and a "pod" namespace. Plugins run from a thread that
//! joined the node namespace, as they would on a node; host-local keeps its allocations in
//! a per-test directory.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use netwarden_agent::{lab::topology::NetNamespace, netns::run_in};
use netwarden_cni::{
    cache::{Cache, SandboxRecord},
    exec::PluginRunner,
    plan::{self, ClusterNetwork, PlanContext},
    protocol::{CniArgs, Command, ConfList, ContainerId, Request},
    resolve::{DeviceAllocations, Isolation, NadSpec},
    sandbox::{self, SandboxError, SandboxSpec},
    selection::NETWORKS_ANNOTATION,
    status::build_network_status,
    NetworkRef,
};
use serde_json::{json, Value};

const PLUGINS: &str = "/usr/lib/cni";

/// The seed's macvlan NAD (Multus quickstart), with the node's master and this test's
/// host-local directory.
fn macvlan_conf(data_dir: &Path) -> Value {
    json!({
        "cniVersion": "0.3.0",
        "type": "macvlan",
        "master": "eth0",
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "subnet": "192.168.1.0/24",
            "rangeStart": "192.168.1.200",
            "rangeEnd": "192.168.1.216",
            "routes": [{ "dst": "0.0.0.0/0" }],
            "gateway": "192.168.1.1",
            "dataDir": data_dir,
        }
    })
}

/// A node, a pod, a cache and the NADs the "cluster" holds.
struct Lab {
    node: NetNamespace,
    pod: NetNamespace,
    dir: tempfile::TempDir,
    nads: BTreeMap<NetworkRef, NadSpec>,
    container_id: ContainerId,
}

impl Lab {
    fn new(prefix: &str) -> anyhow::Result<Self> {
        let node = NetNamespace::create(&format!("{prefix}-n"))?;
        // The kernel here has no dummy driver; a veth pair kept inside the node serves as
        // the uplink whose `eth0` end is the macvlan master.
        node.exec(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "uplink0",
        ])?;
        node.exec(&["ip", "link", "set", "eth0", "up"])?;
        node.exec(&["ip", "link", "set", "uplink0", "up"])?;
        let pod = NetNamespace::create(&format!("{prefix}-p"))?;
        let container_id = pod.name().replace("nw-", "c").parse()?;
        Ok(Self {
            node,
            pod,
            dir: tempfile::tempdir()?,
            nads: BTreeMap::new(),
            container_id,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("host-local")
    }

    fn cache(&self) -> Cache {
        Cache::new(self.dir.path().join("cache"))
    }

    fn runner() -> PluginRunner {
        PluginRunner::new(vec![PathBuf::from(PLUGINS)], Duration::from_secs(20))
    }

    fn add_nad(&mut self, reference: &str, config: Value) {
        let network: NetworkRef = reference.parse().expect("test NAD reference");
        self.nads.insert(
            network.clone(),
            NadSpec {
                network,
                config: config.to_string(),
                annotations: BTreeMap::new(),
            },
        );
    }

    /// The cluster network: ptp with host-local, as eth0.
    fn cluster(&self) -> ClusterNetwork {
        let config = json!({
            "cniVersion": "1.0.0",
            "name": "cluster-net",
            "type": "ptp",
            "ipam": {"type": "host-local", "subnet": "10.244.1.0/24", "dataDir": self.data_dir(),
                     "routes": [{"dst": "0.0.0.0/0"}]}
        });
        ClusterNetwork {
            config: ConfList::parse(&config.to_string(), None).expect("cluster config"),
            ifname: "eth0".parse().expect("eth0"),
        }
    }

    fn args(&self) -> CniArgs {
        CniArgs::parse(&format!(
            "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=samplepod;K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=uid-1",
            self.container_id
        ))
        .expect("CNI_ARGS")
    }

    /// ADD for a pod in `namespace` annotated `k8s.v1.cni.cncf.io/networks: annotation`.
    fn add(&self, namespace: &str, annotation: &str) -> anyhow::Result<SandboxRecord> {
        let nads = |network: &NetworkRef| self.nads.get(network).cloned();
        let isolation = Isolation::new(true, None);
        let context = PlanContext {
            nads: &nads,
            isolation: &isolation,
            config_dir: self.dir.path(),
        };
        let annotations = BTreeMap::from([(NETWORKS_ANNOTATION.to_owned(), annotation.to_owned())]);
        let attachments = plan::plan(
            namespace,
            &annotations,
            &self.cluster(),
            &context,
            &mut DeviceAllocations::default(),
        )?;
        let spec = SandboxSpec {
            container_id: self.container_id.clone(),
            netns: self.pod.path(),
            args: self.args(),
            cni_path: vec![PLUGINS.into()],
        };
        let cache = self.cache();
        Ok(run_in(&self.node.path(), || {
            sandbox::add(&Self::runner(), &cache, &spec, attachments)
        })??)
    }

    /// DEL the way `netwarden-cni` does it when the agent is down: from the cache only.
    fn delete_from_cache(&self) -> Result<(), SandboxError> {
        let request = Request {
            command: Command::Del,
            container_id: Some(self.container_id.clone()),
            netns: Some(self.pod.path()),
            ifname: Some("eth0".parse().expect("eth0")),
            args: self.args(),
            path: vec![PLUGINS.into()],
        };
        let cache_dir = self.cache().dir().to_owned();
        run_in(&self.node.path(), || {
            sandbox::delete_from_cache(&request, &cache_dir, &[PLUGINS.into()])
        })
        .expect("enter the node namespace")
    }

    /// `ip -j addr show` of `ifname` in the pod, or None when it does not exist.
    fn pod_link(&self, ifname: &str) -> Option<Value> {
        let out = self
            .pod
            .exec(&["ip", "-j", "addr", "show", "dev", ifname])
            .ok()?;
        let links: Value = serde_json::from_slice(&out.stdout).ok()?;
        links.get(0).cloned()
    }

    fn pod_ipv4(&self, ifname: &str) -> Vec<Ipv4Addr> {
        self.pod_link(ifname)
            .and_then(|l| l.get("addr_info").cloned())
            .and_then(|a| a.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|a| a["family"] == "inet")
            .filter_map(|a| a["local"].as_str()?.parse().ok())
            .collect()
    }

    /// The addresses host-local holds for `network` right now.
    fn allocations(&self, network: &str) -> Vec<IpAddr> {
        std::fs::read_dir(self.data_dir().join(network))
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn in_seed_range(ip: Ipv4Addr) -> bool {
    let [a, b, c, d] = ip.octets();
    (a, b, c) == (192, 168, 1) && (200..=216).contains(&d)
}

#[test]
fn seed_macvlan_nad_gives_eth0_and_net1_in_range_and_del_releases_everything() -> anyhow::Result<()>
{
    let mut lab = Lab::new("cni-seed")?;
    lab.add_nad("default/macvlan-conf", macvlan_conf(&lab.data_dir()));

    let record = lab.add("default", "macvlan-conf")?;

    let net1 = lab.pod_ipv4("net1");
    assert_eq!(net1.len(), 1, "net1 addresses: {net1:?}");
    assert!(in_seed_range(net1[0]), "{} is outside .200-.216", net1[0]);
    assert_eq!(
        lab.pod_ipv4("eth0").len(),
        1,
        "cluster network eth0 missing"
    );
    assert_eq!(lab.allocations("macvlan-conf"), [IpAddr::V4(net1[0])]);

    let status = serde_json::to_value(build_network_status(&record.attachments))?;
    let mac = lab.pod_link("net1").expect("net1")["address"].clone();
    let eth0_ip = lab.pod_ipv4("eth0")[0].to_string();
    let eth0_mac = lab.pod_link("eth0").expect("eth0")["address"].clone();
    assert_eq!(
        status,
        json!([
            {"name": "cluster-net", "interface": "eth0", "ips": [eth0_ip], "mac": eth0_mac, "default": true, "dns": {}},
            {"name": "default/macvlan-conf", "interface": "net1", "ips": [net1[0].to_string()], "mac": mac, "dns": {}}
        ])
    );
    assert!(
        lab.cache().read(&lab.container_id)?.is_some(),
        "no cache after ADD"
    );

    lab.delete_from_cache()?;
    assert!(lab.pod_link("net1").is_none(), "net1 survived DEL");
    assert!(lab.pod_link("eth0").is_none(), "eth0 survived DEL");
    assert!(
        lab.allocations("macvlan-conf").is_empty(),
        "host-local leaked"
    );
    assert!(
        lab.allocations("cluster-net").is_empty(),
        "host-local leaked"
    );
    assert!(
        lab.cache().read(&lab.container_id)?.is_none(),
        "cache kept after a clean DEL"
    );
    Ok(())
}

#[test]
fn the_same_network_twice_gives_net1_and_net2() -> anyhow::Result<()> {
    let mut lab = Lab::new("cni-twice")?;
    lab.add_nad("default/macvlan-conf", macvlan_conf(&lab.data_dir()));
    lab.add("default", "macvlan-conf,macvlan-conf")?;
    let (net1, net2) = (lab.pod_ipv4("net1"), lab.pod_ipv4("net2"));
    assert!(net1.len() == 1 && net2.len() == 1, "{net1:?} {net2:?}");
    assert_ne!(net1, net2);
    assert!(in_seed_range(net1[0]) && in_seed_range(net2[0]));
    assert_eq!(lab.allocations("macvlan-conf").len(), 2);
    lab.delete_from_cache()?;
    assert!(lab.allocations("macvlan-conf").is_empty());
    Ok(())
}

#[test]
fn namespace_isolation_refuses_other_namespaces_before_anything_runs() -> anyhow::Result<()> {
    let mut lab = Lab::new("cni-iso")?;
    for reference in [
        "privileged/macvlan-conf",
        "default/macvlan-conf",
        "development/macvlan-conf",
    ] {
        lab.add_nad(reference, macvlan_conf(&lab.data_dir()));
    }
    let err = lab
        .add("development", "privileged/macvlan-conf")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"development\"") && err.contains("\"privileged\""),
        "{err}"
    );
    assert!(
        lab.pod_link("eth0").is_none(),
        "the cluster network ran despite the refusal"
    );
    assert!(lab.cache().read(&lab.container_id)?.is_none());

    lab.add("development", "default/macvlan-conf,macvlan-conf")?;
    assert_eq!(lab.pod_ipv4("net1").len() + lab.pod_ipv4("net2").len(), 2);
    lab.delete_from_cache()?;
    Ok(())
}

#[test]
fn bridge_and_ptp_networks_with_requested_interface_names() -> anyhow::Result<()> {
    let mut lab = Lab::new("cni-brptp")?;
    let data = lab.data_dir();
    lab.add_nad(
        "default/br-net",
        json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "nwbr0",
               "ipam": {"type": "host-local", "subnet": "10.20.0.0/24", "dataDir": data}}),
    );
    lab.add_nad(
        "default/ptp-net",
        json!({"cniVersion": "0.4.0", "type": "ptp",
               "ipam": {"type": "host-local", "subnet": "10.30.0.0/24", "dataDir": data}}),
    );
    lab.add("default", "br-net@data0,ptp-net")?;
    assert_eq!(lab.pod_ipv4("data0")[0].octets()[..3], [10, 20, 0]);
    assert_eq!(lab.pod_ipv4("net2")[0].octets()[..3], [10, 30, 0]);
    assert!(
        lab.node.exec(&["ip", "link", "show", "nwbr0"]).is_ok(),
        "bridge not on the node"
    );

    let runner = Lab::runner();
    let cache = lab.cache();
    run_in(&lab.node.path(), || {
        sandbox::check(&runner, &cache, &lab.container_id, lab.pod.path())
    })??;

    lab.delete_from_cache()?;
    assert!(lab.pod_link("data0").is_none() && lab.pod_link("net2").is_none());
    assert!(lab.allocations("br-net").is_empty() && lab.allocations("ptp-net").is_empty());
    Ok(())
}

#[test]
fn json_annotation_with_ips_mac_and_cni_args_through_a_tuning_chain() -> anyhow::Result<()> {
    let mut lab = Lab::new("cni-chain")?;
    lab.add_nad(
        "default/static-chain",
        json!({"cniVersion": "1.0.0", "name": "static-chain", "plugins": [
            {"type": "macvlan", "master": "eth0", "mode": "bridge",
             "capabilities": {"ips": true}, "ipam": {"type": "static"}},
            {"type": "tuning", "capabilities": {"mac": true}}
        ]}),
    );
    let record = lab.add(
        "default",
        r#"[{"name": "static-chain", "interface": "fast0", "ips": ["10.40.0.5/24"],
             "mac": "c2:11:22:33:44:55", "cni-args": {"mtu": 1400}}]"#,
    )?;
    let link = lab.pod_link("fast0").expect("fast0 exists");
    assert_eq!(lab.pod_ipv4("fast0"), [Ipv4Addr::new(10, 40, 0, 5)]);
    assert_eq!(
        link["address"], "c2:11:22:33:44:55",
        "mac request not applied"
    );
    assert_eq!(
        link["mtu"], 1400,
        "cni-args did not reach tuning's args.cni"
    );
    let status = build_network_status(&record.attachments);
    assert_eq!(status[1].ips, [IpAddr::from([10, 40, 0, 5])]);
    assert_eq!(status[1].mac.as_deref(), Some("c2:11:22:33:44:55"));

    let runner = Lab::runner();
    let cache = lab.cache();
    run_in(&lab.node.path(), || {
        sandbox::check(&runner, &cache, &lab.container_id, lab.pod.path())
    })??;
    lab.delete_from_cache()?;
    assert!(lab.pod_link("fast0").is_none());
    Ok(())
}

#[test]
fn default_route_request_moves_the_default_route_to_its_network() -> anyhow::Result<()> {
    let mut lab = Lab::new("cni-gw")?;
    let mut conf = macvlan_conf(&lab.data_dir());
    conf["ipam"]["routes"] = json!([]);
    lab.add_nad("default/macvlan-conf", conf);
    let default_routes = |lab: &Lab| -> anyhow::Result<Vec<(String, String)>> {
        let out = lab
            .pod
            .exec(&["ip", "-4", "-j", "route", "show", "default"])?;
        let routes: Vec<Value> = serde_json::from_slice(&out.stdout)?;
        Ok(routes
            .iter()
            .map(|r| {
                (
                    r["dev"].as_str().unwrap_or("").to_owned(),
                    r["gateway"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect())
    };

    lab.add("default", "macvlan-conf")?;
    let before = default_routes(&lab)?;
    assert!(
        before.len() == 1 && before[0].0 == "eth0",
        "without a request the cluster network has the default route: {before:?}"
    );
    lab.delete_from_cache()?;

    let record = lab.add(
        "default",
        r#"[{"name": "macvlan-conf", "default-route": ["192.168.1.1"]}]"#,
    )?;
    assert_eq!(
        default_routes(&lab)?,
        [("net1".to_owned(), "192.168.1.1".to_owned())]
    );
    let eth0 = record.attachments[0].result.as_ref().expect("eth0 result");
    assert!(
        eth0.routes.iter().all(|r| r.dst.prefix_len() != 0),
        "{:?}",
        eth0.routes
    );
    let status = build_network_status(&record.attachments);
    assert_eq!(status[1].gateway, [IpAddr::from([192, 168, 1, 1])]);
    lab.delete_from_cache()?;
    Ok(())
}

#[test]
fn requesting_ips_from_a_delegate_without_the_capability_fails() -> anyhow::Result<()> {
    let mut lab = Lab::new("cni-nocap")?;
    lab.add_nad("default/macvlan-conf", macvlan_conf(&lab.data_dir()));
    let err = lab
        .add(
            "default",
            r#"[{"name": "macvlan-conf", "ips": ["192.168.1.210/24"]}]"#,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"ips\"") && err.contains("default/macvlan-conf"),
        "{err}"
    );
    assert!(lab.pod_link("eth0").is_none());
    Ok(())
}

#[test]
fn a_failure_midway_rolls_back_interfaces_and_allocations() -> anyhow::Result<()> {
    let mut lab = Lab::new("cni-fail")?;
    lab.add_nad("default/macvlan-conf", macvlan_conf(&lab.data_dir()));
    let mut broken = macvlan_conf(&lab.data_dir());
    broken["master"] = "nosuchdev0".into();
    lab.add_nad("default/broken", broken);

    let err = lab
        .add("default", "macvlan-conf,broken")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("default/broken") && err.contains("net2") && err.contains("macvlan"),
        "{err}"
    );
    assert!(err.contains("deleted again"), "{err}");
    for ifname in ["eth0", "net1", "net2"] {
        assert!(lab.pod_link(ifname).is_none(), "{ifname} left behind");
    }
    assert!(
        lab.allocations("macvlan-conf").is_empty(),
        "host-local leaked"
    );
    assert!(
        lab.allocations("cluster-net").is_empty(),
        "host-local leaked"
    );
    assert!(lab.cache().read(&lab.container_id)?.is_none());
    Ok(())
}

#[test]
fn del_from_the_cache_after_the_nad_is_deleted_releases_the_address() -> anyhow::Result<()> {
    let mut lab = Lab::new("cni-gone")?;
    lab.add_nad("default/macvlan-conf", macvlan_conf(&lab.data_dir()));
    lab.add("default", "macvlan-conf")?;
    assert_eq!(lab.allocations("macvlan-conf").len(), 1);

    lab.nads.clear();
    lab.delete_from_cache()?;
    assert!(
        lab.allocations("macvlan-conf").is_empty(),
        "host-local leaked"
    );
    assert!(lab.pod_link("net1").is_none());
    // A second DEL (runtimes retry) finds nothing to do.
    lab.delete_from_cache()?;
    Ok(())
}

#[test]
fn a_corrupt_cache_fails_del_instead_of_pretending() -> anyhow::Result<()> {
    let mut lab = Lab::new("cni-corrupt")?;
    lab.add_nad("default/macvlan-conf", macvlan_conf(&lab.data_dir()));
    lab.add("default", "macvlan-conf")?;
    let path = lab.cache().path(&lab.container_id);
    let good = std::fs::read(&path)?;
    std::fs::write(&path, &good[..good.len() / 2])?;

    let err = lab.delete_from_cache().unwrap_err().to_string();
    assert!(
        err.contains("corrupt") && err.contains(&lab.container_id.to_string()),
        "{err}"
    );
    assert_eq!(lab.allocations("macvlan-conf").len(), 1);

    std::fs::write(&path, good)?;
    lab.delete_from_cache()?;
    assert!(lab.allocations("macvlan-conf").is_empty());
    Ok(())
}
