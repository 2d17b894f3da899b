//! One test per semantic point of SPEC-NOTES section 6, per known bug of the reference
//! enforcer, and for the seed examples; each named for what it proves.
use netwarden_cni::{status::NETWORK_STATUS_ANNOTATION, NetworkRef};
use serde_json::{json, Value};

use super::{
    fixtures::{
        self, engine_with, multi_policy, network, network_policy, pod, pod_key, Attach, NODE,
    },
    DenyReason, EndpointChange, Engine, EngineConfig, Flow, Verdict,
};
use crate::{
    cluster::{
        objects::{cluster_network, PolicyKind},
        ClusterEvent, Kind, Object, ObjectKey,
    },
    datapath::rules::{Direction, Isolation, Protocol},
};

const NET1: &str = "default/net1";
const NET2: &str = "default/net2";

/// default: server (app=db; web TCP 80, dns UDP 53; net1 v4+v6, net2), client (app=web;
/// net1 v4+v6), bare (no labels; net1); other (team=x): visitor (app=web; net1, on
/// another node), stranger (app=web; net2 only).
fn cluster() -> Vec<Object> {
    vec![
        fixtures::namespace("default", json!({})),
        fixtures::namespace("other", json!({"team": "x"})),
        pod(
            "default",
            "server",
            NODE,
            json!({"app": "db"}),
            &[
                Attach(NET1, "net1", &["10.0.0.1", "fd00::1"]),
                Attach(NET2, "net2", &["10.1.0.1"]),
            ],
            json!([{"name": "web", "containerPort": 80}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]),
        ),
        pod(
            "default",
            "client",
            NODE,
            json!({"app": "web"}),
            &[Attach(NET1, "net1", &["10.0.0.2", "fd00::2"])],
            json!([{"name": "web", "containerPort": 8080}]),
        ),
        pod(
            "default",
            "bare",
            NODE,
            json!({}),
            &[Attach(NET1, "net1", &["10.0.0.4"])],
            json!([]),
        ),
        pod(
            "other",
            "visitor",
            "node-2",
            json!({"app": "web"}),
            &[Attach(NET1, "net1", &["10.0.0.3"])],
            json!([]),
        ),
        pod(
            "other",
            "stranger",
            NODE,
            json!({"app": "web"}),
            &[Attach(NET2, "net2", &["10.1.0.9"])],
            json!([]),
        ),
    ]
}

fn with(policies: &[Object]) -> Engine {
    let mut objects = cluster();
    objects.extend_from_slice(policies);
    engine_with(&[], &objects)
}

fn policy(name: &str, spec: Value) -> Object {
    multi_policy("default", name, Some("net1"), spec)
}

fn flow(from: (&str, &str), to: (&str, &str), protocol: Protocol, port: u16) -> Flow {
    Flow {
        from: pod_key(from.0, from.1),
        to: pod_key(to.0, to.1),
        network: network(NET1),
        protocol,
        port,
    }
}

fn allowed(engine: &Engine, from: (&str, &str), to: (&str, &str), port: u16) -> bool {
    engine
        .explain(&flow(from, to, Protocol::Tcp, port))
        .allowed()
}

const SERVER: (&str, &str) = ("default", "server");
const CLIENT: (&str, &str) = ("default", "client");
const BARE: (&str, &str) = ("default", "bare");
const VISITOR: (&str, &str) = ("other", "visitor");

fn isolation(
    engine: &Engine,
    pod: (&str, &str),
    net: &str,
    direction: Direction,
) -> Option<Isolation> {
    engine
        .endpoints()
        .find(|(id, _)| id.pod == pod_key(pod.0, pod.1) && id.network == network(net))
        .map(|(_, t)| t.policy.direction(direction).clone())
}

#[test]
fn point1_isolation_is_per_direction_per_network_and_only_for_selected_pods() {
    let engine = with(&[policy(
        "db-in",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}),
    )]);
    assert!(!allowed(&engine, CLIENT, SERVER, 80));
    assert_eq!(
        isolation(&engine, SERVER, NET1, Direction::Ingress),
        Some(Isolation::Isolated(vec![]))
    );
    assert_eq!(
        isolation(&engine, SERVER, NET1, Direction::Egress),
        Some(Isolation::Open)
    );
    assert!(
        allowed(&engine, SERVER, CLIENT, 80),
        "the unselected client and the server's egress stay open"
    );
    // net2 is listed by no policy: the server's net2 interface is no endpoint at all.
    assert_eq!(isolation(&engine, SERVER, NET2, Direction::Ingress), None);
    let on_net2 = Flow {
        network: network(NET2),
        ..flow(("other", "stranger"), SERVER, Protocol::Tcp, 80)
    };
    assert_eq!(engine.explain(&on_net2).ingress, Verdict::NotIsolated);
}

