//! A `netwarden lab` driven through its command line, as a user runs it: `lab up` on a
//! directory of manifests under a name no other test uses, `lab down` on drop (also when
//! the test fails), and the commands in between.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use netwarden_agent::lab::{
    spec::ContainerPort,
    state::{LabName, LabState},
};
use serde_json::Value;

use crate::node::binary;

/// A truth table as `lab probe --output json` prints it: from -> to -> connected.
pub type Table = BTreeMap<String, BTreeMap<String, bool>>;

/// A directory of this repository's `examples/`.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// A running lab; `lab down` on drop.
pub struct RunningLab {
    pub name: String,
}

impl RunningLab {
    /// `lab up DIR` under a fresh name (`t<pid>-<n>`).
    pub fn up(dir: &Path) -> Self {
        Self::up_with(dir, &[])
    }

    /// `lab up DIR FLAGS...` under a fresh name.
    pub fn up_with(dir: &Path, flags: &[&str]) -> Self {
        let lab = Self::named();
        let mut args = vec!["up", dir.to_str().expect("utf-8 path")];
        args.extend(flags);
        lab.ok(&args);
        lab
    }

    /// A fresh name (`t<pid>-<n>`) and nothing brought up yet; `lab down` on drop all the
    /// same, for a test that runs `lab up` itself.
    pub fn named() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self { name }
    }

    /// `netwarden lab --name NAME ARGS...`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary("netwarden"));
        command.args(["lab", "--name", &self.name]).args(args);
        command
    }

    /// `netwarden lab --name NAME ARGS...`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("netwarden runs")
    }

    /// Like [`run`](Self::run), failing the test unless the command succeeds; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lab {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `lab apply -f FILE`.
    pub fn apply(&self, file: &Path) {
        self.ok(&["apply", "-f", file.to_str().expect("utf-8 path")]);
    }

    /// `lab delete -f FILE`.
    pub fn delete(&self, file: &Path) {
        self.ok(&["delete", "-f", file.to_str().expect("utf-8 path")]);
    }

    /// The lab's state file: nodes, pods, namespaces, the store.
    pub fn state(&self) -> LabState {
        let name: LabName = self.name.parse().expect("a valid lab name");
        LabState::load(&name).expect("the lab's state loads")
    }

    /// `lab probe --output json` on `network` (a NAD, or the cluster network when None).
    pub fn probe(&self, network: Option<&str>, port: ContainerPort) -> Table {
        let port_text = port.port.to_string();
        let protocol = port.protocol.to_string();
        let mut args = vec![
            "probe",
            "--output",
            "json",
            "--port",
            &port_text,
            "--protocol",
            &protocol,
        ];
        if let Some(network) = network {
            args.extend(["--network", network]);
        }
        let json: Value = serde_json::from_str(&self.ok(&args)).expect("probe prints JSON");
        assert_eq!(json["port"], port.port);
        assert_eq!(json["protocol"], protocol.as_str());
        serde_json::from_value(json["matrix"].clone()).expect("matrix of booleans")
    }
}

impl Drop for RunningLab {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}
