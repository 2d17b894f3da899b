//! The Kubernetes API cluster source against a test API server that speaks the real
//! list/watch/patch protocol over HTTP: kube-rs's own client, watcher and backoff run.
use std::{collections::BTreeMap, time::Duration};

use axum::http::Method;
use futures::{stream::BoxStream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use netwarden_agent::cluster::{
    kube_api::KubeSource,
    source::{ClusterSource, NodeName, PodRef, SourceError},
    ClusterEvent, Kind, Object, ObjectKey,
};
use netwarden_cni::status::{parse_network_status, NetworkStatus, NETWORK_STATUS_ANNOTATION};
use netwarden_tests::apiserver::{
    ApiServer, Resource, EVENTS, MULTI_POLICIES_V1BETA1, MULTI_POLICIES_V1BETA2, NAMESPACES,
    NETWORK_ATTACHMENT_DEFINITIONS, NETWORK_POLICIES, PODS,
};
use serde_json::{json, Value};

const NODE: &str = "node-a";

/// What a cluster with the upstream CRDs at their current version serves.
const SERVED: [Resource; 5] = [
    PODS,
    NAMESPACES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    MULTI_POLICIES_V1BETA2,
    NETWORK_POLICIES,
];

fn pod(name: &str, node: &str, labels: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "shop", "labels": labels,
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan-conf",
                                     "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"nodeName": node,
                 "containers": [{"name": "app", "image": "nginx",
                                 "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"phase": "Running"}
    })
}

fn policy() -> Value {
    json!({
        "metadata": {"name": "db-ingress", "namespace": "shop",
                     "annotations": {"k8s.v1.cni.cncf.io/policy-for": "macvlan-conf"}},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}
    })
}

fn seed(server: &ApiServer) {
    server.apply(
        &NAMESPACES,
        json!({"metadata": {"name": "shop", "labels": {"team": "a"}}}),
    );
    server.apply(
        &NETWORK_ATTACHMENT_DEFINITIONS,
        json!({"metadata": {"name": "macvlan-conf", "namespace": "shop"},
               "spec": {"config": "{\"cniVersion\":\"0.3.1\",\"type\":\"macvlan\",\"master\":\"eth0\"}"}}),
    );
    server.apply(
        &NETWORK_POLICIES,
        json!({"metadata": {"name": "np", "namespace": "shop"}, "spec": {"podSelector": {}}}),
    );
    server.apply(&PODS, pod("local", NODE, json!({"app": "db"})));
    server.apply(&PODS, pod("remote", "node-b", json!({"app": "web"})));
}

