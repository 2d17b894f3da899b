//! The classifiers as cls_bpf filters under a clsact qdisc: the attach mode for kernels
//! without TCX (before 6.6), or when configured. aya adds and replaces the filters
//! (`TcAttachOptions::Netlink`); rtnetlink lists them and removes the qdisc.
//!
//! Our filter on a hook is the one at [`PRIORITY`] and [`HANDLE`] whose program has our
//! name. That identification is sound: the kernel keys a filter by (interface, parent,
//! chain, priority, handle), so at most one filter sits at our place on each clsact hook
//! and finding it is never ambiguous; a filter kept by the kernel lives exactly as long as
//! its interface, so the place is empty on a recreated interface; and the name (with kind
//! `bpf`) tells ours from another tool's filter that chose the same place, which is refused
//! rather than replaced. Replacing our filter swaps its program in place (cls_bpf publishes
//! the new program with RCU: every packet meets the old or the new one, never none and
//! never both), so adoption never attaches twice.
//!
//! Every function here runs on a thread inside the interface's network namespace.
use std::{io, path::Path};

use aya::programs::{
    links::Link,
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
    SchedClassifier,
};
use futures::TryStreamExt;
use netwarden_common::EndpointKey;
use rtnetlink::packet_route::tc::{
    TcAttribute, TcFilterBpf, TcFilterBpfOption, TcHandle as NlHandle, TcMessage, TcOption,
};

use super::{attach::with_causes, pins::PinRoot, test_run::Hook, DatapathError};

/// Our filter's priority on each hook: 1 runs it before any other classifier there, so
/// policy decides first.
const PRIORITY: u16 = 1;
/// Our filter's handle ("NW"), fixed so that a restarted agent finds the filter again.
const HANDLE: TcHandle = TcHandle::new(0, 0x4e57);

/// One hook of one interface, and where its records are pinned.
pub(super) struct Site<'a> {
    pub ifname: &'a str,
    pub endpoint: &'a EndpointKey,
    pub hook: Hook,
    pub pins: &'a PinRoot,
}

/// Runs `program` as the site's filter: replaces the program of our filter when it is
/// there (left by an earlier agent), adds the filter otherwise, adding the clsact qdisc
/// first when the interface has none. Pins the program as the record of the filter.
pub(super) fn attach(program: &mut SchedClassifier, site: &Site<'_>) -> Result<(), String> {
    let Site {
        ifname,
        endpoint,
        hook,
        pins,
    } = *site;
    let rtnl = Rtnl::open()?;
    add_qdisc(ifname, &pins.own_clsact(endpoint))?;
    let place = format!(
        "cls_bpf filter at priority {PRIORITY} handle {:#x} on {hook:?}",
        u32::from(HANDLE)
    );
    let attached = match rtnl.occupant(endpoint.ifindex, hook)? {
        Occupant::Ours => program.attach_to_link(our_filter(ifname, hook)?),
        Occupant::Nobody => program.attach_with_options(
            ifname,
            hook.attach_type(),
            TcAttachOptions::Netlink(NlOptions {
                priority: PRIORITY,
                handle: HANDLE,
                classid: None,
            }),
        ),
        Occupant::Other(other) => {
            let fix = "remove it or use attachMode tcx";
            return Err(format!("{place} holds {other}, not netwarden's: {fix}"));
        }
    };
    let id = attached.map_err(|e| format!("{place}: {}", with_causes(&e)))?;
    // A filter stays until it is deleted, and aya's handle to it would delete it on drop.
    std::mem::forget(program.take_link(id).map_err(|e| e.to_string())?);
    let record = pins.filter(endpoint, hook);
    remove_record(&record).map_err(|e| e.to_string())?;
    program
        .pin(&record)
        .map_err(|e| format!("pin {}: {e}", record.display()))
}

/// Deletes our filter from the site and its record, then the clsact qdisc when netwarden
/// added it and no filter is left on it (another tool's filters keep it).
pub(super) fn remove(site: &Site<'_>) -> Result<(), String> {
    let ifindex = site.endpoint.ifindex;
    let rtnl = Rtnl::open()?;
    if let Occupant::Ours = rtnl.occupant(ifindex, site.hook)? {
        our_filter(site.ifname, site.hook)?
            .detach()
            .map_err(|e| format!("delete our filter on {:?}: {}", site.hook, with_causes(&e)))?;
    }
    remove_record(&site.pins.filter(site.endpoint, site.hook)).map_err(|e| e.to_string())?;
    let own = site.pins.own_clsact(site.endpoint);
    if own.exists()
        && rtnl.filters(ifindex, Hook::Ingress)?.is_empty()
        && rtnl.filters(ifindex, Hook::Egress)?.is_empty()
    {
        rtnl.delete_qdisc(ifindex)?;
        remove_record(&own).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// aya's handle to our filter on `hook` (whether or not it is there).
fn our_filter(ifname: &str, hook: Hook) -> Result<SchedClassifierLink, String> {
    SchedClassifierLink::attached(ifname, hook.attach_type(), PRIORITY, HANDLE, None)
        .map_err(|e| format!("{ifname}: {e}"))
}

/// Adds the clsact qdisc unless the interface has one, and records in `own` that we did.
/// Recorded after adding: a crash in between leaves an empty qdisc behind, whereas the
/// other order could make a later detach remove a qdisc someone else added.
fn add_qdisc(ifname: &str, own: &Path) -> Result<(), String> {
    match tc::qdisc_add_clsact(ifname) {
        Ok(()) => match std::fs::create_dir(own) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                Err(format!("{}: {e}", own.display()))
            }
            _ => Ok(()),
        },
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(format!("add the clsact qdisc: {}", with_causes(&e))),
    }
}

