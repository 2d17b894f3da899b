//! Privileged: the seeds' policy examples as written, brought up with `netwarden lab up`.
//! Their truth tables are what the reference evaluator computes from the same objects,
//! and what each example's comment says in words; a pod not on the probed network is not
//! in its table.
use std::time::Duration;

use netwarden_tests::{
    lab::{example, RunningLab, Table},
    truth::{expected, store_objects, tcp, Agents, Net, Probe},
};

/// Probes `probe` once every agent agrees with the reference evaluator; the table.
fn table(lab: &RunningLab, probe: Probe) -> Table {
    let state = lab.state();
    let tables = expected(&store_objects(&state), probe);
    if let Err(disagreements) =
        Agents::of(&state).wait_for(&[(probe, tables.clone())], Duration::from_secs(10))
    {
        panic!("the agents disagree with the reference on {probe:?}: {disagreements:?}");
    }
    let probed = lab.probe(probe.0.probe_arg(), probe.1);
    assert_eq!(probed, tables.reached, "{probe:?}");
    probed
}

#[test]
fn default_deny_on_net1_admits_only_the_frontend_namespace() {
    const NET1: Net = Net::Nad("default/net1");
    let lab = RunningLab::up(&example("default-deny-net1"));
    let net1 = table(&lab, (NET1, tcp(80)));
    assert!(net1["web/site"]["app/api"], "{net1:?}");
    assert!(!net1["other/intruder"]["app/api"], "{net1:?}");
    // Only `app` is isolated, and only for ingress.
    assert!(net1["app/api"]["other/intruder"], "{net1:?}");
    assert!(net1["other/intruder"]["web/site"], "{net1:?}");

    // A pod without net1 is on the cluster network's table, not on net1's.
    let extra = tempfile::tempdir().expect("temp dir");
    let outsider = extra.path().join("outsider.yaml");
    std::fs::write(
        &outsider,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: outsider, namespace: other}\nspec:\n  containers: [{name: c, ports: [{containerPort: 80}]}]\n",
    )
    .expect("manifest written");
    lab.apply(&outsider);
    let net1 = table(&lab, (NET1, tcp(80)));
    assert!(!net1.contains_key("other/outsider"), "{net1:?}");
    assert!(
        net1.values().all(|row| !row.contains_key("other/outsider")),
        "{net1:?}"
    );
    let cluster = table(&lab, (Net::Cluster, tcp(80)));
    assert!(cluster["other/outsider"]["app/api"], "{cluster:?}");
}

#[test]
fn redis_accepts_6379_from_the_project_namespace_and_frontend_pods_only() {
    let lab = RunningLab::up(&example("redis-6379"));
    let cluster = table(&lab, (Net::Cluster, tcp(6379)));
    let to_db = |from: &str| cluster[from]["default/db"];
    assert!(to_db("default/frontend"), "{cluster:?}");
    assert!(to_db("myproject/worker"), "{cluster:?}");
    assert!(!to_db("default/backend"), "{cluster:?}");
    assert!(!to_db("elsewhere/stranger"), "{cluster:?}");
}
