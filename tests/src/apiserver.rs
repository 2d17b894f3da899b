//! A Kubernetes API server for tests, over plain HTTP on 127.0.0.1: the list/watch protocol
//! (resourceVersion, bookmarks, 410 Gone after compaction, watches that end) and merge
//! patch, for the resources netwarden reads, backed by an in-memory event log. kube-rs's
//! real client talks to it.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::{header, HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

/// A resource the server can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// `/api/v1` or `/apis/<group>/<version>`.
    pub prefix: &'static str,
    pub plural: &'static str,
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

pub const PODS: Resource = Resource {
    prefix: "/api/v1",
    plural: "pods",
    api_version: "v1",
    kind: "Pod",
    namespaced: true,
};
pub const NAMESPACES: Resource = Resource {
    prefix: "/api/v1",
    plural: "namespaces",
    api_version: "v1",
    kind: "Namespace",
    namespaced: false,
};
pub const NETWORK_ATTACHMENT_DEFINITIONS: Resource = Resource {
    prefix: "/apis/k8s.cni.cncf.io/v1",
    plural: "network-attachment-definitions",
    api_version: "k8s.cni.cncf.io/v1",
    kind: "NetworkAttachmentDefinition",
    namespaced: true,
};
pub const MULTI_POLICIES_V1BETA1: Resource = Resource {
    prefix: "/apis/k8s.cni.cncf.io/v1beta1",
    plural: "multi-networkpolicies",
    api_version: "k8s.cni.cncf.io/v1beta1",
    kind: "MultiNetworkPolicy",
    namespaced: true,
};
pub const MULTI_POLICIES_V1BETA2: Resource = Resource {
    api_version: "k8s.cni.cncf.io/v1beta2",
    prefix: "/apis/k8s.cni.cncf.io/v1beta2",
    ..MULTI_POLICIES_V1BETA1
};
pub const NETWORK_POLICIES: Resource = Resource {
    prefix: "/apis/networking.k8s.io/v1",
    plural: "networkpolicies",
    api_version: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    namespaced: true,
};
/// Events are only created and patched (Event recorders), never watched by netwarden.
pub const EVENTS: Resource = Resource {
    prefix: "/apis/events.k8s.io/v1",
    plural: "events",
    api_version: "events.k8s.io/v1",
    kind: "Event",
    namespaced: true,
};

/// Every resource netwarden reads or writes, as a cluster with the upstream CRDs (both
/// MultiNetworkPolicy versions) serves them.
pub const EVERYTHING: [Resource; 7] = [
    PODS,
    NAMESPACES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    MULTI_POLICIES_V1BETA1,
    MULTI_POLICIES_V1BETA2,
    NETWORK_POLICIES,
    EVENTS,
];

/// One request the server answered (for tests that check what the client asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// `prefix/plural` of the resource.
    pub collection: String,
    /// Whether the path names one object (a get, patch or delete) rather than the
    /// collection (a list, watch or create).
    pub object: bool,
    pub watch: bool,
    pub resource_version: Option<String>,
}

#[derive(Debug, Clone)]
struct Logged {
    resource_version: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Clone)]
enum Notice {
    Event { collection: String, logged: Logged },
    Bookmark(u64),
    CloseWatches,
}

struct Collection {
    resource: Resource,
    /// By (namespace or "", name).
    objects: BTreeMap<(String, String), Value>,
    log: Vec<Logged>,
}

/// The server's state: one resourceVersion counter for everything (as etcd's revision).
pub struct Store {
    resource_version: u64,
    /// Watches from before this resourceVersion get 410 Gone.
    compacted: u64,
    collections: BTreeMap<String, Collection>,
    requests: Vec<Request>,
    notices: broadcast::Sender<Notice>,
    next_uid: u64,
}

fn collection_path(resource: &Resource) -> String {
    format!("{}/{}", resource.prefix, resource.plural)
}

