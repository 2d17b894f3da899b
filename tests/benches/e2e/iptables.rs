//! The multi-networkpolicy-iptables shape: the rules that project writes into a pod's
//! network namespace for one MultiNetworkPolicy, and the way it writes them.
//!
//! Layout (pkg/server/policyrules.go and server.go of
//! k8snetworkplumbingwg/multi-networkpolicy-iptables): INPUT sends the pod's interface to
//! MULTI-INGRESS (OUTPUT to MULTI-EGRESS, nat PREROUTING returns); MULTI-INGRESS-COMMON
//! accepts established flows; each policy gets MULTI-<i>-INGRESS, which clears two mark
//! bits, jumps to MULTI-<i>-INGRESS-<n>-PORTS (one rule per port, sets the port bit) and
//! MULTI-<i>-INGRESS-<n>-FROM (one rule per peer address, sets the peer bit), returns when
//! both bits are set and drops otherwise. Every FROM rule is evaluated for every new
//! connection (a match only sets a mark). On every change the project reads the filter
//! table (`iptables-save`), renders the pod's whole rule set and loads it with one
//! `iptables-restore --noflush --counters`.
use std::{
    fmt::Write as _,
    io::Write as _,
    net::IpAddr,
    process::{Command, Stdio},
};

use crate::peers::Family;

/// The interface the policy is for, inside the pod.
const INTERFACE: &str = "net1";
const POLICY: &str = "bench-allow";
const NETWORK: &str = "default/net1";

/// The rules of one pod's namespace, for one address family.
pub struct PodRules {
    netns: String,
    family: Family,
}

impl PodRules {
    /// Hooks MULTI-INGRESS and MULTI-EGRESS into the pod's namespace as the project's
    /// `generatePolicyRules` ensures them; the namespace's owner removes them with it.
    pub fn install(netns: &str, family: Family) -> Self {
        let rules = Self {
            netns: netns.to_owned(),
            family,
        };
        rules.iptables(&["-t", "filter", "-N", "MULTI-INGRESS"]);
        rules.iptables(&["-t", "filter", "-N", "MULTI-EGRESS"]);
        rules.iptables(&[
            "-t",
            "filter",
            "-I",
            "INPUT",
            "-i",
            INTERFACE,
            "-j",
            "MULTI-INGRESS",
        ]);
        rules.iptables(&[
            "-t",
            "filter",
            "-I",
            "OUTPUT",
            "-o",
            INTERFACE,
            "-j",
            "MULTI-EGRESS",
        ]);
        rules.iptables(&[
            "-t",
            "nat",
            "-I",
            "PREROUTING",
            "-i",
            INTERFACE,
            "-j",
            "RETURN",
        ]);
        rules
    }

    /// One sync as the project does it on a change: save, render, restore.
    pub fn sync(&self, peers: &[IpAddr], ports: &[u16]) {
        // The project reads the table first to keep the counters of existing chains.
        self.run(self.tool("-save"), &["-t", "filter"], None);
        let rules = render(self.family, peers, ports);
        self.run(
            self.tool("-restore"),
            &["--noflush", "--counters"],
            Some(rules.as_bytes()),
        );
    }

    /// How many rules the pod's filter table holds (for the report).
    pub fn rule_count(&self) -> usize {
        self.run(self.tool("-save"), &["-t", "filter"], None)
            .lines()
            .filter(|line| line.starts_with("-A "))
            .count()
    }

    /// `iptables`, `iptables-save`... of the family (`suffix` "", "-save", "-restore").
    fn tool(&self, suffix: &str) -> String {
        let base = match self.family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        format!("{base}{suffix}")
    }

    fn iptables(&self, args: &[&str]) {
        let mut all = vec!["-w"];
        all.extend_from_slice(args);
        self.run(self.tool(""), &all, None);
    }

    /// Runs an iptables tool inside the pod's namespace; panics with its error output.
    fn run(&self, tool: String, args: &[&str], stdin: Option<&[u8]>) -> String {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.netns, &tool])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool} in {}: cannot start: {e}", self.netns));
        let input = child.stdin.take().expect("piped stdin");
        if let Some(bytes) = stdin {
            let mut input = input;
            input
                .write_all(bytes)
                .unwrap_or_else(|e| panic!("{tool} in {}: writing its input: {e}", self.netns));
        }
        let out = child.wait_with_output().expect("iptables tool ends");
        assert!(
            out.status.success(),
            "{tool} {args:?} in {}: {}",
            self.netns,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The pod's whole filter rule set for the policy allowing `peers` on TCP `ports`.
pub fn render(family: Family, peers: &[IpAddr], ports: &[u16]) -> String {
    let mut out = String::from("*filter\n");
    for chain in [
        "MULTI-INGRESS",
        "MULTI-INGRESS-COMMON",
        "MULTI-EGRESS",
        "MULTI-EGRESS-COMMON",
        "MULTI-0-INGRESS",
        "MULTI-0-INGRESS-0-PORTS",
        "MULTI-0-INGRESS-0-FROM",
    ] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    // IPv6 needs neighbour discovery through the policy: the project's --accept-icmpv6.
    if family == Family::V6 {
        out.push_str("-A MULTI-INGRESS-COMMON -p icmpv6 -j ACCEPT\n");
    }
    out.push_str(
        "-A MULTI-INGRESS-COMMON -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A MULTI-INGRESS -j MULTI-INGRESS-COMMON\n\
         -A MULTI-EGRESS-COMMON -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A MULTI-EGRESS -j MULTI-EGRESS-COMMON\n",
    );
    let _ = writeln!(
        out,
        "-A MULTI-INGRESS -m comment --comment \"policy:{POLICY} net-attach-def:{NETWORK}\" \
         -i {INTERFACE} -j MULTI-0-INGRESS"
    );
    out.push_str(
        "-A MULTI-0-INGRESS -j MARK --set-xmark 0x0/0x30000\n\
         -A MULTI-0-INGRESS -j MULTI-0-INGRESS-0-PORTS\n\
         -A MULTI-0-INGRESS -j MULTI-0-INGRESS-0-FROM\n\
         -A MULTI-0-INGRESS -m mark --mark 0x30000/0x30000 -j RETURN\n\
         -A MULTI-0-INGRESS -j DROP\n",
    );
    for port in ports {
        let _ = writeln!(
            out,
            "-A MULTI-0-INGRESS-0-PORTS -i {INTERFACE} -m tcp -p tcp --dport {port} \
             -j MARK --set-xmark 0x10000/0x10000"
        );
    }
    let prefix = family.host_prefix();
    for peer in peers {
        let _ = writeln!(
            out,
            "-A MULTI-0-INGRESS-0-FROM -i {INTERFACE} -s {peer}/{prefix} \
             -j MARK --set-xmark 0x20000/0x20000"
        );
    }
    out.push_str("COMMIT\n");
    out
}
