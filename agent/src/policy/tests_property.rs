//! Property tests over random clusters: the compiled tables agree with the naive
//! reference evaluator on every flow, and incremental results equal a fresh compile.
use std::collections::{BTreeMap, BTreeSet};

use proptest::{prelude::*, test_runner::Config};
use serde_json::{json, Value};

use super::{
    fixtures::{self, Attach, NODE},
    reference::{self, Party, Reference},
    EndpointChange, EndpointId, EndpointTables, Flow,
};
use crate::{
    cluster::{ClusterEvent, Kind, Object, ObjectKey},
    datapath::rules::{Direction, Protocol},
};

const NAMESPACES: [&str; 3] = ["a", "b", "c"];
const NETWORKS: [&str; 2] = ["a/net1", "a/net2"];
/// NetworkPolicy applies on net2 only.
const STANDARD: [&str; 1] = ["a/net2"];
const PODS: usize = 7;
const PORTS: [u16; 6] = [53, 80, 81, 443, 8080, 9999];
const EXTERNALS: [&str; 4] = ["10.1.0.200", "10.3.0.1", "fd00:1::99", "2001:db8::1"];

fn label_value(values: &'static [&'static str]) -> impl Strategy<Value = Option<&'static str>> {
    prop::option::of(prop::sample::select(values))
}

fn labels() -> impl Strategy<Value = Value> {
    (label_value(&["web", "db"]), label_value(&["front", "back"])).prop_map(|(app, tier)| {
        let mut labels = serde_json::Map::new();
        if let Some(app) = app {
            labels.insert("app".into(), app.into());
        }
        if let Some(tier) = tier {
            labels.insert("tier".into(), tier.into());
        }
        Value::Object(labels)
    })
}

fn namespace_object(index: usize) -> impl Strategy<Value = Option<Object>> {
    prop::option::weighted(
        0.8,
        (label_value(&["x", "y"]), label_value(&["prod"])).prop_map(move |(team, env)| {
            let mut labels = serde_json::Map::new();
            if let Some(team) = team {
                labels.insert("team".into(), team.into());
            }
            if let Some(env) = env {
                labels.insert("env".into(), env.into());
            }
            fixtures::namespace(NAMESPACES[index], Value::Object(labels))
        }),
    )
}

