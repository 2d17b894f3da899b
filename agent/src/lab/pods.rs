//! Pods: a namespace each, attached through the real `netwarden-cni` binary executed the
//! way a container runtime on the pod's node executes it, and a server for the pod's
//! declared ports.
use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    fabric,
    process::{self, ProcessError},
    spec::PodName,
    state::{LabState, PodRecord, ProcessRecord},
    topology::TopologyError,
};
use crate::lab::spec::Protocol;

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("pod {pod}: {source}")]
    Netns { pod: PodName, source: TopologyError },
    #[error("pod {pod}: cannot run {}: {source}", binary.display())]
    RunCni {
        pod: PodName,
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("pod {pod}: CNI {command} failed: {output}")]
    Cni {
        pod: PodName,
        command: &'static str,
        output: String,
    },
    #[error("pod {pod}: node {node} is not in this lab")]
    NoNode { pod: PodName, node: String },
    #[error("pod {pod}: server: {source}")]
    Server { pod: PodName, source: ProcessError },
    #[error("pod {pod}: the server did not bind its ports (its log: {})", log.display())]
    ServerNotReady { pod: PodName, log: PathBuf },
    #[error("netwarden-cni is not beside {} nor in /opt/cni/bin: build it (`cargo build -p netwarden-cni`)", beside.display())]
    NoCniBinary { beside: PathBuf },
}

/// The `netwarden-cni` binary: beside this `netwarden` (a cargo build), else installed.
pub fn cni_binary() -> Result<PathBuf, PodError> {
    let exe = std::env::current_exe().unwrap_or_default();
    let beside = exe.with_file_name("netwarden-cni");
    [beside.clone(), PathBuf::from("/opt/cni/bin/netwarden-cni")]
        .into_iter()
        .find(|path| path.is_file())
        .ok_or(PodError::NoCniBinary { beside })
}

/// The record of a pod about to be created on `node`.
pub fn record(
    lab: &LabState,
    pod: &PodName,
    uid: String,
    node: String,
    ports: Vec<super::spec::ContainerPort>,
) -> PodRecord {
    PodRecord {
        netns: lab.netns_name(&format!("{}-{}", pod.namespace, pod.name)),
        container_id: lab.container_id(pod),
        pod: pod.clone(),
        uid,
        node,
        ports,
        server: None,
    }
}

/// Creates the pod's namespace and runs CNI ADD for it.
pub fn attach(lab: &LabState, pod: &PodRecord) -> Result<(), PodError> {
    fabric::add_netns(&pod.netns).map_err(|source| PodError::Netns {
        pod: pod.pod.clone(),
        source,
    })?;
    cni(lab, pod, "ADD")
}

/// Runs CNI DEL for the pod (also when the agent is gone: netwarden-cni then releases
/// from its cache) and deletes its namespace. Tolerates a half-made pod.
pub fn detach(lab: &LabState, pod: &PodRecord) -> Result<(), PodError> {
    if let Some(server) = &pod.server {
        process::stop(server);
    }
    // Without its node there is no agent nor cache to run DEL against; `lab down`
    // releases what such a pod held by its container ID.
    let node_exists = lab.node(&pod.node).is_some_and(|node| {
        std::path::Path::new("/run/netns")
            .join(&node.netns)
            .exists()
    });
    let deleted = if node_exists {
        cni(lab, pod, "DEL")
    } else {
        Ok(())
    };
    // What a crashed `lab up` started but never recorded (a server) goes too.
    process::stop_all_in(&pod.netns);
    fabric::delete_netns(&pod.netns).map_err(|source| PodError::Netns {
        pod: pod.pod.clone(),
        source,
    })?;
    deleted
}

/// Starts the server for the pod's declared ports (none when it declares none).
pub fn start_server(lab: &LabState, pod: &PodRecord) -> Result<Option<ProcessRecord>, PodError> {
    if pod.ports.is_empty() {
        return Ok(None);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let logs = lab.root().join("pods");
    let base = format!("{}_{}", pod.pod.namespace, pod.pod.name);
    let ready = logs.join(format!("{base}.ready"));
    let _ = std::fs::remove_file(&ready);
    let mut argv = vec![
        exe.display().to_string(),
        "lab".into(),
        "serve".into(),
        "--name".into(),
        lab.name.to_string(),
        "--pod".into(),
        pod.pod.to_string(),
        "--ready".into(),
        ready.display().to_string(),
    ];
    for port in &pod.ports {
        argv.push(match port.protocol {
            Protocol::Tcp => "--tcp".into(),
            Protocol::Udp => "--udp".into(),
        });
        argv.push(port.port.to_string());
    }
    let log = logs.join(format!("{base}.log"));
    let _ = std::fs::create_dir_all(&logs);
    let server = process::spawn_in(&pod.netns, &argv, &log).map_err(|source| PodError::Server {
        pod: pod.pod.clone(),
        source,
    })?;
    // Probes right after `lab up` or `lab apply` must find the ports open.
    let deadline = Instant::now() + SERVER_READY_WITHIN;
    while !ready.exists() {
        if Instant::now() > deadline {
            process::stop(&server);
            return Err(PodError::ServerNotReady {
                pod: pod.pod.clone(),
                log,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Some(server))
}

/// How long a pod's server may take to bind its ports.
const SERVER_READY_WITHIN: Duration = Duration::from_secs(5);

/// `netwarden-cni` with CNI_COMMAND=`command`, run in the pod's node namespace with the
/// environment and stdin a runtime gives it.
fn cni(lab: &LabState, pod: &PodRecord, command: &'static str) -> Result<(), PodError> {
    let node = lab.node(&pod.node).ok_or_else(|| PodError::NoNode {
        pod: pod.pod.clone(),
        node: pod.node.clone(),
    })?;
    let binary = cni_binary()?;
    let run_error = |source| PodError::RunCni {
        pod: pod.pod.clone(),
        binary: binary.clone(),
        source,
    };
    let config = std::fs::read(&node.cni_config).map_err(run_error)?;
    let args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.pod.namespace, pod.pod.name, pod.container_id, pod.uid
    );
    let cni_path = lab
        .cni_path
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(&binary)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", format!("/run/netns/{}", pod.netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(run_error)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(&config).map_err(run_error)?;
    drop(stdin);
    let output = child.wait_with_output().map_err(run_error)?;
    if output.status.success() {
        return Ok(());
    }
    Err(PodError::Cni {
        pod: pod.pod.clone(),
        command,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}
