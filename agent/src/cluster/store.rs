//! The current cluster objects, kept up to date from a source's [`ClusterEvent`]s, with the
//! lookups the attach service needs. Reads are synchronous (a short lock); a pod the
//! runtime asks about before the watch delivered it can be awaited, bounded.
use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use netwarden_cni::NetworkRef;
use tokio::sync::watch;

use super::{
    crd::NetworkAttachmentDefinition, source::PodRef, source::SourceError, ClusterEvent, Kind,
    Object, ObjectKey,
};

/// The objects of every kind, by key. Cloning shares the same store.
#[derive(Clone)]
pub struct Store {
    objects: Arc<RwLock<BTreeMap<ObjectKey, Object>>>,
    /// Bumped after every applied event: waiters look again.
    changed: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            objects: Arc::default(),
            changed: watch::Sender::new(0),
        }
    }
}

/// Why [`Store::wait_for_pod`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodWaitError {
    #[error("pod {pod} is not in the cluster state after {waited:?}")]
    Missing { pod: PodRef, waited: Duration },
    #[error("pod {pod} has UID {found:?}, not the runtime's {wanted:?}, after {waited:?}")]
    OtherUid {
        pod: PodRef,
        wanted: String,
        found: String,
        waited: Duration,
    },
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event.
    pub fn apply(&self, event: ClusterEvent) {
        {
            let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
            match event {
                ClusterEvent::Applied(object) => {
                    objects.insert(object.key(), object);
                }
                ClusterEvent::Deleted(key) => {
                    objects.remove(&key);
                }
                ClusterEvent::Resynced(kind, fresh) => {
                    objects.retain(|key, _| key.kind != kind);
                    objects.extend(fresh.into_iter().map(|o| (o.key(), o)));
                }
            }
        }
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// Applies `events` until the stream ends, logging the errors sources report (they
    /// retry by themselves).
    pub async fn follow(
        &self,
        events: impl Stream<Item = Result<ClusterEvent, SourceError>> + Send,
    ) {
        let mut events = std::pin::pin!(events);
        while let Some(item) = events.next().await {
            match item {
                Ok(event) => self.apply(event),
                Err(problem) => tracing::warn!("cluster state: {problem}"),
            }
        }
    }

    fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Option<Object> {
        let key = ObjectKey {
            kind,
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        };
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects.get(&key).cloned()
    }

    pub fn pod(&self, pod: &PodRef) -> Option<Pod> {
        match self.get(Kind::Pod, Some(&pod.namespace), &pod.name)? {
            Object::Pod(pod) => Some(*pod),
            _ => None,
        }
    }

    pub fn network_attachment_definition(
        &self,
        network: &NetworkRef,
    ) -> Option<NetworkAttachmentDefinition> {
        match self.get(
            Kind::NetworkAttachmentDefinition,
            Some(&network.namespace),
            &network.name,
        )? {
            Object::NetworkAttachmentDefinition(nad) => Some(*nad),
            _ => None,
        }
    }

    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        match self.get(Kind::Namespace, None, name)? {
            Object::Namespace(namespace) => Some(*namespace),
            _ => None,
        }
    }

    /// The pod, once the store has it with UID `uid` (any UID when `uid` is empty: not
    /// every runtime sends K8S_POD_UID). Waits at most `limit` for the watch to catch up.
    pub async fn wait_for_pod(
        &self,
        pod: &PodRef,
        uid: &str,
        limit: Duration,
    ) -> Result<Pod, PodWaitError> {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            changed.borrow_and_update();
            let found = self.pod(pod);
            let found_uid = found
                .as_ref()
                .map(|p| p.metadata.uid.clone().unwrap_or_default());
            if let (Some(found), Some(found_uid)) = (&found, &found_uid) {
                if uid.is_empty() || found_uid == uid {
                    return Ok(found.clone());
                }
            }
            let waited = tokio::time::timeout_at(deadline, changed.changed()).await;
            if !matches!(waited, Ok(Ok(()))) {
                return Err(match found_uid {
                    None => PodWaitError::Missing {
                        pod: pod.clone(),
                        waited: limit,
                    },
                    Some(found) => PodWaitError::OtherUid {
                        pod: pod.clone(),
                        wanted: uid.to_owned(),
                        found,
                        waited: limit,
                    },
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(namespace: &str, name: &str, uid: &str) -> Object {
        Object::Pod(Box::new(Pod {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }))
    }

    fn nad(namespace: &str, name: &str) -> Object {
        let mut nad = NetworkAttachmentDefinition::new(name, Default::default());
        nad.metadata.namespace = Some(namespace.into());
        Object::NetworkAttachmentDefinition(Box::new(nad))
    }

    fn pod_ref(name: &str) -> PodRef {
        PodRef {
            namespace: "dev".into(),
            name: name.into(),
        }
    }

    #[test]
    fn events_add_replace_and_remove_objects() {
        let store = Store::new();
        store.apply(ClusterEvent::Resynced(
            Kind::Pod,
            vec![pod("dev", "a", "1"), pod("dev", "b", "2")],
        ));
        store.apply(ClusterEvent::Applied(nad("dev", "macvlan-conf")));
        store.apply(ClusterEvent::Applied(pod("dev", "a", "3")));
        let a = store.pod(&pod_ref("a")).unwrap();
        assert_eq!(a.metadata.uid.as_deref(), Some("3"));
        let network = NetworkRef::parse("macvlan-conf", "dev").unwrap();
        assert!(store.network_attachment_definition(&network).is_some());

        store.apply(ClusterEvent::Resynced(
            Kind::Pod,
            vec![pod("dev", "b", "2")],
        ));
        assert!(
            store.pod(&pod_ref("a")).is_none(),
            "resync keeps a gone pod"
        );
        assert!(
            store.network_attachment_definition(&network).is_some(),
            "a pod resync dropped a NAD"
        );
        store.apply(ClusterEvent::Deleted(ObjectKey {
            kind: Kind::NetworkAttachmentDefinition,
            namespace: Some("dev".into()),
            name: "macvlan-conf".into(),
        }));
        assert!(store.network_attachment_definition(&network).is_none());
        assert!(store.namespace("dev").is_none());
    }

    #[tokio::test]
    async fn waiting_for_a_pod_sees_it_arrive_with_the_right_uid() {
        let store = Store::new();
        store.apply(ClusterEvent::Applied(pod("dev", "a", "old")));
        let later = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            later.apply(ClusterEvent::Applied(pod("dev", "b", "x")));
            tokio::time::sleep(Duration::from_millis(50)).await;
            later.apply(ClusterEvent::Applied(pod("dev", "a", "new")));
        });
        let found = store
            .wait_for_pod(&pod_ref("a"), "new", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(found.metadata.uid.as_deref(), Some("new"));
        assert!(store
            .wait_for_pod(&pod_ref("a"), "", Duration::ZERO)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn waiting_is_bounded_and_says_what_was_missing() {
        let store = Store::new();
        store.apply(ClusterEvent::Applied(pod("dev", "a", "old")));
        let limit = Duration::from_millis(50);
        let missing = store.wait_for_pod(&pod_ref("nope"), "", limit).await;
        assert_eq!(
            missing.unwrap_err().to_string(),
            "pod dev/nope is not in the cluster state after 50ms"
        );
        let other = store.wait_for_pod(&pod_ref("a"), "new", limit).await;
        assert!(matches!(other, Err(PodWaitError::OtherUid { found, .. }) if found == "old"));
    }
}
