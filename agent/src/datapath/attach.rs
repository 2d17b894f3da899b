//! Attaching the classifiers to a pod interface inside its network namespace: TCX links,
//! pinned so they outlive the agent, or clsact + cls_bpf filters ([`super::clsact`]) where
//! the kernel has no TCX or the operator asks for them ([`AttachMode`]).
use std::{
    collections::HashSet,
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    },
    sys::SyscallError,
};
use netwarden_common::EndpointKey;

use super::{
    clsact::{self, Site},
    loader::classifier,
    test_run::Hook,
    Datapath, DatapathError, InterfaceTarget,
};
use crate::netns;

/// The hooks a pod interface gets.
const HOOKS: [Hook; 2] = [Hook::Ingress, Hook::Egress];

/// How the classifiers are hooked onto an interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// TCX; clsact + cls_bpf from the first time the kernel refuses TCX (before 6.6).
    #[default]
    Auto,
    /// TCX links only (kernel 6.6+).
    Tcx,
    /// A clsact qdisc with cls_bpf filters (any kernel).
    Clsact,
}

impl Datapath {
    /// Chooses how later [`Datapath::attach`] calls hook the classifiers on. An interface
    /// attached the other way is switched over by its next attach: the new hook first,
    /// then the old one removed, so it is never unguarded.
    pub fn set_attach_mode(&mut self, mode: AttachMode) {
        self.attach_mode = mode;
    }

    /// Attaches the ingress and egress classifiers to `target` and returns its endpoint key.
    ///
    /// Idempotent: a link already pinned for this interface (by this or an earlier agent),
    /// or our cls_bpf filter already on it, is adopted and switched to this process's
    /// program in one atomic update, never attached a second time. Packets are dropped
    /// until [`Datapath::program`] gives the endpoint its tables (fail closed).
    pub fn attach(&mut self, target: &InterfaceTarget) -> Result<EndpointKey, DatapathError> {
        let endpoint = endpoint_key(target)?;
        let pins = self.pins.clone();
        for hook in HOOKS {
            let mode = self.attach_mode;
            let program = classifier(self.instance(&endpoint)?, hook.program_name())?;
            let site = Site {
                ifname: target.ifname.as_str(),
                endpoint: &endpoint,
                hook,
                pins: &pins,
            };
            let used = netns::run_in(&target.netns, || attach_hook(program, &site, mode))?
                .map_err(|reason| DatapathError::Attach {
                    target: target.clone(),
                    reason,
                })?;
            if mode == AttachMode::Auto && used == AttachMode::Clsact {
                tracing::warn!(
                    "the kernel refuses TCX on {target}: attaching with clsact + cls_bpf from now on"
                );
                self.attach_mode = used;
            }
        }
        Ok(endpoint)
    }

    /// Detaches the classifiers from `target` and frees every table entry of its endpoint.
    /// A clsact qdisc netwarden added goes too, unless another tool's filters use it.
    pub fn detach(&mut self, target: &InterfaceTarget) -> Result<(), DatapathError> {
        let endpoint = endpoint_key(target)?;
        let filtered = HOOKS
            .iter()
            .any(|hook| self.pins.filter(&endpoint, *hook).exists());
        if filtered || self.attach_mode == AttachMode::Clsact {
            let ifname = target.ifname.as_str();
            let pins = &self.pins;
            netns::run_in(&target.netns, || {
                HOOKS.into_iter().try_for_each(|hook| {
                    clsact::remove(&Site {
                        ifname,
                        endpoint: &endpoint,
                        hook,
                        pins,
                    })
                })
            })?
            .map_err(|reason| DatapathError::Detach {
                target: target.clone(),
                reason,
            })?;
        }
        self.forget(&endpoint)
    }