/// The event stream of a source, read with a deadline.
struct Events(BoxStream<'static, Result<ClusterEvent, SourceError>>);

impl Events {
    fn of(server: &ApiServer) -> (KubeSource, Self) {
        let source = KubeSource::new(server.client(), NodeName(NODE.to_owned()));
        let events = Self(source.events());
        (source, events)
    }

    async fn next(&mut self) -> Result<ClusterEvent, SourceError> {
        tokio::time::timeout(Duration::from_secs(10), self.0.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
    }

    async fn next_ok(&mut self) -> ClusterEvent {
        self.next().await.expect("no source error")
    }

    /// Reads until every watched kind has been listed once.
    async fn initial(&mut self) -> BTreeMap<Kind, Vec<Object>> {
        let mut listed = BTreeMap::new();
        while listed.len() < 5 {
            match self.next_ok().await {
                ClusterEvent::Resynced(kind, objects) => {
                    assert!(
                        listed.insert(kind, objects).is_none(),
                        "{kind:?} listed twice"
                    );
                }
                other => panic!("before the first listing is complete: {other:?}"),
            }
        }
        listed
    }

    async fn expect_quiet(&mut self, time: Duration) {
        if let Ok(event) = tokio::time::timeout(time, self.0.next()).await {
            panic!("expected no event, got {event:?}");
        }
    }
}

fn pod_of(event: ClusterEvent) -> Pod {
    match event {
        ClusterEvent::Applied(Object::Pod(pod)) => *pod,
        other => panic!("expected an applied pod, got {other:?}"),
    }
}

fn pod_key(name: &str) -> ObjectKey {
    ObjectKey {
        kind: Kind::Pod,
        namespace: Some("shop".into()),
        name: name.into(),
    }
}

fn names(objects: &[Object]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .map(|object| match object {
            Object::Pod(p) => p.metadata.name.clone().unwrap(),
            other => panic!("not a pod: {other:?}"),
        })
        .collect();
    names.sort();
    names
}

fn lists_of(server: &ApiServer, resource: &Resource) -> usize {
    let collection = format!("{}/{}", resource.prefix, resource.plural);
    server
        .requests()
        .iter()
        .filter(|r| r.collection == collection && r.method == Method::GET && !r.watch)
        .count()
}

#[tokio::test]
async fn the_initial_list_arrives_as_one_resync_per_kind_with_remote_pods_cut_down() {
    let server = ApiServer::start(&SERVED).await;
    seed(&server);
    server.apply(&MULTI_POLICIES_V1BETA2, policy());
    let (_source, mut events) = Events::of(&server);

    let listed = events.initial().await;
    assert_eq!(listed[&Kind::Namespace].len(), 1);
    assert_eq!(listed[&Kind::NetworkAttachmentDefinition].len(), 1);
    assert_eq!(listed[&Kind::NetworkPolicy].len(), 1);
    let [Object::MultiNetworkPolicy(policy)] = &listed[&Kind::MultiNetworkPolicy][..] else {
        panic!("{listed:?}")
    };
    assert_eq!(policy.metadata.name.as_deref(), Some("db-ingress"));
    let pods: BTreeMap<String, &Pod> = listed[&Kind::Pod]
        .iter()
        .map(|o| match o {
            Object::Pod(p) => (p.metadata.name.clone().unwrap(), &**p),
            other => panic!("{other:?}"),
        })
        .collect();
    let local = pods["local"];
    assert!(local.status.is_some(), "pods on this node are kept whole");
    assert_eq!(
        local.spec.as_ref().unwrap().containers[0].image.as_deref(),
        Some("nginx")
    );
    let remote = pods["remote"];
    assert_eq!(remote.status, None);
    let container = &remote.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        (
            container.image.as_deref(),
            container.ports.as_ref().unwrap()[0].container_port
        ),
        (None, 80)
    );
    let annotations = remote.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        ["k8s.v1.cni.cncf.io/networks"]
    );
    assert_eq!(remote.metadata.labels.as_ref().unwrap()["app"], "web");

    // v1beta1 is not served here (404): the source goes on without it, so the policies
    // are listed once.
    events.expect_quiet(Duration::from_millis(300)).await;
    assert_eq!(
        lists_of(&server, &MULTI_POLICIES_V1BETA2),
        2,
        "the probe and the watcher's list"
    );
}

#[tokio::test]
async fn adds_changes_and_deletes_arrive_as_events() {
    let server = ApiServer::start(&SERVED).await;
    seed(&server);
    let (_source, mut events) = Events::of(&server);
    events.initial().await;

    server.apply(&PODS, pod("new", "node-b", json!({"app": "cache"})));
    assert_eq!(
        pod_of(events.next_ok().await).metadata.name.as_deref(),
        Some("new")
    );

    server.apply(
        &PODS,
        pod("new", "node-b", json!({"app": "cache", "tier": "2"})),
    );
    let changed = pod_of(events.next_ok().await);
    assert_eq!(changed.metadata.labels.unwrap()["tier"], "2");

    server.delete(&PODS, Some("shop"), "new");
    assert_eq!(
        events.next_ok().await,
        ClusterEvent::Deleted(pod_key("new"))
    );

    server.apply(&MULTI_POLICIES_V1BETA2, policy());
    assert!(matches!(
        events.next_ok().await,
        ClusterEvent::Applied(Object::MultiNetworkPolicy(_))
    ));
}