#[test]
fn point2_policy_types_default_like_network_policy_not_like_multi_networkpolicy_iptables() {
    // No policyTypes, no rules at all: Ingress is isolated (iptables would isolate nothing).
    let engine = with(&[policy(
        "no-types",
        json!({"podSelector": {"matchLabels": {"app": "db"}}}),
    )]);
    assert_eq!(
        isolation(&engine, SERVER, NET1, Direction::Ingress),
        Some(Isolation::Isolated(vec![]))
    );
    assert_eq!(
        isolation(&engine, SERVER, NET1, Direction::Egress),
        Some(Isolation::Open)
    );
    // No policyTypes with egress rules: Egress too.
    let engine = with(&[policy(
        "egress-rules",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "egress": [{"ports": [{"port": 53}]}]}),
    )]);
    assert!(
        matches!(isolation(&engine, SERVER, NET1, Direction::Egress), Some(Isolation::Isolated(r)) if r.len() == 1)
    );
    assert_eq!(
        isolation(&engine, SERVER, NET1, Direction::Ingress),
        Some(Isolation::Isolated(vec![]))
    );
    // Explicit policyTypes win: Egress only leaves ingress open even with ingress rules.
    let engine = with(&[policy(
        "egress-only",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}),
    )]);
    assert_eq!(
        isolation(&engine, SERVER, NET1, Direction::Ingress),
        Some(Isolation::Open)
    );
    assert_eq!(
        isolation(&engine, SERVER, NET1, Direction::Egress),
        Some(Isolation::Isolated(vec![]))
    );
}

#[test]
fn point3_a_listed_direction_without_rules_denies_all_and_an_empty_rule_allows_all() {
    let deny = with(&[policy(
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    assert!(!allowed(&deny, CLIENT, SERVER, 80));
    assert!(!allowed(&deny, SERVER, CLIENT, 80));
    let allow = with(&[policy(
        "allow",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]}),
    )]);
    assert!(allowed(&allow, CLIENT, SERVER, 80));
    assert!(allowed(&allow, SERVER, CLIENT, 9));
}

#[test]
fn point4_policies_add_up() {
    let p80 = policy(
        "p80",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": 80}]}]}),
    );
    let p443 = policy(
        "p443",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": 443}]}]}),
    );
    let one = with(std::slice::from_ref(&p80));
    assert!(allowed(&one, CLIENT, SERVER, 80) && !allowed(&one, CLIENT, SERVER, 443));
    let both = with(&[p80, p443]);
    assert!(allowed(&both, CLIENT, SERVER, 80) && allowed(&both, CLIENT, SERVER, 443));
    assert!(!allowed(&both, CLIENT, SERVER, 22));
}

#[test]
fn point5_a_connection_needs_the_sources_egress_and_the_destinations_ingress() {
    let engine = with(&[
        policy(
            "client-out",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{}]}),
        ),
        policy(
            "server-in",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}),
        ),
    ]);
    let explanation = engine.explain(&flow(CLIENT, SERVER, Protocol::Tcp, 80));
    assert!(
        matches!(explanation.egress, Verdict::AllowedBy(ref o) if o.policy.name == "client-out")
    );
    assert!(
        matches!(explanation.ingress, Verdict::Denied { reason: DenyReason::NoRuleMatched, ref isolated_by } if isolated_by[0].name == "server-in")
    );
    assert!(!explanation.allowed());
}

#[test]
fn point6_a_rule_is_ports_and_peers_with_or_inside_each_list() {
    let engine = with(&[policy(
        "and-or",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"app": "web"}}}, {"ipBlock": {"cidr": "10.0.0.4/32"}}],
            "ports": [{"port": 80}, {"port": 443}],
        }]}),
    )]);
    assert!(allowed(&engine, CLIENT, SERVER, 80));
    assert!(allowed(&engine, BARE, SERVER, 443), "the second peer");
    assert!(
        !allowed(&engine, CLIENT, SERVER, 22),
        "a peer that matches with a port that does not"
    );
    let empty_lists = with(&[policy(
        "empty",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [], "ports": []}]}),
    )]);
    assert!(allowed(&empty_lists, BARE, SERVER, 22));
}

#[test]
fn point7_pod_selector_alone_stays_in_the_policys_namespace() {
    // Known bug of the reference enforcer: the peer matched app=web pods in every namespace.
    let engine = with(&[policy(
        "web-only",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    )]);
    assert!(allowed(&engine, CLIENT, SERVER, 80));
    assert!(
        !allowed(&engine, VISITOR, SERVER, 80),
        "other/visitor has app=web but lives elsewhere"
    );
}

