//! The manifests in deploy/ held to the code: the CRDs to the types the agent reads
//! (agent/src/cluster/crd.rs), the ClusterRole to the API calls the Kubernetes source makes
//! (agent/src/cluster/kube_api/access.rs) and that list to the requests the source really
//! sends to a test API server, the ConfigMap to the agent's configuration and the DaemonSet
//! to both. (`cargo xtask test` also validates every manifest against the Kubernetes
//! schemas.)
#[allow(dead_code)] // shared by several test binaries; this one uses part of it
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use axum::http::Method;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::CustomResourceExt;
use netwarden_agent::{
    agent::{AgentConfig, Overrides},
    cluster::{
        crd::{
            v1beta1, v1beta2, NetworkAttachmentDefinition, MULTI_NETWORK_POLICY_STORAGE_VERSION,
        },
        kube_api::{access, KubeSource},
        source::{ClusterSource, NodeName, PodRef},
        ClusterEvent, Kind,
    },
};
use netwarden_cni::status::NetworkStatus;
use netwarden_tests::apiserver::{ApiServer, EVERYTHING, NAMESPACES, PODS};
use serde_json::{json, Value};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The documents of a YAML file under deploy/, as JSON values.
fn documents(file: &str) -> Vec<Value> {
    let path = deploy().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The one document of `kind` in `file`.
fn the(file: &str, kind: &str) -> Value {
    let mut found: Vec<Value> = documents(file)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "{file}: one {kind}");
    found.remove(0)
}

