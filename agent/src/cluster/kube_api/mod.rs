//! Cluster state from the Kubernetes API: one kube-rs watcher per resource (reconnects
//! with backoff, relists after 410 Gone, bookmarks on), merged into one event stream.
pub mod access;
mod pod_fields;
mod resync;

use std::fmt::Debug;

use futures::{
    future,
    stream::{self, BoxStream},
    StreamExt,
};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use kube::{
    api::{ListParams, Patch, PatchParams},
    runtime::{
        events::{Event, EventType, Recorder, Reporter},
        watcher, WatchStreamExt,
    },
    Api, Client, Resource,
};
use netwarden_cni::status::{render_network_status, NetworkStatus, NETWORK_STATUS_ANNOTATION};
use serde::de::DeserializeOwned;

use super::{
    crd::{v1beta1, v1beta2, NetworkAttachmentDefinition},
    source::{ClusterSource, NodeName, PodRef, SourceError},
    ClusterEvent, Kind, Object,
};
use resync::Resync;

const MULTI_POLICY_V1BETA1: &str = "k8s.cni.cncf.io/v1beta1 multi-networkpolicies";
const MULTI_POLICY_V1BETA2: &str = "k8s.cni.cncf.io/v1beta2 multi-networkpolicies";

/// The Kubernetes API as a cluster source.
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    node: NodeName,
    /// Shared by every report, so repeats of one failure become one Event with a count.
    recorder: Box<Recorder>,
}

impl KubeSource {
    /// Pods on `node` are kept in full, the others cut to what the engine reads.
    pub fn new(client: Client, node: NodeName) -> Self {
        let recorder = Box::new(Recorder::new(
            client.clone(),
            Reporter {
                controller: "netwarden".into(),
                instance: Some(node.0.clone()),
            },
        ));
        Self {
            client,
            node,
            recorder,
        }
    }

    /// A client configured from the environment (in-cluster service account or kubeconfig).
    pub async fn from_environment(node: NodeName) -> Result<Self, SourceError> {
        let client = Client::try_default()
            .await
            .map_err(SourceError::KubeConfig)?;
        Ok(Self::new(client, node))
    }

    /// One stream per watched resource; MultiNetworkPolicy per served version.
    async fn watches(self) -> Vec<BoxStream<'static, Result<ClusterEvent, SourceError>>> {
        let client = self.client;
        let node = self.node;
        let mut watches = vec![
            watch(
                Api::<Pod>::all(client.clone()),
                Kind::Pod,
                "v1 pods",
                move |pod| Object::Pod(Box::new(pod_fields::keep_needed_fields(pod, &node))),
            ),
            watch(
                Api::<Namespace>::all(client.clone()),
                Kind::Namespace,
                "v1 namespaces",
                |namespace| Object::Namespace(Box::new(namespace)),
            ),
            watch(
                Api::<NetworkAttachmentDefinition>::all(client.clone()),
                Kind::NetworkAttachmentDefinition,
                "k8s.cni.cncf.io/v1 network-attachment-definitions",
                |nad| Object::NetworkAttachmentDefinition(Box::new(nad)),
            ),
            watch(
                Api::<NetworkPolicy>::all(client.clone()),
                Kind::NetworkPolicy,
                "networking.k8s.io/v1 networkpolicies",
                |policy| Object::NetworkPolicy(Box::new(policy)),
            ),
        ];
        let v1beta1 = Api::<v1beta1::MultiNetworkPolicy>::all(client.clone());
        let v1beta2 = Api::<v1beta2::MultiNetworkPolicy>::all(client);
        let (v1beta1_served, v1beta2_served) = future::join(
            served(&v1beta1, MULTI_POLICY_V1BETA1),
            served(&v1beta2, MULTI_POLICY_V1BETA2),
        )
        .await;
        for problem in [&v1beta1_served, &v1beta2_served]
            .into_iter()
            .filter_map(|s| s.as_ref().err())
        {
            tracing::warn!("{problem}");
        }
        let v1beta1_served = v1beta1_served.unwrap_or(true);
        let v1beta2_served = v1beta2_served.unwrap_or(true);
        if v1beta1_served {
            watches.push(watch(
                v1beta1,
                Kind::MultiNetworkPolicy,
                MULTI_POLICY_V1BETA1,
                |policy| Object::MultiNetworkPolicy(Box::new(to_v1beta2(policy))),
            ));
        }
        // Without either version (CRD not installed yet) the v1beta2 watcher retries with
        // backoff until it appears.
        if v1beta2_served || !v1beta1_served {
            watches.push(watch(
                v1beta2,
                Kind::MultiNetworkPolicy,
                MULTI_POLICY_V1BETA2,
                |policy| Object::MultiNetworkPolicy(Box::new(policy)),
            ));
        }
        watches
    }
}

