//! The policy engine judged on a cluster read from manifests: incremental results equal a
//! fresh compile, and, where the naive reference evaluator
//! (`netwarden_agent::policy::reference`) can read the cluster, the compiled tables agree
//! with it on every flow between the pods and with outside addresses.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use k8s_openapi::{
    api::{
        core::v1::Pod,
        networking::v1::{NetworkPolicyPort, NetworkPolicySpec},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use netwarden_agent::{
    cluster::{ClusterEvent, Object, ObjectKey},
    datapath::rules::{Direction, Protocol},
    policy::{
        fixtures::{self, NODE},
        reference::{self, Party, Reference},
        EndpointId, EndpointTables, Engine,
    },
};
use netwarden_cni::{
    status::{parse_network_status, NETWORK_STATUS_ANNOTATION},
    NetworkRef,
};

/// Networks where NetworkPolicy applies too.
pub const STANDARD: [&str; 2] = ["default/macvlan-conf", "a/net2"];
/// Addresses outside every pod, always asked about.
const EXTERNALS: [&str; 4] = ["192.0.2.1", "10.1.0.200", "fd00:1::99", "2001:db8::1"];
/// Ports always asked about, beside those the objects name.
const PORTS: [u16; 3] = [53, 80, 8080];
/// Bounds that keep one input quick.
const MAX_OBJECTS: usize = 24;
const MAX_PEERS: usize = 12;
const MAX_PORTS: usize = 6;

/// The objects as a source would deliver them: named (both sources refuse a nameless
/// object, and the engine ignores one), one per key, the last description wins.
pub fn latest(objects: Vec<Object>) -> Vec<Object> {
    let mut by_key: BTreeMap<ObjectKey, (usize, Object)> = BTreeMap::new();
    let named = objects.into_iter().filter(|o| o.metadata().name.is_some());
    for (position, object) in named.enumerate() {
        by_key.insert(object.key(), (position, object));
    }
    let mut objects: Vec<_> = by_key.into_values().collect();
    objects.sort_by_key(|(position, _)| *position);
    objects.into_iter().map(|(_, object)| object).collect()
}

/// Everything the engine got wrong on `objects` (one per key), as a message.
pub fn check(objects: &[Object]) -> Result<(), String> {
    if objects.len() > MAX_OBJECTS {
        return Ok(());
    }
    let engine = fixtures::engine_with(&STANDARD, objects);
    check_incremental(engine, objects)?;
    let engine = fixtures::engine_with(&STANDARD, objects);
    if engine.errors().next().is_none() && readable_by_reference(objects) {
        check_against_reference(&engine, objects)?;
    }
    Ok(())
}

fn output(engine: &Engine) -> (BTreeMap<EndpointId, EndpointTables>, Vec<String>) {
    let tables = engine.endpoints().map(|(id, t)| (id, t.clone())).collect();
    let mut errors: Vec<String> = engine.errors().map(ToString::to_string).collect();
    errors.sort();
    (tables, errors)
}

/// Deletes every other object from `engine` (fed all of `objects`): its tables and
/// errors are then those of a fresh engine fed the rest.
fn check_incremental(mut engine: Engine, objects: &[Object]) -> Result<(), String> {
    let (deleted, kept): (Vec<_>, Vec<_>) =
        objects.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (_, object) in deleted {
        engine.apply(&ClusterEvent::Deleted(object.key()));
    }
    let kept: Vec<Object> = kept.into_iter().map(|(_, o)| o.clone()).collect();
    let fresh = fixtures::engine_with(&STANDARD, &kept);
    if output(&engine) != output(&fresh) {
        return Err(format!(
            "after deletes the engine differs from a fresh one\nincremental: {:#?}\nfresh: {:#?}",
            output(&engine),
            output(&fresh)
        ));
    }
    Ok(())
}

fn key_of(pod: &Pod) -> netwarden_agent::cluster::objects::PodKey {
    fixtures::pod_key(
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The reference reads raw objects with the assumptions of its tests: every NetworkPolicy
/// has a spec, only the cluster network's network-status entry is `default`, and entries
/// name their NAD as `namespace/name` exactly (the engine also reads ` ns/name`, which the
/// reference compares as written).
fn readable_by_reference(objects: &[Object]) -> bool {
    objects.iter().all(|object| match object {
        Object::NetworkPolicy(p) => p.spec.is_some(),
        Object::Pod(p) => status_entries(p).iter().all(|(name, default)| {
            !name.contains('/')
                || (!*default
                    && name
                        .parse::<NetworkRef>()
                        .is_ok_and(|n| n.to_string() == *name))
        }),
        _ => true,
    })
}

/// (name, default) of each network-status entry of `pod`.
fn status_entries(pod: &Pod) -> Vec<(String, bool)> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NETWORK_STATUS_ANNOTATION))
        .and_then(|status| parse_network_status(status).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.default))
        .collect()
}

