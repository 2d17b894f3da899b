//! Turns a watcher's events into [`ClusterEvent`]s: the objects of a relist (between
//! `Init` and `InitDone`) become one `Resynced`, so consumers never see a half-listed kind.
use std::marker::PhantomData;

use kube::runtime::watcher::Event;

use crate::cluster::{ClusterEvent, Kind, Object};

/// Per-watcher state: the objects of a relist in progress.
pub(super) struct Resync<K, F> {
    kind: Kind,
    to_object: F,
    listing: Vec<Object>,
    watched: PhantomData<fn(K)>,
}

impl<K, F: FnMut(K) -> Object> Resync<K, F> {
    pub(super) fn new(kind: Kind, to_object: F) -> Self {
        Self {
            kind,
            to_object,
            listing: Vec::new(),
            watched: PhantomData,
        }
    }

    /// The cluster event for one watcher event, if it completes one.
    pub(super) fn step(&mut self, event: Event<K>) -> Option<ClusterEvent> {
        match event {
            Event::Init => {
                self.listing.clear();
                None
            }
            Event::InitApply(object) => {
                self.listing.push((self.to_object)(object));
                None
            }
            Event::InitDone => Some(ClusterEvent::Resynced(
                self.kind,
                std::mem::take(&mut self.listing),
            )),
            Event::Apply(object) => Some(ClusterEvent::Applied((self.to_object)(object))),
            Event::Delete(object) => Some(ClusterEvent::Deleted((self.to_object)(object).key())),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::cluster::ObjectKey;

    fn namespace(name: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    fn resync() -> Resync<Namespace, impl FnMut(Namespace) -> Object> {
        Resync::new(Kind::Namespace, |n| Object::Namespace(Box::new(n)))
    }

    #[test]
    fn a_listing_becomes_one_resync_at_init_done() {
        let mut resync = resync();
        assert_eq!(resync.step(Event::Init), None);
        assert_eq!(resync.step(Event::InitApply(namespace("a"))), None);
        assert_eq!(resync.step(Event::InitApply(namespace("b"))), None);
        assert_eq!(
            resync.step(Event::InitDone),
            Some(ClusterEvent::Resynced(
                Kind::Namespace,
                vec![
                    Object::Namespace(Box::new(namespace("a"))),
                    Object::Namespace(Box::new(namespace("b")))
                ]
            ))
        );
    }

    #[test]
    fn a_relist_starts_afresh() {
        let mut resync = resync();
        resync.step(Event::Init);
        resync.step(Event::InitApply(namespace("half-listed")));
        resync.step(Event::Init);
        resync.step(Event::InitApply(namespace("b")));
        assert_eq!(
            resync.step(Event::InitDone),
            Some(ClusterEvent::Resynced(
                Kind::Namespace,
                vec![Object::Namespace(Box::new(namespace("b")))]
            ))
        );
    }

    #[test]
    fn changes_pass_through() {
        let mut resync = resync();
        assert_eq!(
            resync.step(Event::Apply(namespace("a"))),
            Some(ClusterEvent::Applied(Object::Namespace(Box::new(
                namespace("a")
            ))))
        );
        assert_eq!(
            resync.step(Event::Delete(namespace("a"))),
            Some(ClusterEvent::Deleted(ObjectKey {
                kind: Kind::Namespace,
                namespace: None,
                name: "a".to_owned()
            }))
        );
    }
}
