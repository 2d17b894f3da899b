//! The manifest-directory cluster source: the kind of manifests users already have
//! (macvlan NAD, pods with the networks annotation, namespaces, policies) load; edits,
//! new files and removed files become events; a bad document is named while the rest
//! loads; network-status is written back atomically.
use std::{fs, os::unix::fs::MetadataExt, path::Path, time::Duration};

use futures::{stream::BoxStream, StreamExt};
use netwarden_agent::cluster::{
    manifest_dir::DirSource,
    source::{ClusterSource, ClusterSourceSpec, NodeName, PodRef, SourceError},
    ClusterEvent, Kind, Object, ObjectKey,
};
use netwarden_cni::status::{parse_network_status, NetworkStatus, NETWORK_STATUS_ANNOTATION};

const NAMESPACES: &str = "\
# The lab's namespaces.
apiVersion: v1
kind: Namespace
metadata:
  name: development
---
apiVersion: v1
kind: Namespace
metadata:
  name: privileged
  labels:
    project: myproject
";

const MACVLAN_NAD: &str = r#"apiVersion: "k8s.cni.cncf.io/v1"
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-conf
spec:
  config: '{
      "cniVersion":    "0.3.0",
      "type":    "macvlan",
      "master":    "eth0",
      "mode":    "bridge",
      "ipam": {
        "type":    "host-local",
        "subnet":    "192.168.1.0/24",
        "rangeStart":    "192.168.1.200",
        "rangeEnd":    "192.168.1.216",
        "routes": [
          { "dst":    "0.0.0.0/0" }
        ],
        "gateway":    "192.168.1.1"
      }
    }'
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: not-read-by-netwarden
"#;

const PODS: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: samplepod
  namespace: privileged
  labels:
    role: db
  annotations:
    k8s.v1.cni.cncf.io/networks: privileged/macvlan-conf
spec:
  containers:
  - name: samplepod
    command: [\"/bin/bash\", \"-c\", \"sleep 2000000000000\"]
    image: dougbtv/centos-network
    ports:
    - name: redis
      containerPort: 6379
---
apiVersion: v1
kind: Pod
metadata:
  name: frontend
  labels:
    role: frontend
  annotations:
    k8s.v1.cni.cncf.io/networks: macvlan-conf
spec:
  containers:
  - name: web
    image: nginx
";

const POLICIES: &str = r#"{
  "apiVersion": "networking.k8s.io/v1",
  "kind": "NetworkPolicy",
  "metadata": {"name": "default-deny"},
  "spec": {"podSelector": null}
}
"#;

const MULTI_POLICY: &str = "\
apiVersion: k8s.cni.cncf.io/v1beta1
kind: MultiNetworkPolicy
metadata:
  name: test-network-policy
  annotations:
    k8s.v1.cni.cncf.io/policy-for: macvlan-conf
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
";

/// A lab directory with the seed-style manifests.
fn lab() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("namespaces.yaml", NAMESPACES),
        ("nad.yaml", MACVLAN_NAD),
        ("pods.yml", PODS),
        ("policies/deny.json", POLICIES),
        ("policies/multi.yaml", MULTI_POLICY),
    ] {
        write(dir.path(), name, text);
    }
    dir
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