#[test]
fn point7_namespace_selector_alone_and_both_and_two_peers() {
    let ingress = |from: Value| {
        with(&[policy(
            "p",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": from}]}),
        )])
    };
    let all_namespaces = ingress(json!([{"namespaceSelector": {}}]));
    assert!(
        allowed(&all_namespaces, VISITOR, SERVER, 80) && allowed(&all_namespaces, BARE, SERVER, 80)
    );
    let team_x = ingress(json!([{"namespaceSelector": {"matchLabels": {"team": "x"}}}]));
    assert!(allowed(&team_x, VISITOR, SERVER, 80) && !allowed(&team_x, CLIENT, SERVER, 80));
    let by_name = ingress(
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "default"}}}]),
    );
    assert!(allowed(&by_name, CLIENT, SERVER, 80) && !allowed(&by_name, VISITOR, SERVER, 80));
    let and =
        ingress(json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}]));
    assert!(
        allowed(&and, VISITOR, SERVER, 80)
            && allowed(&and, CLIENT, SERVER, 80)
            && !allowed(&and, BARE, SERVER, 80)
    );
    let or = ingress(
        json!([{"namespaceSelector": {"matchLabels": {"team": "x"}}}, {"podSelector": {}}]),
    );
    assert!(allowed(&or, VISITOR, SERVER, 80) && allowed(&or, BARE, SERVER, 80));
}

#[test]
fn point7_full_label_selectors_not_only_single_value_in() {
    // Known bug of the reference enforcer: anything but single-value In was dropped.
    let ingress = |selector: Value| {
        with(&[policy(
            "p",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": selector}]}]}),
        )])
    };
    let expression = |operator: &str, values: Value| {
        ingress(
            json!({"matchExpressions": [{"key": "app", "operator": operator, "values": values}]}),
        )
    };
    let multi_in = expression("In", json!(["web", "cache"]));
    assert!(allowed(&multi_in, CLIENT, SERVER, 80) && !allowed(&multi_in, BARE, SERVER, 80));
    let not_in = expression("NotIn", json!(["web"]));
    assert!(!allowed(&not_in, CLIENT, SERVER, 80));
    assert!(
        allowed(&not_in, BARE, SERVER, 80),
        "NotIn matches pods without the key"
    );
    let exists = ingress(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}));
    assert!(allowed(&exists, CLIENT, SERVER, 80) && !allowed(&exists, BARE, SERVER, 80));
    let absent = ingress(json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}));
    assert!(!allowed(&absent, CLIENT, SERVER, 80) && allowed(&absent, BARE, SERVER, 80));
}

#[test]
fn point8_peers_resolve_to_their_addresses_on_the_same_network_only() {
    let engine = with(&[multi_policy(
        "default",
        "from-web",
        Some("net1,net2"),
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    )]);
    let Some(Isolation::Isolated(rules)) = isolation(&engine, SERVER, NET1, Direction::Ingress)
    else {
        panic!("server ingress on net1 is isolated");
    };
    let mut addresses: Vec<String> = rules
        .iter()
        .flat_map(|r| match &r.peers {
            crate::datapath::rules::Peers::Blocks(b) => {
                b.iter().map(|b| b.cidr.to_string()).collect()
            }
            crate::datapath::rules::Peers::Any => vec!["any".to_owned()],
        })
        .collect();
    addresses.sort();
    // client and visitor on net1 (v4 and v6); stranger's net2 address is not there.
    assert_eq!(addresses, ["10.0.0.2/32", "10.0.0.3/32", "fd00::2/128"]);
    let stranger = flow(("other", "stranger"), SERVER, Protocol::Tcp, 80);
    assert_eq!(
        engine.explain(&stranger).ingress,
        Verdict::Denied {
            isolated_by: vec![super::super::cluster::objects::PolicyKey {
                kind: PolicyKind::MultiNetworkPolicy,
                namespace: "default".into(),
                name: "from-web".into()
            }],
            reason: DenyReason::PeerHasNoAddress
        }
    );
}