impl ClusterSource for KubeSource {
    /// Both MultiNetworkPolicy versions are views of the same objects when both are
    /// served, so each policy may arrive twice (identical after conversion).
    fn events(&self) -> BoxStream<'static, Result<ClusterEvent, SourceError>> {
        stream::once(self.clone().watches())
            .flat_map(stream::select_all)
            .boxed()
    }

    async fn write_network_status(
        &self,
        pod: &PodRef,
        entries: &[NetworkStatus],
    ) -> Result<(), SourceError> {
        // A merge patch of one annotation: no resourceVersion precondition, so no conflict
        // to retry, and concurrent writers of other fields are untouched.
        let patch = serde_json::json!({
            "metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: render_network_status(entries)}}
        });
        Api::<Pod>::namespaced(self.client.clone(), &pod.namespace)
            .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| SourceError::Patch {
                pod: pod.clone(),
                source,
            })?;
        Ok(())
    }

    /// A Warning Event `AttachFailed` on the pod (what `kubectl describe pod` shows),
    /// reported by `netwarden` on this node; repeats become one Event with a count.
    async fn report_attach_failure(&self, pod: &Pod, message: &str) -> Result<(), SourceError> {
        // The API refuses notes over 1 kB.
        let note: String = message.chars().take(1000).collect();
        let event = Event {
            type_: EventType::Warning,
            reason: "AttachFailed".into(),
            note: Some(note),
            action: "Attach".into(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &pod.object_ref(&()))
            .await
            .map_err(|source| SourceError::Event {
                pod: PodRef {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: pod.metadata.name.clone().unwrap_or_default(),
                },
                source,
            })
    }
}

/// The cluster events of one resource, forever: the watcher recovers from every error
/// after a backoff, and each error is passed on as an `Err` item.
fn watch<K>(
    api: Api<K>,
    kind: Kind,
    resource: &'static str,
    to_object: impl FnMut(K) -> Object + Send + 'static,
) -> BoxStream<'static, Result<ClusterEvent, SourceError>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut resync = Resync::new(kind, to_object);
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            future::ready(match event {
                Ok(event) => resync.step(event).map(Ok),
                Err(source) => Some(Err(SourceError::Watch { resource, source })),
            })
        })
        .boxed()
}

/// Whether the API serves `api`'s resource (a 404 means this version is not served).
async fn served<K>(api: &Api<K>, resource: &'static str) -> Result<bool, SourceError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            tracing::info!("{resource} not served; watching without it");
            Ok(false)
        }
        Err(source) => Err(SourceError::Discovery { resource, source }),
    }
}

/// v1beta1 and v1beta2 MultiNetworkPolicy have the same spec.
fn to_v1beta2(policy: v1beta1::MultiNetworkPolicy) -> v1beta2::MultiNetworkPolicy {
    v1beta2::MultiNetworkPolicy {
        metadata: policy.metadata,
        spec: v1beta2::MultiNetworkPolicySpec {
            policy: policy.spec.policy,
        },
    }
}