    /// Unpins the endpoint's links (which detaches them) and filter programs and frees its
    /// table entries. For an interface that is gone (its filters went with it): a cls_bpf
    /// filter on a live interface stays until [`Datapath::detach`], dropping every packet
    /// once the tables are freed.
    pub fn forget(&mut self, endpoint: &EndpointKey) -> Result<(), DatapathError> {
        for hook in HOOKS {
            unpin_link(&self.pins.link(endpoint, hook))?;
            clsact::remove_record(&self.pins.filter(endpoint, hook))?;
        }
        clsact::remove_record(&self.pins.own_clsact(endpoint))?;
        self.instances.remove(endpoint);
        self.free(endpoint)
    }

    /// Forgets every endpoint that has something here (a pinned link or filter program, a
    /// qdisc record, a slot with its table entries) but is not in `live`, and returns
    /// them: what a sandbox leaves when its DEL runs without the agent (`netwarden-cni`
    /// does it from the cache while the agent is down) or the agent dies between a DEL's
    /// delegates and its release. Their interfaces are gone with their sandboxes.
    pub fn forget_all_but(
        &mut self,
        live: &HashSet<EndpointKey>,
    ) -> Result<Vec<EndpointKey>, DatapathError> {
        let mut stale = self.pins.recorded_endpoints()?;
        stale.extend(self.slots.assigned().map(|(key, _)| *key));
        let mut seen = HashSet::new();
        stale.retain(|key| !live.contains(key) && seen.insert(*key));
        for key in &stale {
            self.forget(key)?;
        }
        Ok(stale)
    }

    /// Whether both hooks of `endpoint` hold a pinned link or filter program of ours.
    pub fn is_attached(&self, endpoint: &EndpointKey) -> bool {
        HOOKS.iter().all(|hook| {
            self.pins.link(endpoint, *hook).exists() || self.pins.filter(endpoint, *hook).exists()
        })
    }
}

/// The endpoint key of `target`: the cookie of its network namespace and its ifindex
/// there, as the classifiers see them (`bpf_get_netns_cookie`, `skb->ifindex`).
pub fn endpoint_key(target: &InterfaceTarget) -> Result<EndpointKey, DatapathError> {
    let ifname = CString::new(target.ifname.as_str()).expect("interface names have no NUL");
    let identify = |reason: String| DatapathError::Identify {
        target: target.clone(),
        reason,
    };
    let (cookie, ifindex) = netns::run_in(&target.netns, || {
        // SAFETY: plain syscalls on a NUL-terminated name; the socket is owned at once.
        let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        (netns_cookie(), ifindex)
    })?;
    if ifindex == 0 {
        return Err(identify(format!(
            "no interface {} in that namespace",
            target.ifname
        )));
    }
    let cookie = cookie.map_err(|e| identify(format!("SO_NETNS_COOKIE: {e}")))?;
    Ok(EndpointKey {
        netns_cookie: cookie,
        ifindex,
        _pad: 0,
    })
}

