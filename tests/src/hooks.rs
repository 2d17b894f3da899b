//! What is hooked onto an interface, as the kernel reports it (a TCX query and `tc`), not
//! as the datapath's own records say: attach tests check against this.
use aya::programs::{SchedClassifier, TcAttachType};
use netwarden_agent::{
    datapath::{Hook, InterfaceTarget},
    lab::topology::NetNamespace,
    netns,
};
use serde_json::Value;

/// The hooks of one interface, each pair (ingress, egress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooked {
    /// Programs attached with TCX.
    pub tcx: (usize, usize),
    /// tc filters in dump order: `bpf:<program name>` for cls_bpf, the kind for others.
    pub filters: (Vec<String>, Vec<String>),
    /// Whether the interface has a clsact qdisc.
    pub clsact: bool,
}

impl Hooked {
    /// Nothing at all: no TCX program, no qdisc, no filter.
    pub fn nothing() -> Self {
        Self {
            tcx: (0, 0),
            filters: (Vec::new(), Vec::new()),
            clsact: false,
        }
    }

    /// netwarden's classifiers as TCX programs and nothing else.
    pub fn tcx() -> Self {
        Self {
            tcx: (1, 1),
            ..Self::nothing()
        }
    }

    /// netwarden's classifiers as cls_bpf filters under clsact, and nothing else.
    pub fn cls_bpf() -> Self {
        Self {
            tcx: (0, 0),
            filters: (
                vec![format!("bpf:{}", Hook::Ingress.program_name())],
                vec![format!("bpf:{}", Hook::Egress.program_name())],
            ),
            clsact: true,
        }
    }
}

/// Reads the hooks of `ifname` in `netns`.
pub fn hooked(netns: &NetNamespace, ifname: &str) -> Hooked {
    let target = InterfaceTarget {
        netns: netns.path(),
        ifname: ifname.parse().expect("interface name"),
    };
    Hooked {
        tcx: tcx_programs(&target),
        filters: (
            filters(netns, ifname, "ingress"),
            filters(netns, ifname, "egress"),
        ),
        clsact: tc_json(netns, &["qdisc", "show", "dev", ifname])
            .iter()
            .any(|qdisc| qdisc["kind"] == "clsact"),
    }
}

fn tcx_programs(target: &InterfaceTarget) -> (usize, usize) {
    let ifname = target.ifname.as_str();
    netns::run_in(&target.netns, || {
        let count = |hook| {
            SchedClassifier::query_tcx(ifname, hook)
                .expect("TCX query")
                .1
                .len()
        };
        (count(TcAttachType::Ingress), count(TcAttachType::Egress))
    })
    .expect("the interface's namespace")
}

fn filters(netns: &NetNamespace, ifname: &str, hook: &str) -> Vec<String> {
    tc_json(netns, &["filter", "show", "dev", ifname, hook])
        .iter()
        // The entry without options heads a priority; the others are filters.
        .filter(|entry| entry.get("options").is_some())
        .map(|filter| match filter["options"]["bpf_name"].as_str() {
            Some(name) => format!("bpf:{name}"),
            None => filter["kind"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

fn tc_json(netns: &NetNamespace, args: &[&str]) -> Vec<Value> {
    let mut argv = vec!["tc", "-j"];
    argv.extend_from_slice(args);
    let out = netns.exec(&argv).expect("tc runs");
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    serde_json::from_slice(&out.stdout).expect("tc prints JSON")
}
