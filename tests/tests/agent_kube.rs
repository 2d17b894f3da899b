//! Privileged: the real `netwarden agent` with `cluster: kube`, reading a Kubernetes API
//! (the test API server, listening inside the node's namespace, reached through a
//! kubeconfig) instead of a manifest directory. Pods are created through the real
//! `netwarden-cni`; network-status goes back to the API as a patch, a failed ADD becomes a
//! Warning Event on the pod, and policies and labels changed in the API reach the kernel.
use std::time::Duration;

use netwarden_cni::status::{parse_network_status, NETWORK_STATUS_ANNOTATION};
use netwarden_tests::apiserver::{
    ApiServer, EVENTS, EVERYTHING, MULTI_POLICIES_V1BETA1, MULTI_POLICIES_V1BETA2, NAMESPACES,
    NETWORK_ATTACHMENT_DEFINITIONS, NETWORK_POLICIES, PODS,
};
use netwarden_tests::{
    greeting::{connects, Server},
    node::{Lab, Pod},
    wait::eventually,
};
use serde_json::{json, Value};

/// A lab node whose agent reads the API server. Dropped in field order: the agent stops
/// before its API server and the runtime serving it go.
struct KubeLab {
    lab: Lab,
    api: ApiServer,
    _runtime: tokio::runtime::Runtime,
}