/// The current thread's network namespace cookie: a socket belongs to the namespace of the
/// thread that creates it, and `SO_NETNS_COOKIE` reads that namespace's cookie (the value
/// `bpf_get_netns_cookie` returns for packets on its interfaces).
fn netns_cookie() -> std::io::Result<u64> {
    // SAFETY: socket(2) returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the buffer is a u64 and len says so.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Runs inside the interface's namespace; returns the mode the hook was attached with, and
/// removes the hook's attachment of the other kind (left by an agent in another mode).
fn attach_hook(
    program: &mut SchedClassifier,
    site: &Site<'_>,
    mode: AttachMode,
) -> Result<AttachMode, String> {
    let link_pin = site.pins.link(site.endpoint, site.hook);
    let used = match mode {
        AttachMode::Clsact => AttachMode::Clsact,
        AttachMode::Tcx | AttachMode::Auto => match attach_tcx(program, site, &link_pin) {
            Ok(()) => AttachMode::Tcx,
            Err(e) if mode == AttachMode::Auto && refuses_tcx(&e) => AttachMode::Clsact,
            Err(e) if refuses_tcx(&e) => {
                return Err(format!(
                    "the kernel refuses TCX ({}): set attachMode to auto or clsact",
                    with_causes(&e)
                ))
            }
            Err(e) => return Err(with_causes(&e)),
        },
    };
    if used == AttachMode::Clsact {
        clsact::attach(program, site)?;
        unpin_link(&link_pin).map_err(|e| e.to_string())?;
    } else if site.pins.filter(site.endpoint, site.hook).exists() {
        clsact::remove(site)?;
    }
    Ok(used)
}

/// Adopts the hook's pinned TCX link, or creates and pins one.
fn attach_tcx(
    program: &mut SchedClassifier,
    site: &Site<'_>,
    link_pin: &Path,
) -> Result<(), ProgramError> {
    let failed = |e: &dyn std::fmt::Display| {
        ProgramError::IOError(std::io::Error::other(format!(
            "{}: {e}",
            link_pin.display()
        )))
    };
    if link_pin.exists() {
        match adopt(program, link_pin) {
            Ok(()) => return Ok(()),
            // A defunct link (its interface was deleted and the ifindex reused): replace.
            Err(e) => {
                tracing::info!("replacing stale link {}: {e}", link_pin.display());
                std::fs::remove_file(link_pin).map_err(|e| failed(&e))?;
            }
        }
    }
    let id = program.attach_with_options(
        site.ifname,
        site.hook.attach_type(),
        TcAttachOptions::TcxOrder(LinkOrder::default()),
    )?;
    let link: FdLink = program
        .take_link(id)?
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| failed(&e))?;
    link.pin(link_pin).map_err(|e| failed(&e))?;
    Ok(())
}

/// Whether `error` is the kernel saying it has no TCX: a kernel before 6.6 does not know
/// the TCX attach types and answers BPF_LINK_CREATE with EINVAL (or "not supported").
fn refuses_tcx(error: &ProgramError) -> bool {
    const ENOTSUPP: i32 = 524; // the kernel-internal "not supported" some paths leak
    matches!(
        error,
        ProgramError::SyscallError(SyscallError { call: "bpf_mprog_attach", io_error })
            if matches!(io_error.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP))
    )
}

/// An error with its causes: aya's errors put the errno below a generic top line
/// ("`bpf_mprog_attach` failed", "netlink error").
pub(super) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Points the pinned link at `program` (atomic: packets see the old or the new program).
fn adopt(program: &mut SchedClassifier, link_pin: &Path) -> Result<(), String> {
    let pinned = PinnedLink::from_pin(link_pin).map_err(|e| e.to_string())?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())?;
    let id = program.attach_to_link(link).map_err(|e| e.to_string())?;
    // Dropping our fd leaves the pin holding the link.
    drop(program.take_link(id).map_err(|e| e.to_string())?);
    Ok(())
}

fn unpin_link(path: &Path) -> Result<(), DatapathError> {
    if !path.exists() {
        return Ok(());
    }
    let failed = |reason: String| DatapathError::Pin {
        path: path.to_owned(),
        reason,
    };
    // Hold our own reference while unpinning, so that ours is the last one: closing an fd
    // detaches the link before close returns, whereas a removed pin releases it later from
    // a kernel work queue (packets would still meet the program for a while).
    let link = PinnedLink::from_pin(path).map_err(|e| failed(e.to_string()))?;
    let link = link.unpin().map_err(|e| failed(e.to_string()))?;
    drop(link);
    Ok(())
}

impl Hook {
    pub(super) fn attach_type(self) -> TcAttachType {
        match self {
            Hook::Egress => TcAttachType::Egress,
            Hook::Ingress => TcAttachType::Ingress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_kernel_without_tcx_sends_auto_to_clsact() {
        let error = |call, errno| {
            ProgramError::SyscallError(SyscallError {
                call,
                io_error: std::io::Error::from_raw_os_error(errno),
            })
        };
        assert!(refuses_tcx(&error("bpf_mprog_attach", libc::EINVAL)));
        assert!(refuses_tcx(&error("bpf_mprog_attach", libc::EOPNOTSUPP)));
        assert!(!refuses_tcx(&error("bpf_mprog_attach", libc::EPERM)));
        assert!(!refuses_tcx(&error("bpf_link_update", libc::EINVAL)));
    }
}