#[test]
fn point9_protocol_defaults_to_tcp_and_a_protocol_without_port_means_all_its_ports() {
    let ingress = |ports: Value| {
        with(&[policy(
            "p",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": ports}]}),
        )])
    };
    let udp = |engine: &Engine, port| {
        engine
            .explain(&flow(CLIENT, SERVER, Protocol::Udp, port))
            .allowed()
    };
    let default_tcp = ingress(json!([{"port": 80}]));
    assert!(allowed(&default_tcp, CLIENT, SERVER, 80) && !udp(&default_tcp, 80));
    let all_udp = ingress(json!([{"protocol": "UDP"}]));
    assert!(udp(&all_udp, 1) && udp(&all_udp, 65535) && !allowed(&all_udp, CLIENT, SERVER, 80));
    let empty_entry = ingress(json!([{}]));
    assert!(allowed(&empty_entry, CLIENT, SERVER, 1) && !udp(&empty_entry, 53));
    let range = ingress(json!([{"port": 8000, "endPort": 8010}]));
    assert!(allowed(&range, CLIENT, SERVER, 8000) && allowed(&range, CLIENT, SERVER, 8010));
    assert!(!allowed(&range, CLIENT, SERVER, 7999) && !allowed(&range, CLIENT, SERVER, 8011));
}

#[test]
fn point9_named_ports_resolve_against_the_destination_pod() {
    // Known bug of the reference enforcer: named ports were not resolved.
    // Ingress: the endpoint's own container ports (server: web = TCP 80).
    let ingress = with(&[policy(
        "in",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": "web"}]}]}),
    )]);
    assert!(allowed(&ingress, CLIENT, SERVER, 80) && !allowed(&ingress, CLIENT, SERVER, 8080));
    // Name and protocol must both match: dns is UDP 53 on the server.
    let tcp_dns = with(&[policy(
        "dns",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": "dns"}]}]}),
    )]);
    let udp = |engine: &Engine| {
        engine
            .explain(&flow(CLIENT, SERVER, Protocol::Udp, 53))
            .allowed()
    };
    assert!(!allowed(&tcp_dns, CLIENT, SERVER, 53) && !udp(&tcp_dns));
    let udp_dns = with(&[policy(
        "dns",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"protocol": "UDP", "port": "dns"}]}]}),
    )]);
    assert!(udp(&udp_dns) && !allowed(&udp_dns, CLIENT, SERVER, 53));
    // Egress: each destination's own ports (server web = 80, client web = 8080).
    let egress = with(&[policy(
        "out",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "web"}]}]}),
    )]);
    assert!(allowed(&egress, BARE, SERVER, 80) && !allowed(&egress, BARE, SERVER, 8080));
    assert!(allowed(&egress, BARE, CLIENT, 8080) && !allowed(&egress, BARE, CLIENT, 80));
}

#[test]
fn point9_ip_block_peers_with_a_named_port_match_only_pod_addresses() {
    let engine = with(&[policy(
        "out",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"port": "web"}]}]}),
    )]);
    let client = pod_key("default", "client");
    let outside = |address: &str, port| {
        fixtures::compiled_allows(
            &engine,
            &client,
            &network(NET1),
            Direction::Egress,
            fixtures::ip(address),
            Protocol::Tcp,
            port,
        )
    };
    assert_eq!(
        outside("10.0.0.1", 80),
        Some(true),
        "the server's address with its web port"
    );
    assert_eq!(
        outside("10.0.0.200", 80),
        Some(false),
        "no pod has this address"
    );
    assert_eq!(
        outside("fd00::1", 80),
        Some(false),
        "outside the IPv4 block"
    );
}

#[test]
fn point10_except_narrows_only_its_own_peer() {
    // Known bug of the reference enforcer: except became a drop overriding other allows.
    let engine = with(&[
        policy(
            "block",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [
                {"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.2/32"]}},
            ]}]}),
        ),
        policy(
            "web",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"app": "web"}}},
        ], "ports": [{"port": 80}]}]}),
        ),
    ]);
    assert!(
        allowed(&engine, BARE, SERVER, 22),
        "ipBlocks match pod addresses too"
    );
    assert!(
        allowed(&engine, CLIENT, SERVER, 80),
        "another policy allows the excepted address"
    );
    let server = pod_key("default", "server");
    let from = |address: &str| {
        fixtures::compiled_allows(
            &engine,
            &server,
            &network(NET1),
            Direction::Ingress,
            fixtures::ip(address),
            Protocol::Tcp,
            22,
        )
    };
    assert_eq!(from("10.0.0.2"), Some(false));
    // The client's IPv6 address is outside the v4 block and the web rule is port 80 only.
    assert_eq!(from("fd00::2"), Some(false));
}

