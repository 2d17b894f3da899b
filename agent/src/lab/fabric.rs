//! The wires between the lab's nodes: a "fabric" namespace holding one bridge for the
//! cluster network and one per NAD `master`, and in every node namespace one veth end per
//! bridge (`nwlab0` for the cluster network, the master's own name for each master), so a
//! NAD written for real hosts (`"master": "eth0"`) works unchanged on every node.
//!
//! Interface names only need to be unique inside their namespace, so the fabric ends are
//! short: `c<node>` and `m<master>n<node>`.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use super::topology::{ip, TopologyError};

/// The cluster network's uplink in each node: the macvlan master of every pod's eth0.
/// Not a name hosts use, so it cannot collide with a master a NAD names.
pub const CLUSTER_UPLINK: &str = "nwlab0";

/// The cluster network's subnet; node `i` hands out `10.244.<i+1>.0/24` from it.
pub const CLUSTER_SUBNET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16) {
    Ok(net) => net,
    Err(_) => panic!("valid subnet"),
};

/// The cluster network's CNI name, as it appears in network-status.
pub const CLUSTER_NETWORK_NAME: &str = "lab-cluster";

pub fn add_netns(name: &str) -> Result<(), TopologyError> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes the namespace (and with it every link that lives only in it); a namespace
/// that is already gone is not an error.
pub fn delete_netns(name: &str) -> Result<(), TopologyError> {
    if !std::path::Path::new("/run/netns").join(name).exists() {
        return Ok(());
    }
    ip(&["netns", "delete", name]).map(drop)
}

/// The bridge of segment `segment` in the fabric.
fn bridge(segment: &Segment) -> String {
    match segment {
        Segment::Cluster => "br-c".into(),
        Segment::Master(index) => format!("br-m{index}"),
    }
}

/// One L2 segment spanning all nodes.
#[derive(Debug, Clone, Copy)]
pub enum Segment {
    Cluster,
    /// The index of the master among the lab's masters.
    Master(usize),
}

pub fn add_bridge(fabric: &str, segment: Segment) -> Result<(), TopologyError> {
    let name = bridge(&segment);
    ip(&["-n", fabric, "link", "add", &name, "type", "bridge"])?;
    ip(&["-n", fabric, "link", "set", &name, "up"])?;
    Ok(())
}

/// Joins node `node_index` (namespace `node`) to `segment`: `inside` is the interface's
/// name in the node.
pub fn join(
    fabric: &str,
    segment: Segment,
    node: &str,
    node_index: usize,
    inside: &str,
) -> Result<(), TopologyError> {
    let outside = match segment {
        Segment::Cluster => format!("c{node_index}"),
        Segment::Master(index) => format!("m{index}n{node_index}"),
    };
    ip(&[
        "link", "add", "name", &outside, "netns", fabric, "type", "veth", "peer", "name", inside,
        "netns", node,
    ])?;
    ip(&[
        "-n",
        fabric,
        "link",
        "set",
        &outside,
        "master",
        &bridge(&segment),
        "up",
    ])?;
    ip(&["-n", node, "link", "set", inside, "up"])?;
    Ok(())
}

/// The cluster network config of node `node_index`: macvlan over [`CLUSTER_UPLINK`],
/// host-local from the node's own /24 of [`CLUSTER_SUBNET`] (so nodes never hand out the
/// same address), allocations kept in the lab's own `data_dir`.
pub fn cluster_network(node_index: usize, data_dir: &std::path::Path) -> Value {
    let third = u8::try_from(node_index + 1).expect("at most 254 nodes");
    let base = CLUSTER_SUBNET.network().octets();
    let range = |last: u8| Ipv4Addr::new(base[0], base[1], third, last).to_string();
    json!({
        "cniVersion": "1.0.0",
        "name": CLUSTER_NETWORK_NAME,
        "plugins": [{
            "type": "macvlan",
            "master": CLUSTER_UPLINK,
            "mode": "bridge",
            "ipam": {
                "type": "host-local",
                "ranges": [[{
                    "subnet": CLUSTER_SUBNET.to_string(),
                    "rangeStart": range(1),
                    "rangeEnd": range(254),
                }]],
                "dataDir": data_dir,
            }
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_hand_out_disjoint_ranges_of_one_subnet() {
        let dir = std::path::Path::new("/run/netwarden-lab/x/ipam");
        let first = cluster_network(0, dir);
        let second = cluster_network(1, dir);
        let range = |v: &Value| v["plugins"][0]["ipam"]["ranges"][0][0].clone();
        assert_eq!(range(&first)["subnet"], "10.244.0.0/16");
        assert_eq!(range(&first)["rangeStart"], "10.244.1.1");
        assert_eq!(range(&second)["rangeEnd"], "10.244.2.254");
        assert_eq!(first["plugins"][0]["master"], CLUSTER_UPLINK);
    }
}
