//! The engine's copy of the cluster: typed views plus the indexes that let a change find
//! what it affects, and the errors of objects that did not convert.
use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use netwarden_cni::NetworkRef;

use crate::cluster::{
    objects::{
        cluster_network, NamespaceView, ObjectError, Parsed, PodKey, PodView, PolicyKey,
        PolicyKind, PolicyView,
    },
    ClusterEvent, Kind, Object, ObjectKey,
};

/// One object that changed: its view before and after (None = absent).
#[derive(Debug, Clone)]
pub(crate) enum Touched {
    /// Shared with the state: a resync touches every pod of the cluster.
    Pod(Option<Arc<PodView>>, Option<Arc<PodView>>),
    Namespace(String, Option<NamespaceView>, Option<NamespaceView>),
    Policy(Option<Arc<PolicyView>>, Option<Arc<PolicyView>>),
}

#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    /// By namespace, then name: the cluster's pods are most of the engine's memory, so
    /// they are kept once, with no other index.
    pods: BTreeMap<String, BTreeMap<String, Arc<PodView>>>,
    pub namespaces: BTreeMap<String, NamespaceView>,
    /// Shared with the selections, which keep the policies using each.
    pub policies: BTreeMap<PolicyKey, Arc<PolicyView>>,
    pub policies_by_namespace: BTreeMap<String, BTreeSet<PolicyKey>>,
    pub policies_by_network: BTreeMap<NetworkRef, BTreeSet<PolicyKey>>,
    pub errors: BTreeMap<ObjectKey, Vec<ObjectError>>,
    /// May hold [`cluster_network`]: then pods' cluster-network interfaces are read too.
    standard_policy_networks: BTreeSet<NetworkRef>,
    with_cluster_network: bool,
}

impl ClusterState {
    pub fn new(standard_policy_networks: BTreeSet<NetworkRef>) -> Self {
        Self {
            with_cluster_network: standard_policy_networks.contains(&cluster_network()),
            standard_policy_networks,
            ..Self::default()
        }
    }

    /// A network some policy lists: its pod interfaces are endpoints.
    pub fn is_covered(&self, network: &NetworkRef) -> bool {
        self.policies_by_network
            .get(network)
            .is_some_and(|p| !p.is_empty())
    }

    pub fn covered_networks(&self) -> BTreeSet<NetworkRef> {
        self.policies_by_network.keys().cloned().collect()
    }