#[test]
fn point10_ipv6_blocks() {
    let engine = with(&[policy(
        "v6",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "fd00::/64", "except": ["fd00::4/126"]}},
        ]}]}),
    )]);
    let server = pod_key("default", "server");
    let from = |address: &str| {
        fixtures::compiled_allows(
            &engine,
            &server,
            &network(NET1),
            Direction::Ingress,
            fixtures::ip(address),
            Protocol::Udp,
            5,
        )
    };
    assert_eq!(from("fd00::2"), Some(true));
    assert_eq!(from("fd00::5"), Some(false));
    assert_eq!(from("10.0.0.2"), Some(false));
}

#[test]
fn point11_every_change_is_reevaluated_and_deleting_all_policies_allows_everything() {
    let mut engine = with(&[policy(
        "from-web",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    )]);
    assert!(!allowed(&engine, BARE, SERVER, 80));
    // bare gets app=web: only the server's endpoint changes.
    let relabelled = pod(
        "default",
        "bare",
        NODE,
        json!({"app": "web"}),
        &[Attach(NET1, "net1", &["10.0.0.4"])],
        json!([]),
    );
    let changes = engine.apply(&ClusterEvent::Applied(relabelled));
    let changed: Vec<_> = changes.iter().map(endpoint_name).collect();
    assert_eq!(changed, ["default/server"]);
    assert!(allowed(&engine, BARE, SERVER, 80));
    // A namespace label change reaches namespaceSelector peers.
    let mut engine = with(&[policy(
        "x",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}]}]}),
    )]);
    assert!(!allowed(&engine, VISITOR, SERVER, 80));
    let changes = engine.apply(&ClusterEvent::Applied(fixtures::namespace(
        "other",
        json!({"team": "y"}),
    )));
    assert_eq!(
        changes.iter().map(endpoint_name).collect::<Vec<_>>(),
        ["default/server"]
    );
    assert!(allowed(&engine, VISITOR, SERVER, 80));
    // An address change: the server's peer list follows the client's new address.
    let moved = pod(
        "default",
        "client",
        NODE,
        json!({"app": "web"}),
        &[Attach(NET1, "net1", &["10.0.0.22"])],
        json!([]),
    );
    let mut engine = with(&[policy(
        "web",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    )]);
    let changes = engine.apply(&ClusterEvent::Applied(moved));
    assert!(changes.iter().any(|c| endpoint_name(c) == "default/server"));
    // Deleting the last policy removes every endpoint: nothing is enforced any more.
    let removed = engine.apply(&ClusterEvent::Deleted(ObjectKey {
        kind: Kind::MultiNetworkPolicy,
        namespace: Some("default".into()),
        name: "web".into(),
    }));
    assert!(
        removed
            .iter()
            .all(|c| matches!(c, EndpointChange::Removed { .. }))
            && !removed.is_empty()
    );
    assert_eq!(engine.endpoints().count(), 0);
    assert!(allowed(&engine, BARE, SERVER, 80));
}

#[test]
fn point11_a_namespace_label_change_reaches_egress_rules_with_only_named_ports() {
    // Such a rule resolves its destinations pod by pod (for their ports), not through
    // the addresses its selector peers stand for.
    let api = pod(
        "other",
        "api",
        "node-2",
        json!({"app": "api"}),
        &[Attach(NET1, "net1", &["10.0.0.5"])],
        json!([{"name": "web", "containerPort": 8443}]),
    );
    let mut engine = with(&[
        api,
        policy(
            "to-team-y",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}],
                               "ports": [{"port": "web"}]}]}),
        ),
    ]);
    let client_to_api = |engine: &Engine| {
        fixtures::compiled_allows(
            engine,
            &pod_key(CLIENT.0, CLIENT.1),
            &network(NET1),
            Direction::Egress,
            fixtures::ip("10.0.0.5"),
            Protocol::Tcp,
            8443,
        )
    };
    assert_eq!(client_to_api(&engine), Some(false));
    let changes = engine.apply(&ClusterEvent::Applied(fixtures::namespace(
        "other",
        json!({"team": "y"}),
    )));
    assert_eq!(
        changes.iter().map(endpoint_name).collect::<Vec<_>>(),
        ["default/client"]
    );
    assert_eq!(client_to_api(&engine), Some(true));
}

fn endpoint_name(change: &EndpointChange) -> String {
    match change {
        EndpointChange::Upsert { endpoint, .. } | EndpointChange::Removed { endpoint } => {
            endpoint.pod.to_string()
        }
    }
}

