//! Typed views of the Kubernetes objects the policy engine reads, converted once at the
//! edge. Every conversion error names the object and the field.
//!
//! Conversions are partial where that is safe: a bad part of an object is dropped with an
//! error, the rest is kept ([`Parsed`]). A part is only dropped when dropping it cannot
//! allow more traffic than the object asked for (see [`PolicyView::from_multi`]).
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use ipnet::IpNet;
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod},
        networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec},
    },
    apimachinery::pkg::{apis::meta::v1 as meta, util::intstr::IntOrString},
};
use netwarden_cni::{
    status::{parse_network_status, NETWORK_STATUS_ANNOTATION},
    InterfaceName, NetworkRef,
};

use super::{crd::v1beta2::MultiNetworkPolicy, crd::POLICY_FOR_ANNOTATION, Kind, ObjectKey};
use crate::datapath::rules::{Direction, PeerBlock, PortRange, Protocol};

/// A rule as the API has it: its peers (`from`/`to`) and ports.
type RawRule<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

/// The label every namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The engine's name for the cluster network: every pod's network-status entry marked
/// `default` (normally eth0), whatever its CNI name. Its namespace is empty, so no NAD can
/// have it and no `policy-for` can name it: only networking.k8s.io/v1 NetworkPolicy
/// applies there, when the agent enforces standard policy on the cluster network.
pub fn cluster_network() -> NetworkRef {
    NetworkRef {
        namespace: String::new(),
        name: "cluster-network".into(),
    }
}

/// Something wrong with one field of one object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {problem}")]
pub struct ObjectError {
    pub object: ObjectKey,
    /// A path into the object, as `kubectl explain` spells it.
    pub field: String,
    pub problem: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{:?} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{:?} {}", self.kind, self.name),
        }
    }
}

/// A view that converted, with the errors of the parts that were dropped on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T> {
    pub view: T,
    pub errors: Vec<ObjectError>,
}

/// A namespaced object's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The two policy kinds, which live side by side and may share names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    MultiNetworkPolicy,
    NetworkPolicy,
}

/// Names one policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    pub namespace: String,
    pub name: String,
}

impl PolicyKey {
    pub fn object_key(&self) -> ObjectKey {
        ObjectKey {
            kind: match self.kind {
                PolicyKind::MultiNetworkPolicy => Kind::MultiNetworkPolicy,
                PolicyKind::NetworkPolicy => Kind::NetworkPolicy,
            },
            namespace: Some(self.namespace.clone()),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// An object's labels, in key order. Every pod of the cluster keeps its own, so they sit in
/// one string (two allocations) rather than a B-tree node and a string per key and value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels {
    /// Each key followed by its value, in key order.
    text: Box<str>,
    /// Where each key and each value ends in `text`: label i is
    /// `text[ends[2i-1]..ends[2i]]` = `text[ends[2i]..ends[2i+1]]`.
    ends: Box<[u32]>,
}

impl Labels {
    pub fn get(&self, key: &str) -> Option<&str> {
        // Objects carry a handful of labels: a scan beats a search.
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.ends.len() / 2).map(|i| (self.key(i), self.value(i)))
    }

    fn start(&self, slot: usize) -> usize {
        slot.checked_sub(1).map_or(0, |s| self.ends[s] as usize)
    }
    fn key(&self, i: usize) -> &str {
        &self.text[self.start(2 * i)..self.ends[2 * i] as usize]
    }
    fn value(&self, i: usize) -> &str {
        &self.text[self.start(2 * i + 1)..self.ends[2 * i + 1] as usize]
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(labels: BTreeMap<String, String>) -> Self {
        let mut text = String::new();
        let mut ends = Vec::with_capacity(2 * labels.len());
        for (key, value) in &labels {
            for part in [key, value] {
                text.push_str(part);
                // The API server caps an object's labels far below 4 GiB.
                ends.push(u32::try_from(text.len()).expect("labels under 4 GiB"));
            }
        }
        Self {
            text: text.into(),
            ends: ends.into(),
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(labels: I) -> Self {
        labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect::<BTreeMap<String, String>>()
            .into()
    }
}

/// A label selector with full Kubernetes semantics. All requirements must hold; no
/// requirement selects everything.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    In(BTreeSet<String>),
    /// Also matches objects without the key.
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Selects everything.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.get(&r.key);
            match &r.operator {
                Operator::In(values) => value.is_some_and(|v| values.contains(v)),
                Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
            }
        })
    }