fn object_id(resource: &Resource, object: &Value) -> (String, String) {
    let metadata = &object["metadata"];
    let namespace = if resource.namespaced {
        metadata["namespace"].as_str().unwrap_or("default")
    } else {
        ""
    };
    let name = metadata["name"]
        .as_str()
        .expect("test objects have metadata.name");
    (namespace.to_owned(), name.to_owned())
}

impl Store {
    fn collection(&mut self, resource: &Resource) -> &mut Collection {
        self.collections
            .get_mut(&collection_path(resource))
            .unwrap_or_else(|| panic!("{} is not served", collection_path(resource)))
    }

    fn record(&mut self, resource: &Resource, kind: &'static str, object: Value) -> u64 {
        let resource_version = self.resource_version;
        let logged = Logged {
            resource_version,
            kind,
            object,
        };
        self.collection(resource).log.push(logged.clone());
        // No receivers (no watch open) is fine.
        let _ = self.notices.send(Notice::Event {
            collection: collection_path(resource),
            logged,
        });
        resource_version
    }

    /// Creates or replaces `object`; returns its new resourceVersion.
    pub fn apply(&mut self, resource: &Resource, mut object: Value) -> u64 {
        self.resource_version += 1;
        self.next_uid += 1;
        let (resource_version, uid) = (self.resource_version, self.next_uid);
        let id = object_id(resource, &object);
        object["apiVersion"] = json!(resource.api_version);
        object["kind"] = json!(resource.kind);
        if resource.namespaced {
            object["metadata"]["namespace"] = json!(id.0);
        }
        object["metadata"]["resourceVersion"] = json!(resource_version.to_string());
        let collection = self.collection(resource);
        let existing_uid = collection
            .objects
            .get(&id)
            .map(|old| old["metadata"]["uid"].clone());
        let kind = if existing_uid.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        object["metadata"]["uid"] = existing_uid.unwrap_or_else(|| json!(format!("uid-{uid}")));
        collection.objects.insert(id, object.clone());
        self.record(resource, kind, object)
    }

    /// Deletes an object; the DELETED event carries it at the deletion's resourceVersion.
    pub fn delete(&mut self, resource: &Resource, namespace: Option<&str>, name: &str) -> u64 {
        self.resource_version += 1;
        let resource_version = self.resource_version;
        let id = (namespace.unwrap_or("").to_owned(), name.to_owned());
        let mut object = self
            .collection(resource)
            .objects
            .remove(&id)
            .unwrap_or_else(|| panic!("no {} {id:?} to delete", resource.kind));
        object["metadata"]["resourceVersion"] = json!(resource_version.to_string());
        self.record(resource, "DELETED", object)
    }

    /// Forgets the event history up to now: watches from an older resourceVersion get
    /// 410 Gone and must list again.
    pub fn compact(&mut self) {
        self.compacted = self.resource_version;
        for collection in self.collections.values_mut() {
            collection.log.clear();
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }
}

/// A running test API server; stops when dropped.
pub struct ApiServer {
    store: Arc<Mutex<Store>>,
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiServer {
    /// Serves `resources`; any other path is 404 (as for a CRD version not served).
    pub async fn start(resources: &[Resource]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(resources, listener)
    }

    /// [`ApiServer::start`] on 127.0.0.1 inside the network namespace at `netns`, where a
    /// process (an agent in a node's namespace) reaches it. Call inside a tokio runtime.
    pub fn start_in(resources: &[Resource], netns: &std::path::Path) -> Self {
        let listener =
            netwarden_agent::netns::run_in(netns, || std::net::TcpListener::bind("127.0.0.1:0"))
                .expect("the namespace")
                .expect("listening");
        listener.set_nonblocking(true).expect("non-blocking");
        Self::serve(
            resources,
            tokio::net::TcpListener::from_std(listener).expect("tokio listener"),
        )
    }

    /// Writes a kubeconfig for this server (no credentials: it checks none) to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": format!("http://{}", self.address)}}],
            "users": [{"name": "test", "user": {}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        });
        std::fs::write(path, config.to_string()).expect("kubeconfig written");
    }

