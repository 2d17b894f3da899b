//! Privileged: hostile values (`..`, `/`, NUL, overlong, non-UTF-8) from the runtime's
//! environment and stdin, from a client of the attach socket and from the cluster's
//! objects, against the real `netwarden-cni` binary and a real agent. Each is refused
//! with an error naming what is wrong, and nothing outside the test's own directories is
//! written or deleted: a canary directory that the hostile values point into stays as it
//! was, and so does everything the node holds (cache, manifests, allocations, links).
use std::{
    collections::BTreeMap,
    ffi::OsString,
    io::{BufRead, BufReader, Write},
    os::unix::{ffi::OsStringExt, fs::symlink, net::UnixStream},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use netwarden_tests::node::{binary, Lab, Pod};
use serde_json::{json, Value};

/// A directory outside the lab holding one file, which hostile paths aim at.
struct Canary {
    dir: tempfile::TempDir,
}

const CANARY_TEXT: &str = "netwarden must never touch this";

impl Canary {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("canary dir");
        std::fs::write(dir.path().join("victim.json"), CANARY_TEXT).expect("canary file");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `path` relative to `from`, climbing out with `..`.
    fn relative_from(&self, from: &Path) -> String {
        let ups = from.components().count();
        format!("{}{}", "../".repeat(ups), self.path().display())
    }

    #[track_caller]
    fn assert_untouched(&self) {
        assert_eq!(tree(self.path()).len(), 1, "{:?}", tree(self.path()));
        assert_eq!(
            std::fs::read_to_string(self.path().join("victim.json")).expect("canary file"),
            CANARY_TEXT
        );
    }
}

/// Every file and directory under `dir` with its size and modification time.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                pending.push(entry.path());
            }
            found.insert(entry.path(), (meta.len(), meta.modified().expect("mtime")));
        }
    }
    found
}

/// What a refused request may not change: the node's files and the links of the node and
/// the pod's sandbox.
struct Untouched<'a> {
    lab: &'a Lab,
    pod: &'a Pod,
    files: BTreeMap<PathBuf, (u64, SystemTime)>,
    node_links: String,
}

impl<'a> Untouched<'a> {
    fn record(lab: &'a Lab, pod: &'a Pod) -> Self {
        Self {
            lab,
            pod,
            files: node_files(lab),
            node_links: node_links(lab),
        }
    }

    #[track_caller]
    fn check(&self, case: &str) {
        assert_eq!(
            node_files(self.lab),
            self.files,
            "{case}: the node's files changed"
        );
        assert_eq!(
            node_links(self.lab),
            self.node_links,
            "{case}: the node's links changed"
        );
        assert!(
            self.pod.interfaces().is_empty(),
            "{case}: the sandbox got {:?}",
            self.pod.interfaces()
        );
    }
}

/// The node's files but the agent's log, which grows by the refusal's own log line.
fn node_files(lab: &Lab) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = tree(lab.dir.path());
    files.remove(&lab.agent_log());
    files
}

