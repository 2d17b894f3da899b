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
//!
//! The table is written over netlink (libnftnl through the `nftnl` crate), the way `nft`
//! writes it, without starting a process.
use std::{
    ffi::CString,
    os::fd::{AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
};

use netwarden_cni::InterfaceName;
use nftnl::{nft_expr, Batch, Chain, ChainType, Hook, MsgType, Policy, ProtoFamily, Rule, Table};
use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::netns::run_in;

/// The table's name in the sandbox's namespace.
pub const TABLE: &str = "netwarden-add-guard";

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("sandbox {}: cannot close its new interfaces ({interfaces}) to inbound traffic for the ADD: {problem} (the node's kernel needs nf_tables: CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET)", netns.display())]
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
    /// when there are none. One nf_tables transaction over netlink (no `nft` process: it
    /// cost ~10 ms per ADD): table inet netwarden-add-guard, a prerouting chain at priority
    /// -400, and `iifname "NAME" drop` for each interface.
    pub fn close(netns: &Path, interfaces: &[InterfaceName]) -> Result<Option<Self>, GuardError> {
        if interfaces.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = interfaces
            .iter()
            .map(|i| format!("\"{}\"", i.as_str()))
            .collect();
        let close_error = |problem: String| GuardError::Close {
            netns: netns.to_owned(),
            interfaces: names.join(", "),
            problem,
        };
        let table_name = CString::new(TABLE).expect("no NUL in the table name");
        let table = Table::new(&table_name, ProtoFamily::Inet);
        let chain_name = CString::new("inbound").expect("no NUL in the chain name");
        let mut chain = Chain::new(&chain_name, &table);
        chain.set_type(ChainType::Filter);
        chain.set_hook(Hook::PreRouting, -400);
        chain.set_policy(Policy::Accept);
        let mut batch = Batch::new();
        batch.add(&table, MsgType::Add);
        batch.add(&chain, MsgType::Add);
        for interface in interfaces {
            // Interface names are validated: no NUL, at most 15 bytes.
            let name = CString::new(interface.as_str()).map_err(|e| close_error(e.to_string()))?;
            let mut rule = Rule::new(&chain);
            rule.add_expr(&nft_expr!(meta iifname));
            rule.add_expr(&nft_expr!(cmp == nftnl::expr::InterfaceName::Exact(name)));
            rule.add_expr(&nft_expr!(verdict drop));
            batch.add(&rule, MsgType::Add);
        }
        commit(netns, batch).map_err(close_error)?;
        Ok(Some(Self {
            netns: netns.to_owned(),
        }))
    }

    /// Lets traffic in again: call once the interfaces are enforced on (or gone).
    pub fn open(self) -> Result<(), GuardError> {
        let table_name = CString::new(TABLE).expect("no NUL in the table name");
        let table = Table::new(&table_name, ProtoFamily::Inet);
        let mut batch = Batch::new();
        batch.add(&table, MsgType::Del);
        commit(&self.netns, batch).map_err(|problem| GuardError::Open {
            netns: self.netns.clone(),
            problem,
        })
    }
}

/// Sends `batch` (one transaction: all of it or nothing) to nf_tables inside the namespace
/// at `netns`, and reads what the kernel answered: the first error is the transaction's.
fn commit(netns: &Path, batch: Batch) -> Result<(), String> {
    let batch = batch.finalize();
    run_in(netns, || -> std::io::Result<()> {
        // The socket belongs to the namespace it is opened in: this thread's.
        let socket = mnl::Socket::new(mnl::Bus::Netfilter)?;
        socket.send_all(&batch)?;
        // The kernel runs the whole batch inside the send and queues its answers (errors,
        // and acks for the messages that ask) before the send returns, so what is queued
        // now is all of it; as `nft` does, read until nothing is left.
        // SAFETY: the descriptor is the socket's, open for as long as `socket` lives.
        let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let portid = socket.portid();
        let mut buffer = vec![0; nftnl::nft_nlmsg_maxsize() as usize];
        loop {
            match socket.recv(&mut buffer) {
                Ok(read) => {
                    mnl::cb_run(&buffer[..read], 0, portid)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("nf_tables: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::topology::NetNamespace;

    #[test]
    fn nothing_to_close_runs_nothing() {
        // No interface: not even nft is needed (this namespace does not exist).
        let guard = InboundGuard::close(Path::new("/run/netns/nw-never-created"), &[]).unwrap();
        assert!(guard.is_none());
    }

    /// `nft list ruleset` inside `netns`.
    fn nft_list(netns: &NetNamespace) -> String {
        let out = netns
            .exec(&["nft", "list", "ruleset"])
            .expect("nft lists the ruleset");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn close_writes_the_table_nft_would_and_open_removes_it() {
        let netns = NetNamespace::create("guard").expect("a namespace (run as root)");
        let interfaces = ["net1".parse().unwrap(), "net2".parse().unwrap()];
        let guard = InboundGuard::close(&netns.path(), &interfaces)
            .unwrap()
            .expect("a guard");
        let ruleset = nft_list(&netns);
        let ruleset: Vec<&str> = ruleset.lines().map(str::trim).collect();
        assert_eq!(
            ruleset,
            [
                "table inet netwarden-add-guard {",
                "chain inbound {",
                "type filter hook prerouting priority -400; policy accept;",
                "iifname \"net1\" drop",
                "iifname \"net2\" drop",
                "}",
                "}",
            ]
        );
        // A retried ADD of the same sandbox adds to the table (as `nft -f` would), and one
        // open removes all of it.
        let again = InboundGuard::close(&netns.path(), &interfaces[..1])
            .unwrap()
            .expect("a guard");
        assert_eq!(nft_list(&netns).matches("iifname \"net1\" drop").count(), 2);
        again.open().unwrap();
        assert_eq!(nft_list(&netns).trim(), "");
        // The kernel's refusal is an error naming the sandbox and the table.
        let error = guard.open().unwrap_err().to_string();
        assert!(
            error.contains("nf_tables") && error.contains(netns.name()) && error.contains(TABLE),
            "{error}"
        );
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