    fn serve(resources: &[Resource], listener: tokio::net::TcpListener) -> Self {
        let (notices, _) = broadcast::channel(1024);
        let store = Arc::new(Mutex::new(Store {
            resource_version: 1,
            compacted: 0,
            collections: resources
                .iter()
                .map(|resource| {
                    let collection = Collection {
                        resource: *resource,
                        objects: BTreeMap::new(),
                        log: Vec::new(),
                    };
                    (collection_path(resource), collection)
                })
                .collect(),
            requests: Vec::new(),
            notices,
            next_uid: 0,
        }));
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&store));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            store,
            address,
            task,
        }
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.address).parse().unwrap();
        kube::Client::try_from(kube::Config::new(url)).unwrap()
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap()
    }

    pub fn apply(&self, resource: &Resource, object: Value) -> u64 {
        self.lock().apply(resource, object)
    }

    pub fn delete(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> u64 {
        self.lock().delete(resource, namespace, name)
    }

    pub fn object(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let id = (namespace.unwrap_or("").to_owned(), name.to_owned());
        self.lock().collection(resource).objects.get(&id).cloned()
    }

    /// Every object of `resource`, in key order.
    pub fn objects(&self, resource: &Resource) -> Vec<Value> {
        self.lock()
            .collection(resource)
            .objects
            .values()
            .cloned()
            .collect()
    }

    /// Sends a BOOKMARK at the current resourceVersion on every open watch that asked for
    /// bookmarks.
    pub fn bookmark(&self) -> u64 {
        let store = self.lock();
        let _ = store.notices.send(Notice::Bookmark(store.resource_version));
        store.resource_version
    }

    /// Ends every open watch, then runs `change` before any watch can start again: the
    /// client sees none of `change`'s events live.
    pub fn with_watches_closed<T>(&self, change: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.lock();
        let _ = store.notices.send(Notice::CloseWatches);
        change(&mut store)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }
}

type Shared = Arc<Mutex<Store>>;

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = status_body(code.as_u16(), reason, message);
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn status_body(code: u16, reason: &str, message: String) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// What a path names.
enum Target {
    Collection(String),
    Object {
        collection: String,
        id: (String, String),
    },
}