/// What the API server validates and prunes by: types, formats, properties, items, maps,
/// required fields, int-or-string. Descriptions, titles, defaults and `nullable` are left
/// out: kube-rs marks every `Option` nullable and describes types its own way.
fn structure(schema: &Value) -> Value {
    const KEPT: [&str; 7] = [
        "type",
        "format",
        "properties",
        "items",
        "additionalProperties",
        "required",
        "x-kubernetes-int-or-string",
    ];
    let Value::Object(fields) = schema else {
        return schema.clone();
    };
    let mut kept = serde_json::Map::new();
    for (key, value) in fields {
        match key.as_str() {
            "properties" => {
                let properties = value
                    .as_object()
                    .expect("properties is a map")
                    .iter()
                    .map(|(name, property)| (name.clone(), structure(property)))
                    .collect();
                kept.insert(key.clone(), Value::Object(properties));
            }
            "items" | "additionalProperties" => {
                kept.insert(key.clone(), structure(value));
            }
            _ if KEPT.contains(&key.as_str()) => {
                kept.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Value::Object(kept)
}

/// A CRD cut to what the agent's type decides: names, scope, versions (served, stored,
/// printer columns) and the structure of `spec`, whether `spec` is required.
fn essence(crd: &Value) -> Value {
    let mut versions: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|version| {
            let root = &version["schema"]["openAPIV3Schema"];
            json!({
                "name": version["name"],
                "served": version["served"],
                "storage": version["storage"],
                "additionalPrinterColumns": version["additionalPrinterColumns"],
                "spec": structure(&root["properties"]["spec"]),
                "required": root["required"],
            })
        })
        .collect();
    versions.sort_by_key(|v| v["name"].as_str().map(str::to_owned));
    let names = &crd["spec"]["names"];
    json!({
        "name": crd["metadata"]["name"],
        "group": crd["spec"]["group"],
        "scope": crd["spec"]["scope"],
        "names": {"kind": names["kind"], "plural": names["plural"],
                  "singular": names["singular"], "shortNames": names["shortNames"]},
        "versions": versions,
    })
}

#[test]
fn the_crds_are_the_types_the_agent_reads() {
    let nad = serde_json::to_value(NetworkAttachmentDefinition::crd()).unwrap();
    let policy = kube::core::crd::merge_crds(
        vec![
            v1beta1::MultiNetworkPolicy::crd(),
            v1beta2::MultiNetworkPolicy::crd(),
        ],
        MULTI_NETWORK_POLICY_STORAGE_VERSION,
    )
    .unwrap();
    let mut policy = serde_json::to_value(policy).unwrap();
    // What upstream's scheme.yml fixes and the types do not: only v1beta1 is served, and
    // podSelector is required (NetworkPolicySpec made it optional since).
    for version in policy["spec"]["versions"].as_array_mut().unwrap() {
        version["served"] = json!(version["name"] == "v1beta1");
        version["schema"]["openAPIV3Schema"]["properties"]["spec"]["required"] =
            json!(["podSelector"]);
    }
    for (file, generated) in [
        ("crds/network-attachment-definition.yaml", nad),
        ("crds/multi-network-policy.yaml", policy),
    ] {
        let manifest = the(file, "CustomResourceDefinition");
        assert_eq!(
            essence(&manifest),
            essence(&generated),
            "{file} differs from the agent's type"
        );
    }
    // What upstream fixes, spelled out (the comparison alone would follow a changed type).
    let policy = essence(&the(
        "crds/multi-network-policy.yaml",
        "CustomResourceDefinition",
    ));
    let served: Vec<(&str, bool, bool)> = policy["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["served"].as_bool().unwrap(),
                v["storage"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(served, [("v1beta1", true, true), ("v1beta2", false, false)]);
    assert_eq!(policy["names"]["shortNames"], json!(["multi-policy"]));
    let nad = essence(&the(
        "crds/network-attachment-definition.yaml",
        "CustomResourceDefinition",
    ));
    assert_eq!(nad["names"]["shortNames"], json!(["net-attach-def"]));
}

/// (API group, resource, verb) triples.
type Grants = BTreeSet<(String, String, String)>;

fn required_grants() -> Grants {
    access::required()
        .into_iter()
        .flat_map(|a| {
            a.verbs
                .into_iter()
                .map(move |verb| (a.group.clone(), a.resource.clone(), verb.to_string()))
        })
        .collect()
}

#[test]
fn the_cluster_role_grants_exactly_the_calls_the_agent_makes() {
    let role = the("rbac.yaml", "ClusterRole");
    let mut granted = Grants::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert!(
            rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
            "{rule}"
        );
        let strings = |field: &str| -> Vec<String> {
            rule[field]
                .as_array()
                .unwrap_or_else(|| panic!("{field} in {rule}"))
                .iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                for verb in strings("verbs") {
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "wildcard in {rule}"
                    );
                    granted.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    assert_eq!(granted, required_grants());

    let binding = the("rbac.yaml", "ClusterRoleBinding");
    let account = the("rbac.yaml", "ServiceAccount");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                "namespace": account["metadata"]["namespace"]}])
    );
    let daemonset = the("daemonset.yaml", "DaemonSet");
    assert_eq!(
        daemonset["spec"]["template"]["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );
}

/// The (group, resource, verb) of a request the test API server logged.
fn grant_of(request: &netwarden_tests::apiserver::Request) -> (String, String, String) {
    let path = &request.collection;
    let (group, resource) = if let Some(resource) = path.strip_prefix("/api/v1/") {
        (String::new(), resource.to_owned())
    } else {
        let mut parts = path.strip_prefix("/apis/").expect("an API path").split('/');
        let group = parts.next().expect("group").to_owned();
        (group, parts.nth(1).expect("resource").to_owned())
    };
    let verb = match (&request.method, request.object, request.watch) {
        (&Method::GET, false, true) => "watch",
        (&Method::GET, false, false) => "list",
        (&Method::GET, true, _) => "get",
        (&Method::POST, ..) => "create",
        (&Method::PATCH, ..) => "patch",
        (&Method::PUT, ..) => "update",
        (&Method::DELETE, ..) => "delete",
        (other, ..) => panic!("unexpected method {other}"),
    };
    (group, resource, verb.to_owned())
}

#[tokio::test]
async fn the_access_list_is_every_request_the_kubernetes_source_makes() {
    let server = ApiServer::start(&EVERYTHING).await;
    server.apply(&NAMESPACES, json!({"metadata": {"name": "shop"}}));
    server.apply(
        &PODS,
        json!({"metadata": {"name": "web", "namespace": "shop"},
               "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "i"}]}}),
    );
    let source = KubeSource::new(server.client(), NodeName("node-a".into()));

    // Every watcher lists, then watches (as long as the stream is read).
    let mut events = source.events();
    let (tell, mut resynced) = tokio::sync::mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Ok(ClusterEvent::Resynced(kind, _)) = event {
                let _ = tell.send(kind);
            }
        }
    });
    let mut listed = BTreeSet::new();
    while listed.len() < 5 {
        let kind = tokio::time::timeout(Duration::from_secs(10), resynced.recv())
            .await
            .expect("a listing within 10 s")
            .expect("the stream goes on");
        listed.insert(kind);
    }
    assert!(listed.contains(&Kind::MultiNetworkPolicy));
    let watched = || {
        server
            .requests()
            .iter()
            .filter(|r| r.watch)
            .map(|r| r.collection.clone())
            .collect::<BTreeSet<_>>()
            .len()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while watched() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every watcher watches"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // network-status, and an attach failure reported twice (created, then counted).
    let status: NetworkStatus = serde_json::from_value(
        json!({"name": "cluster", "interface": "eth0", "ips": ["10.244.1.5"], "default": true}),
    )
    .unwrap();
    let pod_ref = PodRef {
        namespace: "shop".into(),
        name: "web".into(),
    };
    source
        .write_network_status(&pod_ref, &[status])
        .await
        .unwrap();
    let pod: Pod =
        serde_json::from_value(server.object(&PODS, Some("shop"), "web").unwrap()).unwrap();
    for _ in 0..2 {
        source
            .report_attach_failure(&pod, "network shop/x: not found")
            .await
            .unwrap();
    }

    reading.abort();
    let made: Grants = server.requests().iter().map(grant_of).collect();
    assert_eq!(made, required_grants());
}

/// The container named `name` in the DaemonSet's pod template.
fn container(daemonset: &Value, name: &str) -> Value {
    daemonset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("container {name}"))
        .clone()
}

/// The value of `--flag=value` in a container's command.
fn flag(container: &Value, flag: &str) -> PathBuf {
    let prefix = format!("--{flag}=");
    container["command"]
        .as_array()
        .expect("command")
        .iter()
        .find_map(|arg| arg.as_str()?.strip_prefix(&prefix).map(PathBuf::from))
        .unwrap_or_else(|| panic!("{} has no {prefix}", container["name"]))
}

#[test]
fn the_daemonset_gives_the_agent_every_path_its_configuration_names() {
    let config_map = the("configmap.yaml", "ConfigMap");
    let text = config_map["data"]["agent.json"]
        .as_str()
        .expect("agent.json");
    let config = AgentConfig::parse(
        text.as_bytes(),
        Path::new("configmap.yaml agent.json"),
        Overrides {
            node: Some("node-a".into()),
            ..Overrides::default()
        },
    )
    .unwrap();

    let daemonset = the("daemonset.yaml", "DaemonSet");
    let agent = container(&daemonset, "agent");
    let cni_config = container(&daemonset, "cni-config");
    // The agent runs the copy cni-config keeps, and netwarden-cni is told the agent's
    // socket and cache.
    assert_eq!(flag(&cni_config, "cluster-network"), config.cluster_network);
    assert_eq!(flag(&cni_config, "socket"), config.socket);
    assert_eq!(flag(&cni_config, "cache-dir"), config.cache_dir);
    assert_eq!(flag(&cni_config, "config-dir"), config.config_dir);

    // The configuration file is the ConfigMap's, where the agent is told to read it.
    let volumes = daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .clone();
    let mounts = agent["volumeMounts"].as_array().unwrap();
    let config_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        .expect("the ConfigMap is a volume");
    let config_mount = mounts
        .iter()
        .find(|m| m["name"] == config_volume["name"])
        .expect("the agent mounts it");
    assert_eq!(
        Path::new(config_mount["mountPath"].as_str().unwrap()).join("agent.json"),
        flag(&agent, "config")
    );

    // Every host path the configuration names is inside a host-path mount of the agent.
    let host_mounts: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| {
            volumes
                .iter()
                .any(|v| v["name"] == m["name"] && v.get("hostPath").is_some())
        })
        .map(|m| PathBuf::from(m["mountPath"].as_str().unwrap()))
        .collect();
    let mut paths = vec![
        config.socket.clone(),
        config.cache_dir.clone(),
        config.bpffs.clone(),
        config.config_dir.clone(),
        config.cluster_network.clone(),
    ];
    paths.extend(config.bin_dirs.iter().cloned());
    for path in paths {
        assert!(
            host_mounts.iter().any(|mount| path.starts_with(mount)),
            "{} is on no host path of the agent ({host_mounts:?})",
            path.display()
        );
    }
}

#[test]
fn the_kustomizations_list_every_manifest() {
    for dir in ["", "uninstall"] {
        let file = Path::new(dir).join("kustomization.yaml");
        let kustomization = &documents(file.to_str().unwrap())[0];
        let listed: BTreeSet<PathBuf> = kustomization["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|r| deploy().join(dir).join(r.as_str().unwrap()))
            .collect();
        let mut present = BTreeSet::new();
        let mut dirs = vec![deploy().join(dir)];
        while let Some(current) = dirs.pop() {
            for entry in std::fs::read_dir(&current).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() && path != deploy().join("uninstall") {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml")
                    && path.file_name().is_some_and(|n| n != "kustomization.yaml")
                {
                    present.insert(path);
                }
            }
        }
        assert_eq!(listed, present, "deploy/{dir}");
    }
}