#[tokio::test]
async fn closed_watches_resume_from_the_last_resource_version_without_relisting() {
    let server = ApiServer::start(&SERVED).await;
    seed(&server);
    let (_source, mut events) = Events::of(&server);
    events.initial().await;
    let last_pod_version = server.apply(&PODS, pod("local", NODE, json!({"app": "db", "v": "2"})));
    pod_of(events.next_ok().await);

    server.with_watches_closed(|_| ());
    server.apply(&PODS, pod("after", "node-b", json!({})));
    // Watches resume and pick up the change; no Resynced comes first.
    assert_eq!(
        pod_of(events.next_ok().await).metadata.name.as_deref(),
        Some("after")
    );

    assert_eq!(lists_of(&server, &PODS), 1);
    let pod_watches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.collection == "/api/v1/pods" && r.watch)
        .map(|r| r.resource_version.unwrap())
        .collect();
    assert_eq!(pod_watches.len(), 2, "{pod_watches:?}");
    assert_eq!(pod_watches[1], last_pod_version.to_string());
}

#[tokio::test]
async fn compacted_history_gets_410_gone_and_the_client_relists_the_current_state() {
    let server = ApiServer::start(&SERVED).await;
    seed(&server);
    let (_source, mut events) = Events::of(&server);
    events.initial().await;

    // While no watch is open: one pod changes, one goes, one comes, and the history of it
    // is compacted away.
    server.with_watches_closed(|store| {
        store.apply(
            &PODS,
            pod("local", NODE, json!({"app": "db", "changed": "yes"})),
        );
        store.delete(&PODS, Some("shop"), "remote");
        store.apply(&PODS, pod("newcomer", "node-b", json!({})));
        store.compact();
    });

    let mut saw_gone = false;
    let pods = loop {
        match events.next().await {
            Err(SourceError::Watch {
                source: watcher::Error::WatchError(status),
                ..
            }) if status.code == 410 => saw_gone = true,
            Err(other) => panic!("{other}"),
            Ok(ClusterEvent::Resynced(Kind::Pod, pods)) => break pods,
            Ok(ClusterEvent::Resynced(..)) => {}
            Ok(other) => panic!("only relists expected, got {other:?}"),
        }
    };
    assert!(saw_gone, "the watch reported 410 Gone");
    assert_eq!(names(&pods), ["local", "newcomer"]);
    let Object::Pod(local) = pods
        .iter()
        .find(|p| matches!(p, Object::Pod(p) if p.metadata.name.as_deref() == Some("local")))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(local.metadata.labels.as_ref().unwrap()["changed"], "yes");
    assert_eq!(lists_of(&server, &PODS), 2);
}

#[tokio::test]
async fn bookmarks_advance_the_resource_version_so_compaction_needs_no_relist() {
    let server = ApiServer::start(&SERVED).await;
    seed(&server);
    let (_source, mut events) = Events::of(&server);
    events.initial().await;

    // Other kinds move the resourceVersion on; the pod watch hears of it only by bookmark.
    for name in ["a", "b", "c"] {
        server.apply(&NAMESPACES, json!({"metadata": {"name": name}}));
        assert!(matches!(
            events.next_ok().await,
            ClusterEvent::Applied(Object::Namespace(_))
        ));
    }
    let bookmarked = server.bookmark();
    server.with_watches_closed(|store| {
        assert_eq!(store.resource_version(), bookmarked);
        store.compact();
    });
    server.apply(&PODS, pod("after", "node-b", json!({})));

    assert_eq!(
        pod_of(events.next_ok().await).metadata.name.as_deref(),
        Some("after")
    );
    assert_eq!(
        lists_of(&server, &PODS),
        1,
        "no relist: the watch resumed at the bookmark"
    );
    let last_pod_watch = server
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.collection == "/api/v1/pods" && r.watch)
        .unwrap();
    assert_eq!(
        last_pod_watch.resource_version,
        Some(bookmarked.to_string())
    );
}