/// Removes a record (a pinned filter program, or the directory saying a qdisc is ours),
/// if it is there.
pub(super) fn remove_record(path: &Path) -> Result<(), DatapathError> {
    let removed = if path.is_dir() {
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(DatapathError::Pin {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        _ => Ok(()),
    }
}

/// What sits at our place (priority, handle) on a hook.
enum Occupant {
    Nobody,
    Ours,
    /// Another filter, described for the operator.
    Other(String),
}

/// A filter on a clsact hook, as a dump reports it.
struct Filter {
    priority: u16,
    handle: u32,
    kind: Option<String>,
    program: Option<String>,
}

/// rtnetlink in the current thread's namespace (a netlink socket belongs to the namespace
/// of the thread that opens it), driven by a runtime of its own: this thread is outside
/// the agent's runtime and ends with the request.
struct Rtnl {
    runtime: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
}

impl Rtnl {
    fn open() -> Result<Self, String> {
        let failed = |e: io::Error| format!("netlink: {e}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(failed)?;
        let handle = runtime.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(connection);
            Ok(handle)
        });
        Ok(Self {
            handle: handle.map_err(failed)?,
            runtime,
        })
    }

    /// The filters on `hook` of interface `ifindex` (none when it has no clsact qdisc).
    fn filters(&self, ifindex: u32, hook: Hook) -> Result<Vec<Filter>, String> {
        let request = self.handle.traffic_filter(ifindex as i32).get();
        let request = match hook {
            Hook::Egress => request.egress(),
            Hook::Ingress => request.ingress(),
        };
        let messages: Vec<TcMessage> = self
            .runtime
            .block_on(request.execute().try_collect())
            .map_err(|e| format!("list the filters on {hook:?}: {e}"))?;
        // A dump has one entry per (priority, protocol) with handle 0, then the filters.
        Ok(messages
            .iter()
            .filter(|message| message.header.handle != NlHandle::UNSPEC)
            .map(filter)
            .collect())
    }

    fn occupant(&self, ifindex: u32, hook: Hook) -> Result<Occupant, String> {
        let place = self
            .filters(ifindex, hook)?
            .into_iter()
            .find(|f| f.priority == PRIORITY && f.handle == u32::from(HANDLE));
        Ok(match place {
            None => Occupant::Nobody,
            Some(f)
                if f.kind.as_deref() == Some(TcFilterBpf::KIND)
                    && f.program.as_deref() == Some(hook.program_name()) =>
            {
                Occupant::Ours
            }
            Some(f) => Occupant::Other(format!(
                "a {} filter running {}",
                f.kind.as_deref().unwrap_or("nameless"),
                f.program.as_deref().unwrap_or("no named program")
            )),
        })
    }

    /// `tc qdisc del dev IFINDEX clsact`.
    fn delete_qdisc(&self, ifindex: u32) -> Result<(), String> {
        let mut request = self.handle.qdisc().del(ifindex as i32);
        let message = request.message_mut();
        message.header.parent = NlHandle::CLSACT;
        message.header.handle = NlHandle {
            major: 0xffff,
            minor: 0,
        };
        message
            .attributes
            .push(TcAttribute::Kind("clsact".to_owned()));
        self.runtime
            .block_on(request.execute())
            .map_err(|e| format!("delete the clsact qdisc netwarden added: {e}"))
    }
}

fn filter(message: &TcMessage) -> Filter {
    let mut kind = None;
    let mut program = None;
    for attribute in &message.attributes {
        match attribute {
            TcAttribute::Kind(name) => kind = Some(name.clone()),
            TcAttribute::Options(options) => {
                for option in options {
                    if let TcOption::Bpf(TcFilterBpfOption::ProgName(name)) = option {
                        program = Some(name.clone());
                    }
                }
            }
            _ => {}
        }
    }
    Filter {
        priority: (message.header.info >> 16) as u16,
        handle: message.header.handle.into(),
        kind,
        program,
    }
}