fn node_links(lab: &Lab) -> String {
    let out = lab
        .node
        .exec(&["ip", "-o", "link", "show"])
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn netwarden_config(lab: &Lab) -> Value {
    json!({"cniVersion": "1.0.0", "name": "netwarden", "type": "netwarden-cni",
           "socket": lab.socket(), "cacheDir": lab.path("cache"), "agentWaitSeconds": 10})
}

/// `netwarden-cni` for `pod` with `overrides` in its environment and `stdin`: it must fail
/// with a CNI error whose message contains `expected`.
#[track_caller]
fn refused(
    lab: &Lab,
    command: &str,
    pod: &Pod,
    overrides: &[(&str, OsString)],
    stdin: &[u8],
    expected: &str,
) {
    let (code, stdout) = lab.exec_plugin_raw(
        &binary("netwarden-cni"),
        command,
        pod,
        "eth0",
        overrides,
        stdin,
    );
    let error: Value = serde_json::from_slice(&stdout)
        .unwrap_or_else(|e| panic!("{overrides:?}: stdout is not a CNI error ({e}): {stdout:?}"));
    assert_eq!(code, 1, "{overrides:?}: {error}");
    let message = error["msg"].as_str().unwrap_or_default();
    assert!(
        message.contains(expected),
        "{overrides:?}: {message:?} does not name {expected:?}"
    );
    assert_ne!(error["code"], 0, "{error}");
}

#[test]
fn hostile_runtime_environment_is_refused_and_changes_nothing() {
    let mut lab = Lab::new("hostile-env");
    let canary = Canary::new();
    let pod = lab.pod("default", "macvlan-conf");
    let untouched = Untouched::record(&lab, &pod);
    let cache = lab.path("cache");
    let escape = canary.relative_from(&cache);
    let absolute = canary.path().join("victim").display().to_string();
    let overlong = "a".repeat(300);
    let non_utf8 = || OsString::from_vec(vec![b'.', b'.', b'/', 0xff, 0xfe]);
    let config = netwarden_config(&lab).to_string();
    for command in ["ADD", "DEL", "CHECK"] {
        for value in [
            OsString::from(".."),
            OsString::from(format!("{escape}/victim")),
            OsString::from(&absolute),
            OsString::from("a/b"),
            OsString::from(&overlong),
            non_utf8(),
        ] {
            refused(
                &lab,
                command,
                &pod,
                &[("CNI_CONTAINERID", value)],
                config.as_bytes(),
                "CNI_CONTAINERID",
            );
            untouched.check(command);
        }
        for value in [
            OsString::from(".."),
            OsString::from("../net1"),
            OsString::from("a/b"),
            OsString::from(&overlong),
            non_utf8(),
        ] {
            refused(
                &lab,
                command,
                &pod,
                &[("CNI_IFNAME", value)],
                config.as_bytes(),
                "CNI_IFNAME",
            );
            untouched.check(command);
        }
        for value in [OsString::from(format!("{escape}/netns")), non_utf8()] {
            refused(
                &lab,
                command,
                &pod,
                &[("CNI_NETNS", value)],
                config.as_bytes(),
                "CNI_NETNS",
            );
            untouched.check(command);
        }
        refused(
            &lab,
            command,
            &pod,
            &[("CNI_ARGS", non_utf8())],
            config.as_bytes(),
            "CNI_ARGS",
        );
        untouched.check(command);
    }
    // The pod named by CNI_ARGS: names no Kubernetes object can have.
    for (namespace, name, expected) in [
        ("../..", pod.name.as_str(), "K8S_POD_NAMESPACE"),
        (escape.as_str(), pod.name.as_str(), "K8S_POD_NAMESPACE"),
        ("default", "../../victim", "K8S_POD_NAME"),
        ("default", absolute.as_str(), "K8S_POD_NAME"),
        ("default", overlong.as_str(), "K8S_POD_NAME"),
    ] {
        let args = format!(
            "K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={}",
            pod.container_id
        );
        refused(
            &lab,
            "ADD",
            &pod,
            &[("CNI_ARGS", args.into())],
            config.as_bytes(),
            expected,
        );
        untouched.check(expected);
    }
    // A network config that is not UTF-8, or not JSON.
    refused(&lab, "ADD", &pod, &[], &[0xff, 0xfe, b'{'], "stdin");
    refused(
        &lab,
        "ADD",
        &pod,
        &[],
        b"{\"cniVersion\": \"1.0.0\", \"socket\": 3",
        "stdin",
    );
    untouched.check("stdin");
    canary.assert_untouched();
    // The pod itself still attaches and detaches: the agent is unharmed.
    assert_eq!(lab.cni("ADD", &pod).0, 0);
    assert_eq!(lab.cni("DEL", &pod).0, 0);
    assert!(lab.allocations().is_empty(), "{:?}", lab.allocations());
    lab.stop_agent();
    canary.assert_untouched();
}

/// Sends one raw line to the attach socket; returns the answer line, if any.
fn socket_exchange(lab: &Lab, line: &[u8]) -> Option<Value> {
    let mut stream = UnixStream::connect(lab.socket()).expect("attach socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // The agent stops reading at its message limit and answers: a longer line ends in
    // a broken pipe, the answer is still there to read.
    match stream
        .write_all(line)
        .and_then(|()| stream.write_all(b"\n"))
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        written => written.expect("request written"),
    }
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).expect("read");
    (!answer.is_empty()).then(|| serde_json::from_str(&answer).expect("the answer is JSON"))
}