    /// Converts `selector`, found at `field` of `object`.
    pub fn parse(
        selector: &meta::LabelSelector,
        object: &ObjectKey,
        field: &str,
    ) -> Result<Self, ObjectError> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(key, value)| Requirement {
                key: key.clone(),
                operator: Operator::In(BTreeSet::from([value.clone()])),
            })
            .collect();
        for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
            let error = |problem: String| ObjectError {
                object: object.clone(),
                field: format!("{field}.matchExpressions[{i}]"),
                problem,
            };
            let values: BTreeSet<String> = expression.values.iter().flatten().cloned().collect();
            let operator = match expression.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(error(format!(
                        "operator {} needs at least one value",
                        expression.operator
                    )))
                }
                "In" => Operator::In(values),
                "NotIn" => Operator::NotIn(values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(error(format!(
                        "operator {} takes no values",
                        expression.operator
                    )))
                }
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(error(format!(
                        "operator {other:?} is not In, NotIn, Exists or DoesNotExist"
                    )))
                }
            };
            requirements.push(Requirement {
                key: expression.key.clone(),
                operator,
            });
        }
        Ok(Self { requirements })
    }
}

/// A container port, as named ports resolve against it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub protocol: Protocol,
    pub number: u16,
}

/// One interface of a pod, from network-status: on a NAD, or on the cluster network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    pub network: NetworkRef,
    pub interface: InterfaceName,
    pub ips: Vec<IpAddr>,
}

/// What the engine needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub key: PodKey,
    pub labels: Labels,
    /// `spec.nodeName`; None while unscheduled.
    pub node: Option<String>,
    pub ports: Vec<ContainerPort>,
    /// Secondary-network interfaces, plus the cluster network's (as [`cluster_network`])
    /// when it was asked for.
    pub interfaces: Vec<PodInterface>,
}

impl PodView {
    /// A bad network-status drops all interfaces (the pod then has no address anywhere);
    /// a bad container port drops that port (named ports then resolve to fewer numbers).
    /// The cluster network's entry is read only `with_cluster_network`.
    pub fn from_pod(pod: &Pod, with_cluster_network: bool) -> Result<Parsed<Self>, ObjectError> {
        let (namespace, name) = namespaced_name(&pod.metadata, Kind::Pod)?;
        let object = ObjectKey {
            kind: Kind::Pod,
            namespace: Some(namespace.clone()),
            name: name.clone(),
        };
        let mut errors = Vec::new();
        let spec = pod.spec.as_ref();
        let mut ports = Vec::new();
        for (c, container) in spec.iter().flat_map(|s| &s.containers).enumerate() {
            for (p, port) in container.ports.iter().flatten().enumerate() {
                let field = format!("spec.containers[{c}].ports[{p}]");
                match container_port(port) {
                    Ok(port) => ports.push(port),
                    Err(problem) => errors.push(ObjectError {
                        object: object.clone(),
                        field,
                        problem,
                    }),
                }
            }
        }
        let interfaces = match interfaces(pod, with_cluster_network) {
            Ok(interfaces) => interfaces,
            Err(problem) => {
                errors.push(ObjectError {
                    object: object.clone(),
                    field: format!("metadata.annotations[{NETWORK_STATUS_ANNOTATION}]"),
                    problem,
                });
                Vec::new()
            }
        };
        Ok(Parsed {
            view: Self {
                key: PodKey { namespace, name },
                labels: pod.metadata.labels.clone().unwrap_or_default().into(),
                node: spec.and_then(|s| s.node_name.clone()),
                ports,
                interfaces,
            },
            errors,
        })
    }

    /// The pod's addresses on `network`, over all its interfaces there.
    pub fn addresses_on<'a>(
        &'a self,
        network: &'a NetworkRef,
    ) -> impl Iterator<Item = IpAddr> + 'a {
        self.interfaces
            .iter()
            .filter(move |i| &i.network == network)
            .flat_map(|i| i.ips.iter().copied())
    }

    /// The numbers `name`/`protocol` resolves to on this pod.
    pub fn resolve_named_port<'a>(
        &'a self,
        name: &'a str,
        protocol: Protocol,
    ) -> impl Iterator<Item = u16> + 'a {
        self.ports
            .iter()
            .filter(move |p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.number)
    }
}

