//! Attaching the classifiers to a pod interface inside its network namespace: TCX links,
//! pinned so they outlive the agent; clsact + cls_bpf where the kernel has no TCX.
use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    util::KernelVersion,
};
use netwarden_common::EndpointKey;

use super::{
    loader::classifier, pins::PinRoot, test_run::Hook, Datapath, DatapathError, InterfaceTarget,
};
use crate::netns;

/// The hooks a pod interface gets.
const HOOKS: [Hook; 2] = [Hook::Ingress, Hook::Egress];

impl Datapath {
    /// Attaches the ingress and egress classifiers to `target` and returns its endpoint key.
    ///
    /// Idempotent: a link already pinned for this interface (by this or an earlier agent)
    /// is adopted and switched to this process's program in one `bpf_link_update`, never
    /// attached a second time. Packets are dropped until [`Datapath::program`] gives the
    /// endpoint its tables (fail closed).
    pub fn attach(&mut self, target: &InterfaceTarget) -> Result<EndpointKey, DatapathError> {
        let endpoint = endpoint_key(target)?;
        for hook in HOOKS {
            let link_pin = self.pins.link(&endpoint, hook);
            let program = classifier(self.instance(&endpoint)?, hook.program_name())?;
            let ifname = target.ifname.as_str();
            netns::run_in(&target.netns, || {
                attach_hook(program, ifname, hook, &link_pin)
            })?
            .map_err(|reason| DatapathError::Attach {
                target: target.clone(),
                reason,
            })?;
        }
        Ok(endpoint)
    }

    /// Detaches the classifiers from `target` and frees every table entry of its endpoint.
    pub fn detach(&mut self, target: &InterfaceTarget) -> Result<(), DatapathError> {
        let endpoint = endpoint_key(target)?;
        if !has_tcx() {
            let ifname = target.ifname.as_str();
            for hook in HOOKS {
                netns::run_in(&target.netns, || {
                    tc::qdisc_detach_program(ifname, hook.attach_type(), hook.program_name())
                })?
                .map_err(|e| DatapathError::Detach {
                    target: target.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        self.forget(&endpoint)
    }

    /// Unpins the endpoint's links (which detaches them) and frees its table entries.
    /// Also works when the namespace is already gone (its links died with the interface).
    pub fn forget(&mut self, endpoint: &EndpointKey) -> Result<(), DatapathError> {
        for hook in HOOKS {
            unpin_link(&self.pins, endpoint, hook)?;
        }
        self.instances.remove(endpoint);
        self.free(endpoint)
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

/// Runs inside the interface's namespace.
fn attach_hook(
    program: &mut SchedClassifier,
    ifname: &str,
    hook: Hook,
    link_pin: &Path,
) -> Result<(), String> {
    if !has_tcx() {
        // Without TCX, cls_bpf needs the clsact qdisc (it may already be there), and a
        // filter left by an earlier agent is replaced rather than doubled.
        let _ = tc::qdisc_add_clsact(ifname);
        let _ = tc::qdisc_detach_program(ifname, hook.attach_type(), hook.program_name());
        let id = program
            .attach(ifname, hook.attach_type())
            .map_err(|e| e.to_string())?;
        // A netlink filter stays until it is removed: keep it past this handle's drop.
        std::mem::forget(program.take_link(id).map_err(|e| e.to_string())?);
        return Ok(());
    }
    if link_pin.exists() {
        match adopt(program, link_pin) {
            Ok(()) => return Ok(()),
            // A defunct link (its interface was deleted and the ifindex reused): replace.
            Err(e) => {
                tracing::info!("replacing stale link {}: {e}", link_pin.display());
                std::fs::remove_file(link_pin).map_err(|e| e.to_string())?;
            }
        }
    }
    let id = program
        .attach_with_options(
            ifname,
            hook.attach_type(),
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| e.to_string())?;
    let link: FdLink = program
        .take_link(id)
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| e.to_string())?;
    link.pin(link_pin).map_err(|e| e.to_string())?;
    Ok(())
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

fn unpin_link(pins: &PinRoot, endpoint: &EndpointKey, hook: Hook) -> Result<(), DatapathError> {
    let path = pins.link(endpoint, hook);
    if !path.exists() {
        return Ok(());
    }
    let failed = |reason: String| DatapathError::Pin {
        path: path.clone(),
        reason,
    };
    // Hold our own reference while unpinning, so that ours is the last one: closing an fd
    // detaches the link before close returns, whereas a removed pin releases it later from
    // a kernel work queue (packets would still meet the program for a while).
    let link = PinnedLink::from_pin(&path).map_err(|e| failed(e.to_string()))?;
    let link = link.unpin().map_err(|e| failed(e.to_string()))?;
    drop(link);
    Ok(())
}

/// TCX (kernel 6.6+) attaches without a qdisc; older kernels need clsact + cls_bpf.
fn has_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v.code() >= KernelVersion::new(6, 6, 0).code())
}

impl Hook {
    pub(super) fn attach_type(self) -> TcAttachType {
        match self {
            Hook::Egress => TcAttachType::Egress,
            Hook::Ingress | Hook::Passthrough => TcAttachType::Ingress,
        }
    }
}