impl KubeLab {
    /// The lab's node with every manifest [`Lab::prepare`] wrote published to the API.
    fn new(prefix: &str) -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let mut lab = Lab::prepare(prefix);
        let api = {
            let _inside = runtime.enter();
            ApiServer::start_in(&EVERYTHING, &lab.node.path())
        };
        let files: Vec<String> = std::fs::read_dir(lab.manifests())
            .expect("manifests")
            .map(|entry| {
                let path = entry.expect("entry").path();
                path.file_stem()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let kubeconfig = lab.path("kubeconfig");
        api.write_kubeconfig(&kubeconfig);
        lab.use_kube(&kubeconfig);
        let mut this = Self {
            lab,
            api,
            _runtime: runtime,
        };
        for file in files {
            this.publish(&file);
        }
        this.lab.start_agent();
        this
    }

    /// Creates (or replaces) in the API the object of the lab's manifest `file`.
    fn publish(&self, file: &str) {
        let path = self.lab.manifests().join(format!("{file}.json"));
        let object: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("JSON");
        let resource = match (object["kind"].as_str(), object["apiVersion"].as_str()) {
            (Some("Namespace"), _) => NAMESPACES,
            (Some("Pod"), _) => PODS,
            (Some("NetworkAttachmentDefinition"), _) => NETWORK_ATTACHMENT_DEFINITIONS,
            (Some("MultiNetworkPolicy"), Some("k8s.cni.cncf.io/v1beta1")) => MULTI_POLICIES_V1BETA1,
            (Some("MultiNetworkPolicy"), _) => MULTI_POLICIES_V1BETA2,
            (Some("NetworkPolicy"), _) => NETWORK_POLICIES,
            other => panic!("{file}: no resource for {other:?}"),
        };
        self.api.apply(&resource, object);
    }

    /// A pod asking for `networks`, published to the API, and its sandbox, which the
    /// runtime knows by the uid the API gave the pod.
    fn pod(&mut self, networks: &str, labels: Value) -> Pod {
        let mut pod = self.lab.pod_labelled("default", networks, &labels);
        self.publish(&format!("pod-default-{}", pod.name));
        pod.uid = self.api_pod(&pod)["metadata"]["uid"]
            .as_str()
            .expect("the API gives a uid")
            .to_owned();
        pod
    }

    fn api_pod(&self, pod: &Pod) -> Value {
        self.api
            .object(&PODS, Some(&pod.namespace), &pod.name)
            .expect("the pod is in the API")
    }

    /// The Events whose `regarding` is `pod`.
    fn events_of(&self, pod: &Pod) -> Vec<Value> {
        self.api
            .objects(&EVENTS)
            .into_iter()
            .filter(|event| {
                event["regarding"]["name"] == pod.name.as_str()
                    && event["regarding"]["namespace"] == pod.namespace.as_str()
            })
            .collect()
    }
}

#[test]
fn an_agent_on_the_api_publishes_network_status_and_enforces_policy_changes() {
    let mut kube = KubeLab::new("ak-enf");
    let server = kube.pod("macvlan-conf", json!({"app": "server"}));
    let client = kube.pod("macvlan-conf", json!({"role": "other"}));
    for pod in [&server, &client] {
        let (code, result) = kube.lab.cni("ADD", pod);
        assert_eq!(code, 0, "{result}");
    }

    // network-status went to the API as a patch, not into the manifest file.
    let annotation = kube.api_pod(&server)["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION]
        .as_str()
        .expect("network-status in the API")
        .to_owned();
    let statuses = parse_network_status(&annotation).expect("network-status parses");
    let net1 = statuses
        .iter()
        .find(|status| status.interface.as_deref() == Some("net1"))
        .expect("net1 in network-status");
    assert_eq!(net1.name, "default/macvlan-conf");
    let std::net::IpAddr::V4(to) = net1.ips[0] else {
        panic!("net1 has no IPv4 address: {net1:?}");
    };
    assert_eq!(server.ipv4("net1").expect("net1"), vec![to]);
    let manifest = std::fs::read_to_string(
        kube.lab
            .manifests()
            .join(format!("pod-default-{}.json", server.name)),
    )
    .expect("manifest");
    assert!(!manifest.contains(NETWORK_STATUS_ANNOTATION), "{manifest}");

    let _serving = Server::start(&server);
    assert!(connects(&client, to), "no policy yet, and no connection");
    kube.lab.multi_network_policy(
        "default",
        "servers",
        "default/macvlan-conf",
        &json!({"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}),
    );
    kube.publish("mnp-default-servers");
    assert!(
        eventually(Duration::from_secs(5), || !connects(&client, to)),
        "a MultiNetworkPolicy created in the API did not isolate the server"
    );

    // The client's labels change in the API: the policy now admits it.
    let mut relabelled = kube.api_pod(&client);
    relabelled["metadata"]["labels"] = json!({"role": "client"});
    kube.api.apply(&PODS, relabelled);
    assert!(
        eventually(Duration::from_secs(5), || connects(&client, to)),
        "a label changed in the API did not reach the kernel"
    );

    for pod in [&client, &server] {
        assert_eq!(kube.lab.cni("DEL", pod).0, 0);
    }
}

#[test]
fn a_failed_add_becomes_a_warning_event_on_the_pod() {
    let mut kube = KubeLab::new("ak-evt");
    // broken-conf fails in its second plugin (a sysctl that does not exist).
    let pod = kube.pod("broken-conf", json!({"app": "broken"}));
    let (code, error) = kube.lab.cni("ADD", &pod);
    assert_ne!(code, 0, "{error}");
    let message = error["msg"].as_str().expect("a CNI error").to_owned();
    assert!(message.contains("broken-conf"), "{error}");

    assert!(
        eventually(Duration::from_secs(5), || kube.events_of(&pod).len() == 1),
        "no Event for the failed ADD: {:?}",
        kube.api.objects(&EVENTS)
    );
    let event = &kube.events_of(&pod)[0];
    assert_eq!(event["type"], "Warning", "{event}");
    assert_eq!(event["reason"], "AttachFailed", "{event}");
    assert_eq!(event["action"], "Attach", "{event}");
    assert_eq!(event["regarding"]["kind"], "Pod", "{event}");
    assert_eq!(event["reportingController"], "netwarden", "{event}");
    let note = event["note"].as_str().expect("note");
    assert!(note.contains("broken-conf"), "{event}");
    assert!(note.contains(&pod.name), "{event}");

    // The runtime retries: the same failure again is one Event with a count.
    let (code, _) = kube.lab.cni("ADD", &pod);
    assert_ne!(code, 0);
    assert!(
        eventually(Duration::from_secs(5), || {
            let events = kube.events_of(&pod);
            events.len() == 1 && events[0]["series"]["count"].as_u64() == Some(2)
        }),
        "the repeat was not counted on the one Event: {:?}",
        kube.events_of(&pod)
    );
    // Nothing of the failed ADD is left behind.
    assert_eq!(kube.lab.cni("DEL", &pod).0, 0);
    assert!(
        kube.lab.allocations().is_empty(),
        "{:?}",
        kube.lab.allocations()
    );
}