/// Pod `index`: unique addresses 10.<net>.0.<index+1> and fd00:<net>::<index+1>.
fn pod_object(index: usize) -> impl Strategy<Value = Option<Object>> {
    let ports = prop::sample::select(vec![
        json!([]),
        json!([{"name": "web", "containerPort": 80}]),
        json!([{"name": "web", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]),
        json!([{"name": "dns", "containerPort": 53}, {"containerPort": 443}]),
    ]);
    prop::option::weighted(
        0.9,
        (
            0..NAMESPACES.len(),
            prop::bool::weighted(0.75),
            labels(),
            0u8..4,
            0u8..3,
            ports,
        )
            .prop_map(move |(ns, local, labels, networks, families, ports)| {
                let node = if local { NODE } else { "node-2" };
                let name = format!("p{index}");
                let addresses: Vec<Vec<String>> = (0..NETWORKS.len())
                    .map(|n| {
                        let mut ips = Vec::new();
                        if families != 1 {
                            ips.push(format!("10.{}.0.{}", n + 1, index + 1));
                        }
                        if families != 0 {
                            ips.push(format!("fd00:{}::{}", n + 1, index + 1));
                        }
                        ips
                    })
                    .collect();
                let ips: Vec<Vec<&str>> = addresses
                    .iter()
                    .map(|v| v.iter().map(String::as_str).collect())
                    .collect();
                let interfaces = ["net1", "net2"];
                let attachments: Vec<Attach> = (0..NETWORKS.len())
                    .filter(|n| networks & (1 << n) != 0)
                    .map(|n| Attach(NETWORKS[n], interfaces[n], &ips[n]))
                    .collect();
                fixtures::pod(NAMESPACES[ns], &name, node, labels, &attachments, ports)
            }),
    )
}

fn selector() -> impl Strategy<Value = Value> {
    let expression = (
        prop::sample::select(vec!["app", "tier", "team", "env"]),
        prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        prop::sample::subsequence(vec!["web", "db", "front", "x", "prod"], 1..3),
    )
        .prop_map(|(key, operator, values)| match operator {
            "In" | "NotIn" => json!({"key": key, "operator": operator, "values": values}),
            _ => json!({"key": key, "operator": operator}),
        });
    (
        prop::option::of(prop::sample::select(vec![
            json!({"app": "web"}),
            json!({"app": "db"}),
            json!({"team": "x"}),
            json!({"kubernetes.io/metadata.name": "b"}),
        ])),
        prop::collection::vec(expression, 0..2),
    )
        .prop_map(|(labels, expressions)| {
            let mut selector = serde_json::Map::new();
            if let Some(labels) = labels {
                selector.insert("matchLabels".into(), labels);
            }
            if !expressions.is_empty() {
                selector.insert("matchExpressions".into(), Value::Array(expressions));
            }
            Value::Object(selector)
        })
}

fn ip_block() -> impl Strategy<Value = Value> {
    const CIDRS: [&str; 8] = [
        "10.1.0.0/24",
        "10.1.0.0/30",
        "0.0.0.0/0",
        "10.0.0.0/8",
        "fd00:1::/64",
        "::/0",
        "fd00:2::/120",
        "10.2.0.4/31",
    ];
    const EXCEPTS: [&str; 5] = [
        "10.1.0.2/32",
        "10.1.0.0/31",
        "fd00:1::2/128",
        "10.2.0.0/24",
        "fd00:2::/126",
    ];
    (
        prop::sample::select(&CIDRS[..]),
        prop::sample::subsequence(&EXCEPTS[..], 0..3),
    )
        .prop_map(|(cidr, except)| {
            let outer: ipnet::IpNet = cidr.parse().unwrap();
            let except: Vec<&str> = except
                .into_iter()
                .filter(|e| outer.contains(&e.parse::<ipnet::IpNet>().unwrap()))
                .collect();
            if except.is_empty() {
                json!({"cidr": cidr})
            } else {
                json!({"cidr": cidr, "except": except})
            }
        })
}

fn peer() -> impl Strategy<Value = Value> {
    prop_oneof![
        selector().prop_map(|s| json!({"podSelector": s})),
        selector().prop_map(|s| json!({"namespaceSelector": s})),
        (selector(), selector())
            .prop_map(|(n, p)| json!({"namespaceSelector": n, "podSelector": p})),
        ip_block().prop_map(|b| json!({"ipBlock": b})),
    ]
}

fn port_entry() -> impl Strategy<Value = Value> {
    let protocol = prop::option::of(prop::sample::select(vec!["TCP", "UDP"]));
    let port = prop_oneof![
        Just(json!(null)),
        prop::sample::select(vec![53, 80, 8080]).prop_map(|p| json!(p)),
        prop::sample::select(vec!["web", "dns"]).prop_map(|p| json!(p)),
    ];
    (
        protocol,
        port,
        prop::option::of(prop::sample::select(vec![81, 8080])),
    )
        .prop_map(|(protocol, port, end)| {
            let mut entry = serde_json::Map::new();
            if let Some(protocol) = protocol {
                entry.insert("protocol".into(), protocol.into());
            }
            if !port.is_null() {
                if let (Some(first), Some(end)) = (port.as_i64(), end) {
                    if end >= first {
                        entry.insert("endPort".into(), end.into());
                    }
                }
                entry.insert("port".into(), port);
            }
            Value::Object(entry)
        })
}

fn rules(peers_key: &'static str) -> impl Strategy<Value = Option<Value>> {
    let rule = (
        prop::option::of(prop::collection::vec(peer(), 0..3)),
        prop::option::of(prop::collection::vec(port_entry(), 0..3)),
    )
        .prop_map(move |(peers, ports)| {
            let mut rule = serde_json::Map::new();
            if let Some(peers) = peers {
                rule.insert(peers_key.into(), Value::Array(peers));
            }
            if let Some(ports) = ports {
                rule.insert("ports".into(), Value::Array(ports));
            }
            Value::Object(rule)
        });
    prop::option::of(prop::collection::vec(rule, 0..3).prop_map(Value::Array))
}

fn policy_spec() -> impl Strategy<Value = Value> {
    let types = prop::option::of(prop::sample::select(vec![
        json!([]),
        json!(["Ingress"]),
        json!(["Egress"]),
        json!(["Ingress", "Egress"]),
    ]));
    (
        prop::option::of(selector()),
        types,
        rules("from"),
        rules("to"),
    )
        .prop_map(|(pods, types, ingress, egress)| {
            let mut spec = serde_json::Map::new();
            for (key, value) in [
                ("podSelector", pods),
                ("policyTypes", types),
                ("ingress", ingress),
                ("egress", egress),
            ] {
                if let Some(value) = value {
                    spec.insert(key.into(), value);
                }
            }
            Value::Object(spec)
        })
}

/// Policy slot `index`: slots 0-2 are MultiNetworkPolicies, slot 3 a NetworkPolicy.
fn policy_object(index: usize) -> impl Strategy<Value = Option<Object>> {
    let policy_for = prop::option::weighted(
        0.9,
        prop::sample::select(vec!["net1", "a/net1", "a/net2", "a/net1, a/net2", "b/net1"]),
    );
    prop::option::weighted(
        0.85,
        (0..NAMESPACES.len(), policy_for, policy_spec()).prop_map(move |(ns, policy_for, spec)| {
            let name = format!("pol{index}");
            if index == 3 {
                fixtures::network_policy(NAMESPACES[ns], &name, spec)
            } else {
                fixtures::multi_policy(NAMESPACES[ns], &name, policy_for, spec)
            }
        }),
    )
}

/// A cluster as fixed slots (namespaces, pods, policies), each present or not, so two
/// clusters name the same objects and one can be turned into the other.
fn cluster() -> impl Strategy<Value = Vec<Option<Object>>> {
    let namespaces: Vec<_> = (0..NAMESPACES.len()).map(namespace_object).collect();
    let pods: Vec<_> = (0..PODS).map(pod_object).collect();
    let policies: Vec<_> = (0..4).map(policy_object).collect();
    (namespaces, pods, policies).prop_map(|(n, p, q)| n.into_iter().chain(p).chain(q).collect())
}

fn present(slots: &[Option<Object>]) -> Vec<Object> {
    slots.iter().flatten().cloned().collect()
}

fn key_of(pod: &k8s_openapi::api::core::v1::Pod) -> crate::cluster::objects::PodKey {
    fixtures::pod_key(
        pod.metadata.namespace.as_deref().unwrap(),
        pod.metadata.name.as_deref().unwrap(),
    )
}

/// Checks every flow between pods (and to and from outside addresses) on every network.
fn check_against_reference(objects: &[Object]) -> Result<(), TestCaseError> {
    let engine = fixtures::engine_with(&STANDARD, objects);
    prop_assert_eq!(
        engine.errors().count(),
        0,
        "{:?}",
        engine.errors().collect::<Vec<_>>()
    );
    let standard: BTreeSet<String> = STANDARD.iter().map(|s| s.to_string()).collect();
    let reference = Reference {
        objects,
        standard_networks: &standard,
    };
    let pods = fixtures::pods(objects);
    for network_name in NETWORKS {
        let network = fixtures::network(network_name);
        for subject in &pods {
            let key = key_of(subject);
            let own = reference::addresses(subject, network_name);
            let local = subject.spec.as_ref().unwrap().node_name.as_deref() == Some(NODE);
            let endpoint_expected = local && !own.is_empty() && reference.covers(network_name);
            let has_endpoint = engine
                .endpoints()
                .any(|(id, _)| id.pod == key && id.network == network);
            prop_assert_eq!(
                has_endpoint,
                endpoint_expected,
                "endpoint of {} on {}",
                key,
                network_name
            );
            if !has_endpoint {
                continue;
            }
            let mut others: Vec<Party> = EXTERNALS
                .iter()
                .map(|a| Party::External(fixtures::ip(a)))
                .collect();
            for other in pods.iter().filter(|o| key_of(o) != key) {
                others.extend(
                    reference::addresses(other, network_name)
                        .into_iter()
                        .map(|a| Party::Pod(other, a)),
                );
            }
            // explain judges a pod peer on any of its addresses on the network.
            let mut explained: BTreeMap<(String, Direction, &str, u16), bool> = BTreeMap::new();
            for other in others {
                let address = match other {
                    Party::Pod(_, a) | Party::External(a) => a,
                };
                for (protocol, protocol_name) in [(Protocol::Tcp, "TCP"), (Protocol::Udp, "UDP")] {
                    for port in PORTS {
                        for direction in [Direction::Ingress, Direction::Egress] {
                            let expected = match direction {
                                Direction::Ingress => reference.ingress_allows(
                                    subject,
                                    network_name,
                                    other,
                                    protocol_name,
                                    port,
                                ),
                                Direction::Egress => reference.egress_allows(
                                    subject,
                                    network_name,
                                    other,
                                    protocol_name,
                                    port,
                                ),
                            };
                            let compiled = fixtures::compiled_allows(
                                &engine, &key, &network, direction, address, protocol, port,
                            );
                            prop_assert_eq!(
                                compiled,
                                Some(expected),
                                "{:?} of {} on {} with {} {}/{}",
                                direction,
                                key,
                                network_name,
                                address,
                                protocol_name,
                                port
                            );
                            if let Party::Pod(other_pod, _) = other {
                                *explained
                                    .entry((
                                        key_of(other_pod).to_string(),
                                        direction,
                                        protocol_name,
                                        port,
                                    ))
                                    .or_default() |= expected;
                            }
                        }
                    }
                }
            }
            for ((other, direction, protocol_name, port), expected) in explained {
                let (namespace, name) = other.split_once('/').unwrap();
                let other = fixtures::pod_key(namespace, name);
                let protocol = if protocol_name == "TCP" {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                };
                let (from, to) = match direction {
                    Direction::Egress => (key.clone(), other),
                    Direction::Ingress => (other, key.clone()),
                };
                let explanation = engine.explain(&Flow {
                    from,
                    to,
                    network: network.clone(),
                    protocol,
                    port,
                });
                let verdict = match direction {
                    Direction::Egress => explanation.egress,
                    Direction::Ingress => explanation.ingress,
                };
                prop_assert_eq!(
                    verdict.allows(),
                    expected,
                    "explain {:?} of {}: {:?}",
                    direction,
                    key,
                    verdict
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Step {
    /// Apply slot `.0` as cluster `.1` (0 or 1) has it: Applied, or Deleted if absent there.
    Slot(usize, usize),
    /// Resync one kind to cluster `.1`'s objects of it.
    Resync(Kind, usize),
}

fn step() -> impl Strategy<Value = Step> {
    let slots = NAMESPACES.len() + PODS + 4;
    prop_oneof![
        8 => (0..slots, 0..2usize).prop_map(|(s, c)| Step::Slot(s, c)),
        1 => (prop::sample::select(vec![Kind::Pod, Kind::Namespace, Kind::MultiNetworkPolicy, Kind::NetworkPolicy]), 0..2usize)
            .prop_map(|(k, c)| Step::Resync(k, c)),
    ]
}

/// The key slot `index` has whether or not the object is present.
fn slot_key(index: usize) -> ObjectKey {
    let (kind, name) = if index < NAMESPACES.len() {
        (Kind::Namespace, NAMESPACES[index].to_owned())
    } else if index < NAMESPACES.len() + PODS {
        (Kind::Pod, format!("p{}", index - NAMESPACES.len()))
    } else {
        let policy = index - NAMESPACES.len() - PODS;
        let kind = if policy == 3 {
            Kind::NetworkPolicy
        } else {
            Kind::MultiNetworkPolicy
        };
        (kind, format!("pol{policy}"))
    };
    ObjectKey {
        kind,
        namespace: None,
        name,
    }
}

/// What a fresh engine computes for `objects`.
fn fresh(objects: &[Object]) -> BTreeMap<EndpointId, EndpointTables> {
    fixtures::engine_with(&STANDARD, objects)
        .endpoints()
        .map(|(id, t)| (id, t.clone()))
        .collect()
}

fn proptest_config(cases: u32) -> Config {
    Config {
        cases,
        // A fixed seed so every run checks the same clusters; PROPTEST_RNG_SEED picks others.
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0x6e77_706f),
        ),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(proptest_config(2000))]

    #[test]
    fn compiled_tables_agree_with_the_reference_evaluator(slots in cluster()) {
        check_against_reference(&present(&slots))?;
    }
}

proptest! {
    #![proptest_config(proptest_config(600))]

    #[test]
    fn incremental_results_equal_a_fresh_compile(
        clusters in [cluster(), cluster()],
        steps in prop::collection::vec(step(), 1..25),
        wholesale_above in prop::sample::select(vec![0, 3, usize::MAX]),
    ) {
        // By full key: a slot's object may sit in another namespace in the other cluster,
        // and then both exist until one is deleted.
        let mut current: BTreeMap<ObjectKey, Object> = BTreeMap::new();
        let mut engine = fixtures::engine_with(&STANDARD, &[]);
        engine.set_wholesale_above(wholesale_above);
        let mut seen: BTreeMap<EndpointId, EndpointTables> = BTreeMap::new();
        for step in steps {
            let event = match step {
                Step::Slot(slot, c) => match &clusters[c][slot] {
                    Some(object) => {
                        current.insert(object.key(), object.clone());
                        ClusterEvent::Applied(object.clone())
                    }
                    None => {
                        let slot = slot_key(slot);
                        let key = current
                            .keys()
                            .find(|k| k.kind == slot.kind && k.name == slot.name)
                            .cloned()
                            .unwrap_or(slot);
                        current.remove(&key);
                        ClusterEvent::Deleted(key)
                    }
                },
                Step::Resync(kind, c) => {
                    current.retain(|k, _| k.kind != kind);
                    let objects: Vec<Object> = present(&clusters[c]).into_iter().filter(|o| o.kind() == kind).collect();
                    current.extend(objects.iter().map(|o| (o.key(), o.clone())));
                    ClusterEvent::Resynced(kind, objects)
                }
            };
            for change in engine.apply(&event) {
                match change {
                    EndpointChange::Upsert { endpoint, tables } => {
                        let tables = EndpointTables::clone(&tables);
                        prop_assert_ne!(seen.insert(endpoint, tables.clone()), Some(tables), "an Upsert that changed nothing");
                    }
                    EndpointChange::Removed { endpoint } => {
                        prop_assert!(seen.remove(&endpoint).is_some(), "Removed {:?} that was never there", endpoint);
                    }
                }
            }
            let objects: Vec<Object> = current.values().cloned().collect();
            let expected = fresh(&objects);
            prop_assert_eq!(&seen, &expected, "after {:?}", event);
        }
    }
}