#[tokio::test]
async fn writing_network_status_patches_the_pod_and_the_watch_sees_it() {
    let server = ApiServer::start(&SERVED).await;
    seed(&server);
    let (source, mut events) = Events::of(&server);
    events.initial().await;
    let entries: Vec<NetworkStatus> = serde_json::from_value(json!([
        {"name": "cbr0", "interface": "eth0", "ips": ["10.244.1.5"], "default": true},
        {"name": "shop/macvlan-conf", "interface": "net1", "ips": ["192.168.1.205", "fd00::5"],
         "mac": "86:1d:96:ff:55:0d"}
    ]))
    .unwrap();

    let local = PodRef {
        namespace: "shop".into(),
        name: "local".into(),
    };
    source.write_network_status(&local, &entries).await.unwrap();

    let stored = server.object(&PODS, Some("shop"), "local").unwrap();
    let annotations = &stored["metadata"]["annotations"];
    assert_eq!(
        annotations["k8s.v1.cni.cncf.io/networks"], "macvlan-conf",
        "other annotations kept"
    );
    assert_eq!(
        parse_network_status(annotations[NETWORK_STATUS_ANNOTATION].as_str().unwrap()).unwrap(),
        entries
    );
    let seen = pod_of(events.next_ok().await);
    let written = &seen.metadata.annotations.unwrap()[NETWORK_STATUS_ANNOTATION];
    assert_eq!(parse_network_status(written).unwrap(), entries);

    let missing = PodRef {
        namespace: "shop".into(),
        name: "nobody".into(),
    };
    let error = source
        .write_network_status(&missing, &entries)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("pod shop/nobody: patching annotation"),
        "{error}"
    );
}

#[tokio::test]
async fn a_v1beta1_policy_arrives_as_v1beta2() {
    let server = ApiServer::start(&[
        PODS,
        NAMESPACES,
        NETWORK_ATTACHMENT_DEFINITIONS,
        MULTI_POLICIES_V1BETA1,
        NETWORK_POLICIES,
    ])
    .await;
    server.apply(&MULTI_POLICIES_V1BETA1, policy());
    let (_source, mut events) = Events::of(&server);

    let listed = events.initial().await;
    let [Object::MultiNetworkPolicy(policy)] = &listed[&Kind::MultiNetworkPolicy][..] else {
        panic!("{listed:?}")
    };
    let rendered = serde_json::to_value(policy).unwrap();
    assert_eq!(rendered["apiVersion"], "k8s.cni.cncf.io/v1beta2");
    assert_eq!(
        rendered["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"],
        "web"
    );
    assert_eq!(
        policy.metadata.annotations.as_ref().unwrap()["k8s.v1.cni.cncf.io/policy-for"],
        "macvlan-conf"
    );

    let mut changed = self::policy();
    changed["spec"]["policyTypes"] = json!(["Ingress", "Egress"]);
    server.apply(&MULTI_POLICIES_V1BETA1, changed);
    let ClusterEvent::Applied(Object::MultiNetworkPolicy(policy)) = events.next_ok().await else {
        panic!("expected the changed policy")
    };
    assert_eq!(
        policy.spec.policy.policy_types.unwrap(),
        ["Ingress", "Egress"]
    );
}

#[tokio::test]
async fn an_attach_failure_becomes_a_warning_event_on_the_pod_and_repeats_count() {
    let mut served = SERVED.to_vec();
    served.push(EVENTS);
    let server = ApiServer::start(&served).await;
    seed(&server);
    let source = KubeSource::new(server.client(), NodeName(NODE.to_owned()));
    let pod: Pod =
        serde_json::from_value(server.object(&PODS, Some("shop"), "local").unwrap()).unwrap();
    let message = "pod shop/local: network shop/macvlan-conf: macvlan: master eth9 not found";

    source.report_attach_failure(&pod, message).await.unwrap();
    source.report_attach_failure(&pod, message).await.unwrap();

    let methods: Vec<Method> = server
        .requests()
        .into_iter()
        .filter(|r| r.collection == "/apis/events.k8s.io/v1/events")
        .map(|r| r.method)
        .collect();
    assert_eq!(
        methods,
        [Method::POST, Method::PATCH],
        "repeats patch one Event"
    );
    let events = server.objects(&EVENTS);
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event["metadata"]["namespace"], "shop");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "AttachFailed");
    assert_eq!(event["note"], message);
    assert_eq!(event["reportingController"], "netwarden");
    assert_eq!(event["reportingInstance"], NODE);
    assert_eq!(event["regarding"]["kind"], "Pod");
    assert_eq!(event["regarding"]["name"], "local");
    assert_eq!(event["series"]["count"], 2);
}