#[test]
fn hostile_attach_socket_requests_are_refused_and_change_nothing() {
    let mut lab = Lab::new("hostile-sock");
    let canary = Canary::new();
    let pod = lab.pod("default", "macvlan-conf");
    let untouched = Untouched::record(&lab, &pod);
    let escape = canary.relative_from(&lab.path("cache"));
    let request = |container_id: Value, netns: Value, ifname: Value, name: Value| {
        json!({"kind": "cni", "config": netwarden_config(&lab).to_string(), "request": {
            "command": "ADD", "container_id": container_id, "netns": netns, "ifname": ifname,
            "args": [["K8S_POD_NAMESPACE", "default"], ["K8S_POD_NAME", name],
                     ["K8S_POD_INFRA_CONTAINER_ID", pod.container_id]],
            "path": ["/usr/lib/cni"]}})
    };
    let (id, netns, ifname, name) = (
        json!(pod.container_id),
        json!(pod.netns.path()),
        json!("eth0"),
        json!(pod.name),
    );
    let mut long = br#"{"kind":"ping","pad":""#.to_vec();
    long.extend(std::iter::repeat_n(b'a', 5 << 20));
    long.extend(br#""}"#);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Values the typed request cannot hold.
        (
            request(
                json!(format!("{escape}/victim")),
                netns.clone(),
                ifname.clone(),
                name.clone(),
            ),
            "container ID",
        ),
        (
            request(
                json!("a\u{0}b"),
                netns.clone(),
                ifname.clone(),
                name.clone(),
            ),
            "container ID",
        ),
        (
            request(id.clone(), netns.clone(), json!("../x"), name.clone()),
            "interface name",
        ),
        (
            request(id.clone(), netns.clone(), json!("et\u{0}0"), name.clone()),
            "interface name",
        ),
        (
            request(
                id.clone(),
                netns.clone(),
                json!("a".repeat(16)),
                name.clone(),
            ),
            "interface name",
        ),
        // Values it can hold but no runtime environment can.
        (
            request(
                id.clone(),
                json!(format!("{escape}/netns")),
                ifname.clone(),
                name.clone(),
            ),
            "CNI_NETNS",
        ),
        (
            request(id.clone(), netns.clone(), ifname.clone(), json!("a;b=c")),
            "CNI_ARGS",
        ),
    ]
    .into_iter()
    .map(|(line, expected)| (line.to_string().into_bytes(), expected))
    .chain([
        (vec![b'{', 0xff, 0xfe, b'}'], "not a netwarden request"),
        (long, "longer than"),
        // A well-formed request for a pod no object can be.
        (
            request(
                id.clone(),
                netns.clone(),
                ifname.clone(),
                json!("../../victim"),
            )
            .to_string()
            .into_bytes(),
            "K8S_POD_NAME",
        ),
    ])
    .collect();
    for (line, expected) in cases {
        let shown = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
        let answer = socket_exchange(&lab, &line).unwrap_or_else(|| panic!("no answer to {shown}"));
        assert_eq!(answer["kind"], "failure", "{shown}: {answer}");
        let message = answer["error"]["msg"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{shown}: {message}");
        untouched.check(&shown);
    }
    canary.assert_untouched();
    assert_eq!(lab.cni("ADD", &pod).0, 0, "the agent still serves");
    assert_eq!(lab.cni("DEL", &pod).0, 0);
    lab.stop_agent();
    canary.assert_untouched();
}

#[test]
fn hostile_names_in_objects_are_refused_and_change_nothing() {
    let mut lab = Lab::new("hostile-obj");
    let canary = Canary::new();
    let escape = canary.relative_from(&lab.manifests());
    let cases = [
        (format!("{escape}/victim"), "k8s.v1.cni.cncf.io/networks"),
        (
            "default/../macvlan-conf".to_owned(),
            "k8s.v1.cni.cncf.io/networks",
        ),
        ("macvlan-conf@../../victim".to_owned(), "interface"),
        ("macvlan-conf@net1/../x".to_owned(), "interface"),
        (format!("macvlan-conf@{}", "n".repeat(16)), "interface"),
        (
            r#"[{"name": "macvlan-conf", "namespace": "../.."}]"#.to_owned(),
            r#"namespace "../..""#,
        ),
        (
            r#"[{"name": "macvlan-conf", "interface": "x\u0000"}]"#.to_owned(),
            "interface",
        ),
        (
            format!(r#"[{{"name": "{}"}}]"#, "m".repeat(300)),
            "k8s.v1.cni.cncf.io/networks",
        ),
    ];
    for (networks, expected) in cases {
        let pod = lab.pod("default", &networks);
        let untouched = Untouched::record(&lab, &pod);
        let (code, error) = lab.cni("ADD", &pod);
        assert_eq!(code, 1, "{networks}: {error}");
        let message = error["msg"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{networks}: {message}");
        untouched.check(&networks);
    }
    canary.assert_untouched();
    lab.stop_agent();
}

#[test]
fn cache_and_manifest_files_that_are_links_out_are_never_followed_for_writes() {
    let mut lab = Lab::new("hostile-link");
    let canary = Canary::new();
    let victim = canary.path().join("victim.json");
    // A cache record that is a link to a file elsewhere: DEL and GC read it (and refuse
    // it as corrupt), but never write or delete the file it points to.
    let pod = lab.pod("default", "macvlan-conf");
    std::fs::create_dir_all(lab.path("cache")).expect("cache dir");
    symlink(
        &victim,
        lab.path("cache").join(format!("{}.json", pod.container_id)),
    )
    .expect("link in the cache");
    let (code, error) = lab.cni("DEL", &pod);
    assert_eq!(code, 1, "{error}");
    assert!(
        error["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("corrupt"),
        "{error}"
    );
    canary.assert_untouched();
    std::fs::remove_file(lab.path("cache").join(format!("{}.json", pod.container_id)))
        .expect("link removed");
    // The temporary file beside a manifest that the agent rewrites with network-status,
    // made a link to a file elsewhere before the ADD: the agent replaces the manifest
    // without writing through the link.
    let agent = lab.agent_pid().expect("agent runs");
    let manifest = format!("pod-{}-{}.json", pod.namespace, pod.name);
    symlink(
        &victim,
        lab.manifests()
            .join(format!(".{manifest}.{agent}.netwarden-tmp")),
    )
    .expect("link beside the manifest");
    let (code, result) = lab.cni("ADD", &pod);
    assert_eq!(code, 0, "{result}");
    canary.assert_untouched();
    assert_eq!(lab.network_status(&pod).len(), 2);
    assert_eq!(lab.cni("DEL", &pod).0, 0);
    lab.stop_agent();
    canary.assert_untouched();
}