#[test]
fn point12_traffic_a_pod_sends_to_itself_is_always_allowed() {
    let engine = with(&[policy(
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    let explanation = engine.explain(&flow(SERVER, SERVER, Protocol::Tcp, 80));
    assert_eq!(explanation.egress, Verdict::SelfTraffic);
    assert!(explanation.allowed());
}

#[test]
fn only_ingress_isolated_leaves_egress_open_so_replies_are_the_datapaths_to_pass() {
    // Known bug of the reference enforcer: replies dropped when only ingress was isolated.
    // The engine keeps egress Open; the datapath passes replies of allowed connections.
    let engine = with(&[policy(
        "in",
        json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}),
    )]);
    assert_eq!(
        isolation(&engine, SERVER, NET1, Direction::Egress),
        Some(Isolation::Open)
    );
}

#[test]
fn a_multi_network_policy_without_policy_for_applies_to_no_network() {
    let engine = with(&[multi_policy(
        "default",
        "nowhere",
        None,
        json!({"podSelector": {}}),
    )]);
    assert_eq!(engine.endpoints().count(), 0);
    assert!(allowed(&engine, CLIENT, SERVER, 80));
}

#[test]
fn network_policy_applies_only_to_networks_configured_for_it() {
    let mut objects = cluster();
    objects.push(network_policy(
        "default",
        "deny",
        json!({"podSelector": {}}),
    ));
    let off = engine_with(&[], &objects);
    assert!(allowed(&off, CLIENT, SERVER, 80));
    let on = engine_with(&[NET1], &objects);
    assert!(!allowed(&on, CLIENT, SERVER, 80));
    assert_eq!(
        isolation(&on, SERVER, NET2, Direction::Ingress),
        None,
        "net2 is not configured"
    );
}

#[test]
fn endpoints_are_local_pod_interfaces_on_listed_networks_and_carry_their_addresses() {
    let engine = with(&[policy("any", json!({"podSelector": {}}))]);
    let mut endpoints: Vec<String> = engine
        .endpoints()
        .map(|(id, t)| {
            format!(
                "{} {} {} {:?}",
                id.pod, id.network, id.interface, t.addresses
            )
        })
        .collect();
    endpoints.sort();
    // visitor is on another node; stranger has no net1 interface; net2 is not listed.
    assert_eq!(
        endpoints,
        [
            "default/bare default/net1 net1 [10.0.0.4]",
            "default/client default/net1 net1 [10.0.0.2, fd00::2]",
            "default/server default/net1 net1 [10.0.0.1, fd00::1]",
        ]
    );
}

#[test]
fn provenance_names_the_policy_and_rule_of_every_datapath_rule() {
    let engine = with(&[policy(
        "two-rules",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": 1}]}, {"ports": [{"port": 2}]}]}),
    )]);
    let (_, tables) = engine
        .endpoints()
        .find(|(id, _)| id.pod == pod_key("default", "server"))
        .unwrap();
    let origins: Vec<(String, Direction, usize)> = tables
        .provenance
        .ingress
        .rules
        .iter()
        .map(|o| (o.policy.name.clone(), o.direction, o.rule))
        .collect();
    assert_eq!(
        origins,
        [
            ("two-rules".into(), Direction::Ingress, 0),
            ("two-rules".into(), Direction::Ingress, 1)
        ]
    );
    let explanation = engine.explain(&flow(CLIENT, SERVER, Protocol::Tcp, 2));
    assert!(matches!(explanation.ingress, Verdict::AllowedBy(ref o) if o.rule == 1));
}

#[test]
fn a_bad_rule_is_dropped_with_an_error_and_its_policy_still_isolates() {
    let engine = with(&[
        policy(
            "bad-op",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
                {"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Matches", "values": ["web"]}]}}]},
                {"ports": [{"port": 443}]},
            ]}),
        ),
        policy(
            "bad-cidr",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
        ),
    ]);
    let errors: Vec<String> = engine.errors().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("default/bad-cidr")
            && errors[0].contains("spec.egress[0].to[0].ipBlock.cidr"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("default/bad-op")
            && errors[1].contains("spec.ingress[0].from[0].podSelector.matchExpressions[0]")
            && errors[1].contains("\"Matches\""),
        "{errors:?}"
    );
    // Fail-closed: the unreadable rule allows nothing; the rest of the policy still works.
    assert!(!allowed(&engine, CLIENT, SERVER, 80));
    assert!(allowed(&engine, BARE, SERVER, 443));
    assert!(
        !allowed(&engine, CLIENT, BARE, 80),
        "bad-cidr still isolates the client's egress"
    );
}