/// Ports the policies and pods name, with their neighbours, then [`PORTS`].
fn ports(objects: &[Object]) -> Vec<u16> {
    let mut numbers = BTreeSet::new();
    let mut add = |n: i32| {
        for n in [n - 1, n, n + 1] {
            if let Ok(n) = u16::try_from(n) {
                numbers.insert(n);
            }
        }
    };
    for object in objects {
        match object {
            Object::Pod(p) => p
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .for_each(|p| add(p.container_port)),
            Object::MultiNetworkPolicy(_) | Object::NetworkPolicy(_) => {
                for entry in policy_ports(object) {
                    if let Some(IntOrString::Int(n)) = entry.port {
                        add(n);
                    }
                    if let Some(n) = entry.end_port {
                        add(n);
                    }
                }
            }
            _ => {}
        }
    }
    let mut ports: Vec<u16> = numbers
        .into_iter()
        .filter(|&n| n != 0)
        .take(MAX_PORTS)
        .collect();
    ports.extend(PORTS);
    ports
}

fn policy_spec(object: &Object) -> Option<&NetworkPolicySpec> {
    match object {
        Object::MultiNetworkPolicy(p) => Some(&p.spec.policy),
        Object::NetworkPolicy(p) => p.spec.as_ref(),
        _ => None,
    }
}

fn policy_ports(object: &Object) -> Vec<NetworkPolicyPort> {
    let Some(spec) = policy_spec(object) else {
        return Vec::new();
    };
    let ingress = spec
        .ingress
        .iter()
        .flatten()
        .flat_map(|r| r.ports.iter().flatten());
    let egress = spec
        .egress
        .iter()
        .flatten()
        .flat_map(|r| r.ports.iter().flatten());
    ingress.chain(egress).cloned().collect()
}

/// The first and last address of every ipBlock cidr and except, and their neighbours.
fn block_edges(objects: &[Object]) -> Vec<IpAddr> {
    let mut edges = BTreeSet::new();
    for spec in objects.iter().filter_map(policy_spec) {
        let ingress = spec
            .ingress
            .iter()
            .flatten()
            .flat_map(|r| r.from.iter().flatten());
        let egress = spec
            .egress
            .iter()
            .flatten()
            .flat_map(|r| r.to.iter().flatten());
        for block in ingress.chain(egress).filter_map(|p| p.ip_block.as_ref()) {
            let cidrs = std::iter::once(&block.cidr).chain(block.except.iter().flatten());
            for net in cidrs.filter_map(|c| c.parse::<IpNet>().ok()) {
                let (first, last) = (net.network(), net.broadcast());
                edges.extend([first, last]);
                edges.extend(step(first, -1));
                edges.extend(step(last, 1));
            }
        }
    }
    edges.into_iter().collect()
}