struct Events(BoxStream<'static, Result<ClusterEvent, SourceError>>);

impl Events {
    async fn next(&mut self) -> Result<ClusterEvent, SourceError> {
        tokio::time::timeout(Duration::from_secs(10), self.0.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
    }

    async fn next_ok(&mut self) -> ClusterEvent {
        self.next().await.expect("no source error")
    }

    /// The first listing, as (kind, sorted names).
    async fn initial(&mut self) -> Vec<(Kind, Vec<String>)> {
        let mut listed = Vec::new();
        while listed.len() < 5 {
            match self.next_ok().await {
                ClusterEvent::Resynced(kind, objects) => {
                    let mut names: Vec<String> = objects.iter().map(|o| o.key().name).collect();
                    names.sort();
                    listed.push((kind, names));
                }
                other => panic!("before the first listing is complete: {other:?}"),
            }
        }
        listed
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn applied(event: ClusterEvent) -> Object {
    match event {
        ClusterEvent::Applied(object) => object,
        other => panic!("expected Applied, got {other:?}"),
    }
}

#[tokio::test]
async fn seed_style_manifests_load_as_one_listing_per_kind() {
    let dir = lab();
    let mut events = Events(DirSource::new(dir.path().to_owned()).events());
    assert_eq!(
        events.initial().await,
        [
            (Kind::Pod, names(&["frontend", "samplepod"])),
            (Kind::Namespace, names(&["development", "privileged"])),
            (Kind::NetworkAttachmentDefinition, names(&["macvlan-conf"])),
            (Kind::MultiNetworkPolicy, names(&["test-network-policy"])),
            (Kind::NetworkPolicy, names(&["default-deny"])),
        ]
    );
}

#[tokio::test]
async fn the_cluster_flag_opens_a_directory_source() {
    let dir = lab();
    let spec: ClusterSourceSpec = format!("dir:{}", dir.path().display()).parse().unwrap();
    let source = spec.open(NodeName("lab-node".into())).await.unwrap();
    let mut events = Events(source.events());
    assert_eq!(
        events.initial().await[1],
        (Kind::Namespace, names(&["development", "privileged"]))
    );
}

#[tokio::test]
async fn the_objects_read_are_complete_and_defaulted() {
    let dir = lab();
    let mut events = Events(DirSource::new(dir.path().to_owned()).events());
    let mut objects = Vec::new();
    for _ in 0..5 {
        let ClusterEvent::Resynced(_, listed) = events.next_ok().await else {
            panic!("a listing first")
        };
        objects.extend(listed);
    }
    let find = |name: &str| {
        objects
            .iter()
            .find(|o| o.key().name == name)
            .unwrap()
            .clone()
    };

    let Object::Pod(frontend) = find("frontend") else {
        panic!()
    };
    assert_eq!(frontend.metadata.namespace.as_deref(), Some("default"));
    let Object::Pod(samplepod) = find("samplepod") else {
        panic!()
    };
    let annotations = samplepod.metadata.annotations.unwrap();
    assert_eq!(
        annotations["k8s.v1.cni.cncf.io/networks"],
        "privileged/macvlan-conf"
    );
    let port = &samplepod.spec.unwrap().containers[0].ports.clone().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("redis"), 6379)
    );
    let Object::NetworkAttachmentDefinition(nad) = find("macvlan-conf") else {
        panic!()
    };
    let config: serde_json::Value =
        serde_json::from_str(nad.spec.config.as_deref().unwrap()).unwrap();
    assert_eq!(
        (config["type"].as_str(), config["ipam"]["rangeEnd"].as_str()),
        (Some("macvlan"), Some("192.168.1.216"))
    );
    let Object::MultiNetworkPolicy(policy) = find("test-network-policy") else {
        panic!()
    };
    assert_eq!(
        serde_json::to_value(&*policy).unwrap()["apiVersion"],
        "k8s.cni.cncf.io/v1beta2"
    );
    assert_eq!(
        policy.spec.policy.ingress.as_ref().unwrap()[0]
            .from
            .as_ref()
            .unwrap()
            .len(),
        2
    );
    let Object::Namespace(privileged) = find("privileged") else {
        panic!()
    };
    assert_eq!(
        privileged.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
        "privileged"
    );
}

#[tokio::test]
async fn edits_new_files_and_removed_files_become_events() {
    let dir = lab();
    let mut events = Events(DirSource::new(dir.path().to_owned()).events());
    events.initial().await;

    write(
        dir.path(),
        "pods.yml",
        &PODS.replace("role: frontend", "role: canary"),
    );
    let Object::Pod(frontend) = applied(events.next_ok().await) else {
        panic!("a pod")
    };
    assert_eq!(frontend.metadata.labels.unwrap()["role"], "canary");

    write(
        dir.path(),
        "more/staging.json",
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "staging"}}"#,
    );
    assert_eq!(applied(events.next_ok().await).key().name, "staging");

    fs::remove_file(dir.path().join("nad.yaml")).unwrap();
    assert_eq!(
        events.next_ok().await,
        ClusterEvent::Deleted(ObjectKey {
            kind: Kind::NetworkAttachmentDefinition,
            namespace: Some("default".into()),
            name: "macvlan-conf".into()
        })
    );

    // Dropping one document of a multi-document file deletes only its object.
    write(
        dir.path(),
        "namespaces.yaml",
        NAMESPACES.split("---").next().unwrap(),
    );
    assert_eq!(
        events.next_ok().await,
        ClusterEvent::Deleted(ObjectKey {
            kind: Kind::Namespace,
            namespace: None,
            name: "privileged".into()
        })
    );
}