fn container_port(
    port: &k8s_openapi::api::core::v1::ContainerPort,
) -> Result<ContainerPort, String> {
    let protocol = match &port.protocol {
        Some(protocol) => parse_protocol(protocol)?,
        None => Protocol::Tcp,
    };
    let number = u16::try_from(port.container_port)
        .ok()
        .filter(|n| *n != 0)
        .ok_or_else(|| format!("containerPort {} is not in 1-65535", port.container_port))?;
    Ok(ContainerPort {
        name: port.name.clone(),
        protocol,
        number,
    })
}

fn interfaces(pod: &Pod, with_cluster_network: bool) -> Result<Vec<PodInterface>, String> {
    let Some(status) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NETWORK_STATUS_ANNOTATION))
    else {
        return Ok(Vec::new());
    };
    let entries = parse_network_status(status).map_err(|e| e.to_string())?;
    let mut interfaces = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        // The cluster network's entry is named after its CNI config, not a NAD.
        let network = if entry.default {
            if !with_cluster_network {
                continue;
            }
            cluster_network()
        } else if entry.name.contains('/') {
            entry
                .name
                .parse::<NetworkRef>()
                .map_err(|e| format!("entry {i}: {e}"))?
        } else {
            continue;
        };
        let interface = entry
            .interface
            .as_deref()
            .ok_or_else(|| format!("entry {i} ({network}) has no interface"))?
            .parse::<InterfaceName>()
            .map_err(|e| format!("entry {i} ({network}): {e}"))?;
        interfaces.push(PodInterface {
            network,
            interface,
            ips: entry.ips,
        });
    }
    Ok(interfaces)
}

/// What the engine needs of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceView {
    pub name: String,
    /// Including [`NAMESPACE_NAME_LABEL`].
    pub labels: Labels,
}

impl NamespaceView {
    pub fn from_namespace(namespace: &Namespace) -> Result<Self, ObjectError> {
        let name = namespace.metadata.name.clone().ok_or_else(|| ObjectError {
            object: ObjectKey {
                kind: Kind::Namespace,
                namespace: None,
                name: String::new(),
            },
            field: "metadata.name".into(),
            problem: "missing".into(),
        })?;
        let mut labels = namespace.metadata.labels.clone().unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
        Ok(Self {
            name,
            labels: labels.into(),
        })
    }

    /// A namespace not (yet) seen: it still carries its name label, as every namespace does.
    pub fn unlabelled(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            labels: Labels::from_iter([(NAMESPACE_NAME_LABEL, name)]),
        }
    }
}

/// Which namespaces a pod peer looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamespaceScope {
    /// The policy's own namespace (`podSelector` alone).
    Own,
    /// Namespaces matching this selector.
    Selected(LabelSelector),
}

/// One item of a rule's `from`/`to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    Pods {
        namespaces: NamespaceScope,
        pods: LabelSelector,
    },
    Block(PeerBlock),
}

/// Which ports of a protocol a port entry allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    All,
    Range(PortRange),
    /// Resolved against the destination pod's container ports.
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    pub protocol: Protocol,
    pub port: PortSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulePeers {
    /// `from`/`to` missing or empty.
    Any,
    Listed(Vec<Peer>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulePorts {
    /// `ports` missing or empty.
    Any,
    Listed(Vec<PortEntry>),
}

/// One ingress or egress rule; `index` is its position in the policy as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleView {
    pub index: usize,
    pub peers: RulePeers,
    pub ports: RulePorts,
}

/// What the engine needs of a MultiNetworkPolicy or NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyView {
    pub key: PolicyKey,
    /// The networks it applies to.
    pub networks: BTreeSet<NetworkRef>,
    /// Selects pods in `key.namespace`.
    pub pod_selector: LabelSelector,
    pub isolates_ingress: bool,
    pub isolates_egress: bool,
    pub ingress: Vec<RuleView>,
    pub egress: Vec<RuleView>,
}

