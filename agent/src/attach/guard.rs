//! Keeping a sandbox's new interfaces closed to inbound traffic while its ADD runs.
//!
//! A delegate creates an interface, gives it its addresses and brings it up; only then can
//! the agent attach classifiers to it (it did not exist before), and until they are
//! attached and programmed nothing judges what arrives. Measured in the lab, a peer sending
//! without pause had datagrams delivered for ~200 ms of every ADD. So before the delegates
//! run, one nftables table in the sandbox's namespace drops every packet arriving on the
//! interface names the ADD is about to create (matched by name, so it holds from the moment
//! each appears, before it has an address); once the classifiers judge those interfaces,
//! the table goes. ARP is not IP and still passes, as the classifiers let it.
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use netwarden_cni::InterfaceName;

use crate::netns::run_in;

/// The table's name in the sandbox's namespace.
pub const TABLE: &str = "netwarden-add-guard";

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("sandbox {}: cannot close its new interfaces ({interfaces}) to inbound traffic for the ADD: {problem} (the agent needs `nft`, from the nftables package)", netns.display())]
    Close {
        netns: PathBuf,
        interfaces: String,
        problem: String,
    },
    #[error("sandbox {}: cannot remove table inet {TABLE} after its interfaces were enforced on, so they stay closed: {problem}", netns.display())]
    Open { netns: PathBuf, problem: String },
}

/// Inbound traffic on some of a sandbox's interfaces is dropped until [`open`](Self::open).
#[derive(Debug)]
#[must_use = "the interfaces stay closed until the guard is opened"]
pub struct InboundGuard {
    netns: PathBuf,
}

impl InboundGuard {
    /// Closes `interfaces` (which need not exist yet) in the namespace at `netns`; None
    /// when there are none.
    pub fn close(netns: &Path, interfaces: &[InterfaceName]) -> Result<Option<Self>, GuardError> {
        if interfaces.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = interfaces
            .iter()
            .map(|i| format!("\"{}\"", i.as_str()))
            .collect();
        let script = format!(
            "table inet {TABLE} {{\n  chain inbound {{\n    \
             type filter hook prerouting priority -400; policy accept;\n    \
             iifname {{ {} }} drop\n  }}\n}}\n",
            names.join(", ")
        );
        nft(netns, &["-f", "-"], Some(&script)).map_err(|problem| GuardError::Close {
            netns: netns.to_owned(),
            interfaces: names.join(", "),
            problem,
        })?;
        Ok(Some(Self {
            netns: netns.to_owned(),
        }))
    }

    /// Lets traffic in again: call once the interfaces are enforced on (or gone).
    pub fn open(self) -> Result<(), GuardError> {
        nft(&self.netns, &["delete", "table", "inet", TABLE], None).map_err(|problem| {
            GuardError::Open {
                netns: self.netns.clone(),
                problem,
            }
        })
    }
}

/// Runs `nft ARGS` inside the namespace at `netns`, `stdin` on its standard input.
fn nft(netns: &Path, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    run_in(netns, || {
        let mut child = Command::new("nft")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            input
                .write_all(text.as_bytes())
                .map_err(|e| format!("nft: writing its input: {e}"))?;
        }
        let output = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    })
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_close_runs_nothing() {
        // No interface: not even nft is needed (this namespace does not exist).
        let guard = InboundGuard::close(Path::new("/run/netns/nw-never-created"), &[]).unwrap();
        assert!(guard.is_none());
    }

    #[test]
    fn a_missing_namespace_is_an_error_naming_it_and_the_interfaces() {
        let error = InboundGuard::close(
            Path::new("/run/netns/nw-never-created"),
            &["net1".parse().unwrap()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("nw-never-created") && error.contains("\"net1\""),
            "{error}"
        );
    }
}