#[tokio::test]
async fn a_bad_document_is_named_by_file_and_field_while_the_others_load() {
    let dir = lab();
    let broken = PODS.replace("containerPort: 6379", "containerPort: redis");
    write(dir.path(), "pods.yml", &broken);
    let mut events = Events(DirSource::new(dir.path().to_owned()).events());

    let Err(SourceError::Manifest(error)) = events.next().await else {
        panic!("the bad document is reported first")
    };
    assert_eq!(error.file, dir.path().join("pods.yml"));
    assert_eq!((error.document, error.line), (1, 1));
    assert_eq!(
        error.field.as_deref(),
        Some("spec.containers[0].ports[0].containerPort")
    );
    let message = error.to_string();
    assert!(message.contains("pods.yml: document 1 (line 1): field spec.containers[0].ports[0].containerPort: invalid type"), "{message}");
    let listed = events.initial().await;
    assert_eq!(
        listed[0],
        (Kind::Pod, names(&["frontend"])),
        "the good pod of the same file loads"
    );
    assert_eq!(listed[1].1.len(), 2);
}

#[tokio::test]
async fn breaking_a_file_keeps_its_objects_until_it_is_fixed() {
    let dir = lab();
    let mut events = Events(DirSource::new(dir.path().to_owned()).events());
    events.initial().await;

    write(
        dir.path(),
        "pods.yml",
        &PODS.replace("containerPort: 6379", "containerPort: [6379"),
    );
    let Err(SourceError::Manifest(error)) = events.next().await else {
        panic!("the broken document is reported")
    };
    assert!(error.problem.starts_with("not valid YAML"), "{error}");
    // No Deleted for samplepod: a half-edited file does not remove what it held.
    write(
        dir.path(),
        "pods.yml",
        &PODS.replace("containerPort: 6379", "containerPort: 6380"),
    );
    let Object::Pod(samplepod) = applied(events.next_ok().await) else {
        panic!("a pod")
    };
    assert_eq!(
        samplepod.spec.unwrap().containers[0]
            .ports
            .as_ref()
            .unwrap()[0]
            .container_port,
        6380
    );
}

fn statuses() -> Vec<NetworkStatus> {
    serde_json::from_value(serde_json::json!([
        {"name": "cbr0", "interface": "eth0", "ips": ["10.244.1.5"], "default": true},
        {"name": "privileged/macvlan-conf", "interface": "net1", "ips": ["192.168.1.205"], "mac": "86:1d:96:ff:55:0d"}
    ]))
    .unwrap()
}

#[tokio::test]
async fn writing_network_status_rewrites_only_the_pods_document_atomically() {
    let dir = lab();
    let file = dir.path().join("pods.yml");
    let source = DirSource::new(dir.path().to_owned());
    let mut events = Events(source.events());
    events.initial().await;
    let inode_before = fs::metadata(&file).unwrap().ino();

    let samplepod = PodRef {
        namespace: "privileged".into(),
        name: "samplepod".into(),
    };
    source
        .write_network_status(&samplepod, &statuses())
        .await
        .unwrap();

    assert_ne!(
        fs::metadata(&file).unwrap().ino(),
        inode_before,
        "replaced by rename, not rewritten in place"
    );
    let text = fs::read_to_string(&file).unwrap();
    let other_document = &PODS[PODS.find("---").unwrap()..];
    assert!(
        text.ends_with(other_document),
        "the other document is untouched:\n{text}"
    );
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let Object::Pod(pod) = applied(events.next_ok().await) else {
        panic!("the pod changes")
    };
    assert_eq!(pod.metadata.name.as_deref(), Some("samplepod"));
    let annotations = pod.metadata.annotations.unwrap();
    assert_eq!(
        parse_network_status(&annotations[NETWORK_STATUS_ANNOTATION]).unwrap(),
        statuses()
    );
    assert_eq!(
        annotations["k8s.v1.cni.cncf.io/networks"],
        "privileged/macvlan-conf"
    );
    assert_eq!(
        pod.spec.unwrap().containers[0].image.as_deref(),
        Some("dougbtv/centos-network")
    );
}

#[tokio::test]
async fn a_pod_in_a_json_file_stays_json_and_a_missing_pod_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "pod.json",
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "lab"}, "spec": {"containers": [{"name": "c"}]}}"#,
    );
    let source = DirSource::new(dir.path().to_owned());
    let pod = PodRef {
        namespace: "lab".into(),
        name: "p".into(),
    };
    source
        .write_network_status(&pod, &statuses())
        .await
        .unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("pod.json")).unwrap()).unwrap();
    let value = written["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION]
        .as_str()
        .unwrap();
    assert_eq!(parse_network_status(value).unwrap(), statuses());

    let missing = PodRef {
        namespace: "lab".into(),
        name: "nobody".into(),
    };
    let error = source
        .write_network_status(&missing, &statuses())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SourceError::PodNotFound { pod, .. } if *pod == missing),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("pod lab/nobody: no manifest under"),
        "{error}"
    );
}