fn target(path: &str) -> Option<Target> {
    let (prefix, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("/api/v1".to_owned(), rest)
    } else {
        let rest = path.strip_prefix("/apis/")?;
        let mut parts = rest.splitn(3, '/');
        let (group, version, rest) = (parts.next()?, parts.next()?, parts.next()?);
        (format!("/apis/{group}/{version}"), rest)
    };
    let segments: Vec<&str> = rest.split('/').collect();
    Some(match segments[..] {
        [plural] | ["namespaces", _, plural] => Target::Collection(format!("{prefix}/{plural}")),
        ["namespaces", namespace, plural, name] => Target::Object {
            collection: format!("{prefix}/{plural}"),
            id: (namespace.to_owned(), name.to_owned()),
        },
        [plural, name] => Target::Object {
            collection: format!("{prefix}/{plural}"),
            id: (String::new(), name.to_owned()),
        },
        _ => return None,
    })
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let not_found = || {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({uri})"),
        )
    };
    let Some(target) = target(uri.path()) else {
        return not_found();
    };
    if query.contains_key("labelSelector") || query.contains_key("fieldSelector") {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "this test server implements no selectors".into(),
        );
    }
    let mut store = shared.lock().unwrap();
    let collection_name = match &target {
        Target::Collection(c) | Target::Object { collection: c, .. } => c.clone(),
    };
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    // Requests for resources not served are logged too: a test can see everything asked.
    store.requests.push(Request {
        method: method.clone(),
        collection: collection_name.clone(),
        object: matches!(target, Target::Object { .. }),
        watch,
        resource_version: query.get("resourceVersion").cloned(),
    });
    if !store.collections.contains_key(&collection_name) {
        return not_found();
    }
    match (method, target) {
        (Method::GET, Target::Collection(_)) if watch => {
            watch_collection(&mut store, &collection_name, &query)
        }
        (Method::GET, Target::Collection(_)) => {
            let collection = &store.collections[&collection_name];
            let list = json!({
                "apiVersion": collection.resource.api_version,
                "kind": format!("{}List", collection.resource.kind),
                "metadata": {"resourceVersion": store.resource_version.to_string()},
                "items": collection.objects.values().collect::<Vec<_>>(),
            });
            json_response(&list)
        }
        (Method::PATCH, Target::Object { id, .. }) => {
            let merge = headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|c| c.as_bytes().starts_with(b"application/merge-patch+json"));
            if !merge {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    "only merge patches".into(),
                );
            }
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "patch is not JSON".into(),
                );
            };
            let collection = &store.collections[&collection_name];
            let resource = collection.resource;
            let Some(mut object) = collection.objects.get(&id).cloned() else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{} {id:?} not found", resource.kind),
                );
            };
            merge_patch(&mut object, &patch);
            store.apply(&resource, object);
            json_response(&store.collections[&collection_name].objects[&id])
        }
        (Method::POST, Target::Collection(_)) => {
            let Ok(object) = serde_json::from_slice::<Value>(&body) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "object is not JSON".into(),
                );
            };
            let resource = store.collections[&collection_name].resource;
            let id = object_id(&resource, &object);
            store.apply(&resource, object);
            (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/json")],
                store.collections[&collection_name].objects[&id].to_string(),
            )
                .into_response()
        }
        (Method::GET, Target::Object { id, .. }) => {
            match store.collections[&collection_name].objects.get(&id) {
                Some(object) => json_response(object),
                None => not_found(),
            }
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not implemented by the test server".into(),
        ),
    }
}

fn json_response(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Streams the collection's events after `resourceVersion` as newline-delimited JSON.
fn watch_collection(
    store: &mut Store,
    collection_name: &str,
    query: &HashMap<String, String>,
) -> Response {
    let Some(Ok(from)) = query.get("resourceVersion").map(|rv| rv.parse::<u64>()) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "watch needs a numeric resourceVersion".into(),
        );
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let collection = &store.collections[collection_name];
    let resource = collection.resource;
    let mut first: Vec<Bytes> = Vec::new();
    if from < store.compacted {
        let message = format!("too old resource version: {from} ({})", store.compacted);
        first.push(watch_line("ERROR", &status_body(410, "Expired", message)));
    } else {
        first.extend(
            collection
                .log
                .iter()
                .filter(|logged| logged.resource_version > from)
                .map(|logged| watch_line(logged.kind, &logged.object)),
        );
    }
    let gone = from < store.compacted;
    // Subscribed under the store lock, so nothing falls between the backlog and this.
    let mut notices = store.notices.subscribe();
    let collection_name = collection_name.to_owned();
    let (lines, body) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        for line in first {
            if lines.send(line).await.is_err() {
                return;
            }
        }
        if gone {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let line = tokio::select! {
                () = &mut deadline => return,
                notice = notices.recv() => match notice {
                    Ok(Notice::Event { collection, logged }) if collection == collection_name => {
                        watch_line(logged.kind, &logged.object)
                    }
                    Ok(Notice::Bookmark(resource_version)) if bookmarks => watch_line(
                        "BOOKMARK",
                        &json!({"apiVersion": resource.api_version, "kind": resource.kind,
                                "metadata": {"resourceVersion": resource_version.to_string()}}),
                    ),
                    Ok(Notice::Event { .. } | Notice::Bookmark(_)) => continue,
                    // Closed, lagged behind or told to close: end the watch; the client
                    // watches again from its last resourceVersion.
                    Ok(Notice::CloseWatches) | Err(_) => return,
                },
            };
            if lines.send(line).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(body, |mut body| async move {
        body.recv()
            .await
            .map(|line| (Ok::<_, std::convert::Infallible>(line), body))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