    pub fn namespace(&self, name: &str) -> Cow<'_, NamespaceView> {
        match self.namespaces.get(name) {
            Some(namespace) => Cow::Borrowed(namespace),
            None => Cow::Owned(NamespaceView::unlabelled(name)),
        }
    }

    /// All namespaces that hold pods or exist as objects.
    pub fn namespace_names(&self) -> BTreeSet<&String> {
        self.namespaces.keys().chain(self.pods.keys()).collect()
    }

    pub fn pod(&self, key: &PodKey) -> Option<&PodView> {
        self.pods.get(&key.namespace)?.get(&key.name).map(|p| &**p)
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodView> {
        self.pods.values().flat_map(|n| n.values()).map(|p| &**p)
    }

    pub fn pods_in(&self, namespace: &str) -> impl Iterator<Item = &PodView> {
        self.pods
            .get(namespace)
            .into_iter()
            .flat_map(|n| n.values())
            .map(|p| &**p)
    }

    pub fn apply(&mut self, event: &ClusterEvent) -> Vec<Touched> {
        match event {
            ClusterEvent::Applied(object) => self.applied(object).into_iter().collect(),
            ClusterEvent::Deleted(key) => self.deleted(key).into_iter().collect(),
            ClusterEvent::Resynced(kind, objects) => {
                // Borrowed: a resync lists every pod of the cluster.
                let keep: BTreeSet<(Option<&str>, &str)> = objects
                    .iter()
                    .filter_map(|o| {
                        let metadata = o.metadata();
                        Some((metadata.namespace.as_deref(), metadata.name.as_deref()?))
                    })
                    .collect();
                let gone: Vec<ObjectKey> = self
                    .keys_of(*kind)
                    .into_iter()
                    .filter(|k| !keep.contains(&(k.namespace.as_deref(), k.name.as_str())))
                    .collect();
                let mut touched: Vec<Touched> =
                    gone.iter().filter_map(|k| self.deleted(k)).collect();
                touched.extend(objects.iter().filter_map(|o| self.applied(o)));
                touched
            }
        }
    }

    fn keys_of(&self, kind: Kind) -> Vec<ObjectKey> {
        let namespaced = |namespace: &str, name: &str| ObjectKey {
            kind,
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        };
        let mut keys: Vec<ObjectKey> = match kind {
            Kind::Pod => self
                .pods()
                .map(|p| namespaced(&p.key.namespace, &p.key.name))
                .collect(),
            Kind::Namespace => self
                .namespaces
                .keys()
                .map(|name| ObjectKey {
                    kind,
                    namespace: None,
                    name: name.clone(),
                })
                .collect(),
            Kind::MultiNetworkPolicy | Kind::NetworkPolicy => self
                .policies
                .keys()
                .map(PolicyKey::object_key)
                .filter(|k| k.kind == kind)
                .collect(),
            Kind::NetworkAttachmentDefinition => Vec::new(),
        };
        // Objects known only by their errors go too.
        keys.extend(self.errors.keys().filter(|k| k.kind == kind).cloned());
        keys
    }

    fn applied(&mut self, object: &Object) -> Option<Touched> {
        let key = object_key(object)?;
        match object {
            Object::Pod(pod) => {
                let parsed = PodView::from_pod(pod, self.with_cluster_network);
                let view = Arc::new(self.record(&key, parsed)?);
                let old = self.remove_pod(&view.key);
                self.insert_pod(view.clone());
                Some(Touched::Pod(old, Some(view)))
            }
            Object::Namespace(namespace) => {
                let parsed = NamespaceView::from_namespace(namespace).map(|view| Parsed {
                    view,
                    errors: Vec::new(),
                });
                let view = self.record(&key, parsed)?;
                let old = self.namespaces.insert(view.name.clone(), view.clone());
                Some(Touched::Namespace(view.name.clone(), old, Some(view)))
            }
            Object::MultiNetworkPolicy(policy) => {
                let parsed = PolicyView::from_multi(policy);
                self.apply_policy(&key, parsed)
            }
            Object::NetworkPolicy(policy) => {
                let parsed =
                    PolicyView::from_network_policy(policy, &self.standard_policy_networks);
                self.apply_policy(&key, parsed)
            }
            Object::NetworkAttachmentDefinition(_) => None,
        }
    }

    fn apply_policy(
        &mut self,
        key: &ObjectKey,
        parsed: Result<Parsed<PolicyView>, ObjectError>,
    ) -> Option<Touched> {
        let view = Arc::new(self.record(key, parsed)?);
        let old = self.remove_policy(&view.key);
        self.insert_policy(view.clone());
        Some(Touched::Policy(old, Some(view)))
    }

    /// Records the conversion's errors under `key` (replacing earlier ones). An object
    /// that did not convert at all leaves its previous version in place: for a policy
    /// that keeps enforcing what was last readable rather than opening traffic.
    fn record<T>(&mut self, key: &ObjectKey, parsed: Result<Parsed<T>, ObjectError>) -> Option<T> {
        self.errors.remove(key);
        match parsed {
            Ok(Parsed { view, errors }) => {
                if !errors.is_empty() {
                    self.errors.insert(key.clone(), errors);
                }
                Some(view)
            }
            Err(error) => {
                self.errors.insert(key.clone(), vec![error]);
                None
            }
        }
    }

    fn deleted(&mut self, key: &ObjectKey) -> Option<Touched> {
        self.errors.remove(key);
        let namespace = key.namespace.clone().unwrap_or_default();
        match key.kind {
            Kind::Pod => {
                let old = self.remove_pod(&PodKey {
                    namespace,
                    name: key.name.clone(),
                })?;
                Some(Touched::Pod(Some(old), None))
            }
            Kind::Namespace => {
                let old = self.namespaces.remove(&key.name)?;
                Some(Touched::Namespace(key.name.clone(), Some(old), None))
            }
            Kind::MultiNetworkPolicy | Kind::NetworkPolicy => {
                let old = self.remove_policy(&PolicyKey {
                    kind: if key.kind == Kind::NetworkPolicy {
                        PolicyKind::NetworkPolicy
                    } else {
                        PolicyKind::MultiNetworkPolicy
                    },
                    namespace,
                    name: key.name.clone(),
                })?;
                Some(Touched::Policy(Some(old), None))
            }
            Kind::NetworkAttachmentDefinition => None,
        }
    }

    fn insert_pod(&mut self, pod: Arc<PodView>) {
        self.pods
            .entry(pod.key.namespace.clone())
            .or_default()
            .insert(pod.key.name.clone(), pod);
    }

    fn remove_pod(&mut self, key: &PodKey) -> Option<Arc<PodView>> {
        let pods = self.pods.get_mut(&key.namespace)?;
        let pod = pods.remove(&key.name)?;
        if pods.is_empty() {
            self.pods.remove(&key.namespace);
        }
        Some(pod)
    }

    fn insert_policy(&mut self, policy: Arc<PolicyView>) {
        self.policies_by_namespace
            .entry(policy.key.namespace.clone())
            .or_default()
            .insert(policy.key.clone());
        for network in &policy.networks {
            self.policies_by_network
                .entry(network.clone())
                .or_default()
                .insert(policy.key.clone());
        }
        self.policies.insert(policy.key.clone(), policy);
    }

    fn remove_policy(&mut self, key: &PolicyKey) -> Option<Arc<PolicyView>> {
        let policy = self.policies.remove(key)?;
        remove_indexed(&mut self.policies_by_namespace, &key.namespace, key);
        for network in &policy.networks {
            remove_indexed(&mut self.policies_by_network, network, key);
        }
        Some(policy)
    }
}

fn remove_indexed<K: Ord + Clone, V: Ord>(index: &mut BTreeMap<K, BTreeSet<V>>, at: &K, value: &V) {
    if let Some(set) = index.get_mut(at) {
        set.remove(value);
        if set.is_empty() {
            index.remove(at);
        }
    }
}

/// The key of an object as its metadata names it; None when it has no name at all (such
/// an object cannot be tracked, changed or deleted).
fn object_key(object: &Object) -> Option<ObjectKey> {
    object.metadata().name.as_ref().map(|_| object.key())
}