impl PolicyView {
    pub fn isolates(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.isolates_ingress,
            Direction::Egress => self.isolates_egress,
        }
    }

    pub fn rules(&self, direction: Direction) -> &[RuleView] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Converts a MultiNetworkPolicy; it applies to the networks its policy-for annotation
    /// names (none without the annotation).
    ///
    /// Fail-closed: a rule with a bad part (selector, CIDR, port, protocol) is dropped as a
    /// whole, so the policy still isolates what it selects and only allows less. A bad
    /// item of policy-for is dropped (the policy still applies to the others). A bad
    /// `podSelector` or a missing name makes the whole policy unusable: it is an error.
    pub fn from_multi(policy: &MultiNetworkPolicy) -> Result<Parsed<Self>, ObjectError> {
        let (namespace, name) = namespaced_name(&policy.metadata, Kind::MultiNetworkPolicy)?;
        let key = PolicyKey {
            kind: PolicyKind::MultiNetworkPolicy,
            namespace,
            name,
        };
        let mut errors = Vec::new();
        let mut networks = BTreeSet::new();
        if let Some(value) = policy
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POLICY_FOR_ANNOTATION))
        {
            for item in value.split(',') {
                match NetworkRef::parse(item, &key.namespace) {
                    Ok(network) => {
                        networks.insert(network);
                    }
                    Err(e) => errors.push(ObjectError {
                        object: key.object_key(),
                        field: format!("metadata.annotations[{POLICY_FOR_ANNOTATION}]"),
                        problem: e.to_string(),
                    }),
                }
            }
        }
        Self::from_spec(key, networks, &policy.spec.policy, errors)
    }

    /// Converts a NetworkPolicy; it applies to the networks configured for standard policy.
    pub fn from_network_policy(
        policy: &NetworkPolicy,
        standard_policy_networks: &BTreeSet<NetworkRef>,
    ) -> Result<Parsed<Self>, ObjectError> {
        let (namespace, name) = namespaced_name(&policy.metadata, Kind::NetworkPolicy)?;
        let key = PolicyKey {
            kind: PolicyKind::NetworkPolicy,
            namespace,
            name,
        };
        let spec = policy.spec.clone().unwrap_or_default();
        Self::from_spec(key, standard_policy_networks.clone(), &spec, Vec::new())
    }

    fn from_spec(
        key: PolicyKey,
        networks: BTreeSet<NetworkRef>,
        spec: &NetworkPolicySpec,
        mut errors: Vec<ObjectError>,
    ) -> Result<Parsed<Self>, ObjectError> {
        let object = key.object_key();
        let pod_selector = match &spec.pod_selector {
            Some(selector) => LabelSelector::parse(selector, &object, "spec.podSelector")?,
            None => LabelSelector::everything(),
        };
        let egress_listed = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        let (isolates_ingress, isolates_egress) = match &spec.policy_types {
            // NetworkPolicy's defaulting: Ingress always, Egress when there are egress rules.
            None => (true, egress_listed),
            Some(types) => {
                let (mut ingress, mut egress) = (false, false);
                for (i, t) in types.iter().enumerate() {
                    match t.as_str() {
                        "Ingress" => ingress = true,
                        "Egress" => egress = true,
                        other => errors.push(ObjectError {
                            object: object.clone(),
                            field: format!("spec.policyTypes[{i}]"),
                            problem: format!("{other:?} is not Ingress or Egress"),
                        }),
                    }
                }
                (ingress, egress)
            }
        };
        let mut rules = |direction: Direction, raw: Vec<RawRule>| {
            let (name, peers_name) = match direction {
                Direction::Ingress => ("spec.ingress", "from"),
                Direction::Egress => ("spec.egress", "to"),
            };
            raw.into_iter()
                .enumerate()
                .filter_map(|(index, (peers, ports))| {
                    let field = format!("{name}[{index}]");
                    match rule(index, peers, ports, &object, &field, peers_name) {
                        Ok(rule) => Some(rule),
                        Err(e) => {
                            errors.push(e);
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        };
        let ingress = rules(
            Direction::Ingress,
            spec.ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                .collect(),
        );
        let egress = rules(
            Direction::Egress,
            spec.egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                .collect(),
        );
        Ok(Parsed {
            view: Self {
                key,
                networks,
                pod_selector,
                isolates_ingress,
                isolates_egress,
                ingress,
                egress,
            },
            errors,
        })
    }
}

fn rule(
    index: usize,
    peers: Option<&Vec<NetworkPolicyPeer>>,
    ports: Option<&Vec<NetworkPolicyPort>>,
    object: &ObjectKey,
    field: &str,
    peers_name: &str,
) -> Result<RuleView, ObjectError> {
    let peers = match peers {
        None => RulePeers::Any,
        Some(list) if list.is_empty() => RulePeers::Any,
        Some(list) => RulePeers::Listed(
            list.iter()
                .enumerate()
                .map(|(i, p)| peer(p, object, &format!("{field}.{peers_name}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
    };
    let ports = match ports {
        None => RulePorts::Any,
        Some(list) if list.is_empty() => RulePorts::Any,
        Some(list) => RulePorts::Listed(
            list.iter()
                .enumerate()
                .map(|(i, p)| {
                    port_entry(p).map_err(|problem| ObjectError {
                        object: object.clone(),
                        field: format!("{field}.ports[{i}]"),
                        problem,
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(RuleView {
        index,
        peers,
        ports,
    })
}

fn peer(peer: &NetworkPolicyPeer, object: &ObjectKey, field: &str) -> Result<Peer, ObjectError> {
    let error = |field: String, problem: &str| ObjectError {
        object: object.clone(),
        field,
        problem: problem.to_owned(),
    };
    match (&peer.ip_block, &peer.namespace_selector, &peer.pod_selector) {
        (Some(block), None, None) => ip_block(block, object, &format!("{field}.ipBlock")),
        (Some(_), _, _) => Err(error(
            field.to_owned(),
            "ipBlock cannot be combined with podSelector or namespaceSelector",
        )),
        (None, None, None) => Err(error(
            field.to_owned(),
            "a peer needs podSelector, namespaceSelector or ipBlock",
        )),
        (None, namespaces, pods) => Ok(Peer::Pods {
            namespaces: match namespaces {
                Some(s) => NamespaceScope::Selected(LabelSelector::parse(
                    s,
                    object,
                    &format!("{field}.namespaceSelector"),
                )?),
                None => NamespaceScope::Own,
            },
            pods: match pods {
                Some(s) => LabelSelector::parse(s, object, &format!("{field}.podSelector"))?,
                None => LabelSelector::everything(),
            },
        }),
    }
}

fn ip_block(
    block: &k8s_openapi::api::networking::v1::IPBlock,
    object: &ObjectKey,
    field: &str,
) -> Result<Peer, ObjectError> {
    let error = |field: String, problem: String| ObjectError {
        object: object.clone(),
        field,
        problem,
    };
    let cidr: IpNet = block
        .cidr
        .parse::<IpNet>()
        .map_err(|e| error(format!("{field}.cidr"), format!("{:?}: {e}", block.cidr)))?
        .trunc();
    let mut except = Vec::new();
    for (i, raw) in block.except.iter().flatten().enumerate() {
        let field = format!("{field}.except[{i}]");
        let net = raw
            .parse::<IpNet>()
            .map_err(|e| error(field.clone(), format!("{raw:?}: {e}")))?
            .trunc();
        if !cidr.contains(&net) {
            return Err(error(field, format!("{net} is not inside cidr {cidr}")));
        }
        except.push(net);
    }
    Ok(Peer::Block(PeerBlock { cidr, except }))
}

fn port_entry(port: &NetworkPolicyPort) -> Result<PortEntry, String> {
    let protocol = match &port.protocol {
        Some(protocol) => parse_protocol(protocol)?,
        None => Protocol::Tcp,
    };
    let number = |n: i32, what: &str| {
        u16::try_from(n)
            .ok()
            .filter(|n| *n != 0)
            .ok_or_else(|| format!("{what} {n} is not in 1-65535"))
    };
    let port = match (&port.port, port.end_port) {
        (None, None) => PortSpec::All,
        (None, Some(_)) => return Err("endPort needs port".into()),
        (Some(IntOrString::Int(n)), end) => {
            let first = number(*n, "port")?;
            let last = match end {
                Some(end) => number(end, "endPort")?,
                None => first,
            };
            if last < first {
                return Err(format!("endPort {last} is below port {first}"));
            }
            PortSpec::Range(PortRange { first, last })
        }
        (Some(IntOrString::String(_)), Some(_)) => {
            return Err("endPort cannot be used with a named port".into())
        }
        (Some(IntOrString::String(name)), None) if name.is_empty() => {
            return Err("port name is empty".into())
        }
        (Some(IntOrString::String(name)), None) => PortSpec::Named(name.clone()),
    };
    Ok(PortEntry { protocol, port })
}

fn parse_protocol(protocol: &str) -> Result<Protocol, String> {
    match protocol {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(format!("protocol {other:?} is not TCP, UDP or SCTP")),
    }
}

fn namespaced_name(meta: &meta::ObjectMeta, kind: Kind) -> Result<(String, String), ObjectError> {
    let name = meta.name.clone().unwrap_or_default();
    let missing = |field: &str| ObjectError {
        object: ObjectKey {
            kind,
            namespace: meta.namespace.clone(),
            name: name.clone(),
        },
        field: field.to_owned(),
        problem: "missing".into(),
    };
    if name.is_empty() {
        return Err(missing("metadata.name"));
    }
    let namespace = meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| missing("metadata.namespace"))?;
    Ok((namespace, name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn multi(spec: serde_json::Value, policy_for: &str) -> Result<Parsed<PolicyView>, ObjectError> {
        let policy: MultiNetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1beta2", "kind": "MultiNetworkPolicy",
            "metadata": {"name": "p", "namespace": "ns",
                         "annotations": {POLICY_FOR_ANNOTATION: policy_for}},
            "spec": spec,
        }))
        .unwrap();
        PolicyView::from_multi(&policy)
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_have_full_kubernetes_semantics() {
        let selector: meta::LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
            ],
        }))
        .unwrap();
        let key = ObjectKey {
            kind: Kind::NetworkPolicy,
            namespace: Some("ns".into()),
            name: "p".into(),
        };
        let selector = LabelSelector::parse(&selector, &key, "spec.podSelector").unwrap();
        let base = [("app", "web"), ("team", "x"), ("env", "staging")];
        assert!(
            selector.matches(&labels(&base)),
            "NotIn matches a pod without the key"
        );
        assert!(!selector.matches(&labels(&[base[0], base[1], base[2], ("tier", "db")])));
        assert!(selector.matches(&labels(&[base[0], base[1], base[2], ("tier", "web")])));
        assert!(!selector.matches(&labels(&[base[0], base[1], base[2], ("legacy", "")])));
        assert!(!selector.matches(&labels(&[base[0], base[1], ("env", "dev")])));
        assert!(!selector.matches(&labels(&[base[0], base[2]])));
        assert!(LabelSelector::everything().matches(&Labels::default()));
    }

    #[test]
    fn bad_selectors_name_the_policy_and_the_field() {
        for (expression, problem) in [
            (
                json!({"key": "a", "operator": "Like", "values": ["x"]}),
                "\"Like\" is not In, NotIn, Exists or DoesNotExist",
            ),
            (
                json!({"key": "a", "operator": "NotIn"}),
                "needs at least one value",
            ),
            (
                json!({"key": "a", "operator": "Exists", "values": ["x"]}),
                "takes no values",
            ),
        ] {
            let spec = json!({"podSelector": {"matchExpressions": [{"key": "ok", "operator": "Exists"}, expression]}});
            let error = multi(spec, "net").unwrap_err().to_string();
            assert!(
                error
                    .starts_with("MultiNetworkPolicy ns/p: spec.podSelector.matchExpressions[1]: "),
                "{error}"
            );
            assert!(error.contains(problem), "{error}");
        }
    }

    #[test]
    fn policy_types_default_as_network_policy() {
        let view = |spec| multi(spec, "net").unwrap().view;
        let v = view(json!({"podSelector": {}}));
        assert!(v.isolates_ingress && !v.isolates_egress);
        let v = view(json!({"podSelector": {}, "egress": [{}]}));
        assert!(v.isolates_ingress && v.isolates_egress);
        let v = view(json!({"podSelector": {}, "egress": []}));
        assert!(
            v.isolates_ingress && !v.isolates_egress,
            "an empty egress list is no egress rule"
        );
        let v = view(json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}));
        assert!(!v.isolates_ingress && v.isolates_egress);
    }

    #[test]
    fn policy_for_names_networks_with_the_policys_namespace_as_default() {
        let v = multi(json!({}), "net-a, other/net-b").unwrap().view;
        let names: Vec<String> = v.networks.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["ns/net-a", "other/net-b"]);
    }

    #[test]
    fn ports_default_to_tcp_and_bad_ports_drop_their_rule_with_the_field() {
        let parsed = multi(
            json!({"ingress": [
                {"ports": [{}, {"protocol": "UDP"}, {"port": 80, "endPort": 90}, {"port": "web"}]},
                {"ports": [{"port": "web", "endPort": 90}]},
                {"ports": [{"port": 90, "endPort": 80}]},
                {"ports": [{"protocol": "ICMP"}]},
                {"from": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.1.0.0/24"]}}]},
                {"from": [{}]},
            ]}),
            "net",
        )
        .unwrap();
        let ports = &parsed.view.ingress[0].ports;
        assert_eq!(
            ports,
            &RulePorts::Listed(vec![
                PortEntry {
                    protocol: Protocol::Tcp,
                    port: PortSpec::All
                },
                PortEntry {
                    protocol: Protocol::Udp,
                    port: PortSpec::All
                },
                PortEntry {
                    protocol: Protocol::Tcp,
                    port: PortSpec::Range(PortRange {
                        first: 80,
                        last: 90
                    })
                },
                PortEntry {
                    protocol: Protocol::Tcp,
                    port: PortSpec::Named("web".into())
                },
            ])
        );
        assert_eq!(parsed.view.ingress.len(), 1, "the bad rules are dropped");
        let errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 5, "{errors:?}");
        for (error, (field, problem)) in errors.iter().zip([
            ("spec.ingress[1].ports[0]", "named port"),
            ("spec.ingress[2].ports[0]", "below port"),
            ("spec.ingress[3].ports[0]", "\"ICMP\""),
            (
                "spec.ingress[4].from[0].ipBlock.except[0]",
                "not inside cidr",
            ),
            (
                "spec.ingress[5].from[0]",
                "needs podSelector, namespaceSelector or ipBlock",
            ),
        ]) {
            assert!(error.contains(field) && error.contains(problem), "{error}");
        }
    }

    #[test]
    fn pods_read_the_cluster_network_entry_only_when_asked() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "annotations": {NETWORK_STATUS_ANNOTATION: json!([
                {"name": "cbr0", "interface": "eth0", "ips": ["10.244.0.5"], "default": true},
                {"name": "ns/macvlan", "interface": "net1", "ips": ["192.168.1.205", "fd00::5"]},
            ]).to_string()}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                {"name": "web", "containerPort": 80},
                {"name": "bad", "containerPort": 80, "protocol": "ICMP"},
            ]}]},
        }))
        .unwrap();
        let parsed = PodView::from_pod(&pod, false).unwrap();
        assert_eq!(parsed.view.interfaces.len(), 1);
        let network: NetworkRef = "ns/macvlan".parse().unwrap();
        assert_eq!(parsed.view.addresses_on(&network).count(), 2);
        let with_cluster = PodView::from_pod(&pod, true).unwrap().view;
        let cluster: Vec<IpAddr> = with_cluster.addresses_on(&cluster_network()).collect();
        assert_eq!(cluster, ["10.244.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(with_cluster.interfaces[0].interface.as_str(), "eth0");
        assert_eq!(
            parsed
                .view
                .resolve_named_port("web", Protocol::Tcp)
                .collect::<Vec<_>>(),
            [80]
        );
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0]
            .to_string()
            .contains("Pod ns/p: spec.containers[0].ports[1]"));
    }

    #[test]
    fn namespaces_carry_their_name_label() {
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "prod", "labels": {"team": "x"}}}))
                .unwrap();
        let view = NamespaceView::from_namespace(&namespace).unwrap();
        assert_eq!(
            view.labels,
            labels(&[("team", "x"), (NAMESPACE_NAME_LABEL, "prod")])
        );
    }
}