#[test]
fn an_unreadable_pod_selector_ignores_the_policy_but_keeps_its_last_good_version() {
    let good = policy(
        "p",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}),
    );
    let bad = policy(
        "p",
        json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}),
    );
    let mut engine = with(&[good]);
    assert!(!allowed(&engine, CLIENT, SERVER, 80));
    engine.apply(&ClusterEvent::Applied(bad.clone()));
    assert!(
        !allowed(&engine, CLIENT, SERVER, 80),
        "the last readable version stays"
    );
    let error = engine.errors().next().unwrap().to_string();
    assert!(
        error.contains("spec.podSelector.matchExpressions[0]")
            && error.contains("needs at least one value"),
        "{error}"
    );
    let fresh = with(&[bad]);
    assert!(allowed(&fresh, CLIENT, SERVER, 80) && fresh.errors().count() == 1);
}

#[test]
fn a_bad_policy_for_item_is_an_error_and_the_other_networks_still_apply() {
    let engine = with(&[multi_policy(
        "default",
        "p",
        Some("net1, Bad_Name"),
        json!({"podSelector": {}}),
    )]);
    let error = engine.errors().next().unwrap().to_string();
    assert!(
        error.contains("default/p") && error.contains("policy-for"),
        "{error}"
    );
    assert!(!allowed(&engine, CLIENT, SERVER, 80));
}

#[test]
fn a_bad_network_status_names_the_pod_and_leaves_it_without_addresses() {
    let mut objects = cluster();
    let Object::Pod(mut broken) = pod(
        "default",
        "broken",
        NODE,
        json!({"app": "web"}),
        &[],
        json!([]),
    ) else {
        unreachable!()
    };
    broken.metadata.annotations = Some(
        [(
            netwarden_cni::status::NETWORK_STATUS_ANNOTATION.to_owned(),
            "{not json".to_owned(),
        )]
        .into(),
    );
    objects.push(Object::Pod(broken));
    objects.push(policy("web", json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]})));
    let engine = engine_with(&[], &objects);
    let error = engine.errors().next().unwrap().to_string();
    assert!(
        error.contains("default/broken") && error.contains("network-status"),
        "{error}"
    );
    assert!(
        allowed(&engine, CLIENT, SERVER, 80),
        "everything else still computes"
    );
}

#[test]
fn pods_leaving_the_node_or_the_cluster_are_removed() {
    let mut engine = with(&[policy("any", json!({"podSelector": {}}))]);
    let elsewhere = pod(
        "default",
        "bare",
        "node-2",
        json!({}),
        &[Attach(NET1, "net1", &["10.0.0.4"])],
        json!([]),
    );
    let changes = engine.apply(&ClusterEvent::Applied(elsewhere));
    assert!(
        matches!(&changes[..], [EndpointChange::Removed { endpoint }] if endpoint.pod.name == "bare")
    );
    let changes = engine.apply(&ClusterEvent::Resynced(Kind::Pod, vec![]));
    assert_eq!(changes.len(), 2);
    assert_eq!(engine.endpoints().count(), 0);
}

// The NetworkPolicy examples of the seed article, as written, as MultiNetworkPolicies
// on net1 and as NetworkPolicies on a network configured for them.
fn seed_test_network_policy() -> Value {
    json!({
        "podSelector": {"matchLabels": {"role": "db"}},
        "ingress": [{
            "from": [
                {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                {"podSelector": {"matchLabels": {"role": "frontend"}}},
            ],
            "ports": [{"protocol": "TCP", "port": 6379}],
        }],
    })
}

fn seed_cluster() -> Vec<Object> {
    let at = |ip: &'static [&'static str; 1]| [Attach(NET1, "net1", ip)];
    vec![
        fixtures::namespace("default", json!({})),
        fixtures::namespace("myproject", json!({"project": "myproject"})),
        pod(
            "default",
            "db",
            NODE,
            json!({"role": "db"}),
            &at(&["10.0.0.10"]),
            json!([]),
        ),
        pod(
            "default",
            "frontend",
            NODE,
            json!({"role": "frontend"}),
            &at(&["10.0.0.11"]),
            json!([]),
        ),
        pod(
            "default",
            "other",
            NODE,
            json!({}),
            &at(&["10.0.0.12"]),
            json!([]),
        ),
        pod(
            "myproject",
            "anything",
            NODE,
            json!({}),
            &at(&["10.0.0.13"]),
            json!([]),
        ),
    ]
}