fn step(address: IpAddr, by: i128) -> Option<IpAddr> {
    match address {
        IpAddr::V4(a) => u32::try_from(i128::from(u32::from(a)) + by)
            .ok()
            .map(|a| IpAddr::V4(a.into())),
        IpAddr::V6(a) => u128::try_from(i128::try_from(u128::from(a)).ok()? + by)
            .ok()
            .map(|a| IpAddr::V6(a.into())),
    }
}

fn check_against_reference(engine: &Engine, objects: &[Object]) -> Result<(), String> {
    let standard: BTreeSet<String> = STANDARD.iter().map(|s| s.to_string()).collect();
    let reference = Reference {
        objects,
        standard_networks: &standard,
    };
    let pods = fixtures::pods(objects);
    let networks: BTreeSet<String> = pods
        .iter()
        .flat_map(|p| status_entries(p))
        .map(|(name, _)| name)
        .filter(|name| name.contains('/'))
        .collect();
    let ports = ports(objects);
    let externals: Vec<IpAddr> = EXTERNALS
        .iter()
        .map(|a| a.parse().expect("valid"))
        .chain(block_edges(objects))
        .collect();
    for network_name in &networks {
        let Ok(network) = network_name.parse::<NetworkRef>() else {
            continue;
        };
        let on_network: Vec<(&Pod, Vec<IpAddr>)> = pods
            .iter()
            .map(|p| (*p, reference::addresses(p, network_name)))
            .collect();
        for (subject, _) in &on_network {
            let key = key_of(subject);
            let local = subject.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE);
            // An interface network-status lists without addresses is still enforced
            // (fail closed): it is an endpoint, one that admits no pod address.
            let attached = status_entries(subject)
                .iter()
                .any(|(name, _)| name == network_name);
            let expected = local && attached && reference.covers(network_name);
            let has = engine
                .endpoints()
                .any(|(id, _)| id.pod == key && id.network == network);
            if has != expected {
                return Err(format!(
                    "{key} on {network_name}: endpoint {has}, the reference says {expected}"
                ));
            }
            if !has {
                continue;
            }
            // Pod addresses first, then outside ones; an address two pods share, or the
            // subject's own, says nothing about whom a packet is from.
            let mut owners: BTreeMap<IpAddr, Vec<&Pod>> = BTreeMap::new();
            for (other, addresses) in &on_network {
                for address in addresses {
                    owners.entry(*address).or_default().push(other);
                }
            }
            let mut peers: Vec<Party> = Vec::new();
            for (address, owned_by) in &owners {
                if let [other] = owned_by[..] {
                    if key_of(other) != key {
                        peers.push(Party::Pod(other, *address));
                    }
                }
            }
            peers.truncate(MAX_PEERS);
            for address in &externals {
                if !owners.contains_key(address) && peers.len() < 2 * MAX_PEERS {
                    peers.push(Party::External(*address));
                }
            }
            for other in peers {
                let address = match other {
                    Party::Pod(_, a) | Party::External(a) => a,
                };
                for (protocol, name) in [
                    (Protocol::Tcp, "TCP"),
                    (Protocol::Udp, "UDP"),
                    (Protocol::Sctp, "SCTP"),
                ] {
                    for &port in &ports {
                        for direction in [Direction::Ingress, Direction::Egress] {
                            let expected = match direction {
                                Direction::Ingress => reference.ingress_allows(
                                    subject,
                                    network_name,
                                    other,
                                    name,
                                    port,
                                ),
                                Direction::Egress => reference.egress_allows(
                                    subject,
                                    network_name,
                                    other,
                                    name,
                                    port,
                                ),
                            };
                            let compiled = fixtures::compiled_allows(
                                engine, &key, &network, direction, address, protocol, port,
                            );
                            if compiled != Some(expected) {
                                return Err(format!(
                                    "{direction:?} of {key} on {network_name} with {address} \
                                     {name}/{port}: compiled {compiled:?}, the reference says {expected}"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