#[test]
fn seed_test_network_policy_admits_myproject_and_frontends_on_6379() {
    let as_multi = multi_policy(
        "default",
        "test-network-policy",
        Some("net1"),
        seed_test_network_policy(),
    );
    let as_standard = network_policy("default", "test-network-policy", seed_test_network_policy());
    for (standard, policy) in [(vec![], as_multi), (vec![NET1], as_standard)] {
        let mut objects = seed_cluster();
        objects.push(policy);
        let engine = engine_with(&standard, &objects);
        let db = ("default", "db");
        assert!(allowed(&engine, ("default", "frontend"), db, 6379));
        assert!(allowed(&engine, ("myproject", "anything"), db, 6379));
        assert!(!allowed(&engine, ("default", "other"), db, 6379));
        assert!(!allowed(&engine, ("default", "frontend"), db, 6380));
        assert!(
            allowed(&engine, db, ("default", "other"), 1),
            "egress is not isolated"
        );
    }
}

#[test]
fn seed_default_deny_and_allow_all() {
    // `"podSelector": null` selects every pod of the namespace.
    let deny = json!({"podSelector": null});
    let allow_all = json!({"podSelector": null, "ingress": [{}]});
    let mut objects = seed_cluster();
    objects.push(multi_policy("default", "default-deny", Some("net1"), deny));
    let engine = engine_with(&[], &objects);
    assert!(!allowed(
        &engine,
        ("default", "frontend"),
        ("default", "db"),
        80
    ));
    assert!(
        allowed(&engine, ("default", "db"), ("myproject", "anything"), 80),
        "myproject is not isolated"
    );
    objects.push(multi_policy(
        "default",
        "allow-all",
        Some("net1"),
        allow_all,
    ));
    let engine = engine_with(&[], &objects);
    assert!(allowed(
        &engine,
        ("myproject", "anything"),
        ("default", "db"),
        80
    ));
}

/// A pod whose network-status has a cluster-network entry (eth0, `cluster_ip`) and net1.
fn cluster_pod(name: &str, labels: Value, cluster_ip: &str, net1_ip: &str) -> Object {
    let status = json!([
        {"name": "cbr0", "interface": "eth0", "ips": [cluster_ip], "default": true},
        {"name": NET1, "interface": "net1", "ips": [net1_ip]},
    ]);
    Object::Pod(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels,
                         "annotations": {NETWORK_STATUS_ANNOTATION: status.to_string()}},
            "spec": {"nodeName": NODE, "containers": [{"name": "c"}]},
        }))
        .unwrap(),
    ))
}

#[test]
fn on_the_cluster_network_only_network_policy_applies_and_only_when_enabled() {
    let objects = vec![
        cluster_pod("server", json!({"app": "db"}), "10.244.0.1", "10.0.0.1"),
        cluster_pod("client", json!({"app": "web"}), "10.244.0.2", "10.0.0.2"),
        cluster_pod("bare", json!({}), "10.244.0.3", "10.0.0.3"),
        network_policy(
            "default",
            "db-from-web",
            json!({"podSelector": {"matchLabels": {"app": "db"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
        ),
        // A MultiNetworkPolicy never reaches the cluster network: no policy-for can name it.
        multi_policy(
            "default",
            "deny-net1",
            Some("net1"),
            json!({"podSelector": {}}),
        ),
    ];
    let flow_on = |network: NetworkRef, from: (&str, &str)| Flow {
        network,
        ..flow(from, SERVER, Protocol::Tcp, 80)
    };
    let mut engine = Engine::new(EngineConfig {
        node: NODE.into(),
        standard_policy_networks: [cluster_network()].into(),
    });
    for object in &objects {
        engine.apply(&ClusterEvent::Applied(object.clone()));
    }
    assert!(engine
        .explain(&flow_on(cluster_network(), CLIENT))
        .allowed());
    assert!(!engine.explain(&flow_on(cluster_network(), BARE)).allowed());
    assert!(
        !engine.explain(&flow_on(network(NET1), CLIENT)).allowed(),
        "net1 has its own (multi) policy"
    );
    let server = engine
        .endpoints()
        .find(|(id, _)| id.pod == pod_key("default", "server") && id.network == cluster_network())
        .map(|(id, tables)| (id.interface.to_string(), tables.addresses.clone()))
        .expect("the server's eth0 is an endpoint");
    assert_eq!(server, ("eth0".into(), vec![fixtures::ip("10.244.0.1")]));
    // The client's addresses on the cluster network are the peers, not its net1 ones.
    assert_eq!(
        fixtures::compiled_allows(
            &engine,
            &pod_key("default", "server"),
            &cluster_network(),
            Direction::Ingress,
            fixtures::ip("10.0.0.2"),
            Protocol::Tcp,
            80
        ),
        Some(false)
    );

    let off = engine_with(&[], &objects);
    assert!(off.explain(&flow_on(cluster_network(), BARE)).allowed());
    assert!(off
        .endpoints()
        .all(|(id, _)| id.network != cluster_network()));
}
