//! netwarden's tc classifiers: one verdict per packet on a pod interface.
//!
//! Order, identical for both hooks (the userspace model in `agent/src/datapath/model.rs`
//! follows the same steps):
//! 1. endpoint: `ENDPOINTS[slot]`; not programmed -> drop;
//! 2. ARP and NDP pass; other non-IP frames are dropped on an isolated direction;
//! 3. a broken or truncated header is malformed (dropped on an isolated direction, else
//!    passed);
//! 4. anti-spoofing on egress;
//! 5. a tracked flow passes, re-checked once after each policy revision;
//! 6. a new flow asks the policy (`policy.rs`) and is tracked when allowed.
//!
//! The established path (steps 1-5) makes two map lookups that are real hash work (the
//! flow) or none at all (the slot and the counter are array indexes), reads the coarse
//! clock, and writes the flow only when its state, revision or age moved.
#![no_std]
#![no_main]

mod baseline;
mod conntrack;
mod events;
mod maps;
mod parse;
mod policy;

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::classifier,
    programs::TcContext,
    Global,
};
use aya_log_ebpf::info;
use netwarden_common::{direction, endpoint_flags, reason, verdict, AddressKey, EndpointConfig};

use crate::{
    maps::{ADDRESSES, ENDPOINTS},
    parse::{Kind, Packet},
    policy::Query,
};

/// The `ENDPOINTS` slot of the interface this program instance is attached to and the
/// slot's epoch, set by the loader (`names::GLOBAL_*`); see [`endpoint`].
#[no_mangle]
static ENDPOINT_SLOT: Global<u32> = Global::new(0);
#[no_mangle]
static ENDPOINT_EPOCH: Global<u32> = Global::new(0);

#[classifier]
pub fn netwarden_ingress(ctx: TcContext) -> i32 {
    judge(&ctx, direction::INGRESS)
}

#[classifier]
pub fn netwarden_egress(ctx: TcContext) -> i32 {
    judge(&ctx, direction::EGRESS)
}

#[inline(always)]
fn judge(ctx: &TcContext, dir: u8) -> i32 {
    let mut packet = MaybeUninit::uninit();
    parse::parse(ctx, &mut packet);
    // SAFETY: `parse` writes the packet on every path.
    let packet = unsafe { packet.assume_init_ref() };
    // SAFETY: a helper without arguments. The coarse clock (jiffies resolution) is
    // enough for flow timeouts of 30 s and more and for the event budget, and cheaper than
    // the precise one. Read once: both the flow and the event budget use it.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let Some(config) = endpoint() else {
        events::report(0, dir, verdict::DENY, reason::NOT_PROGRAMMED, packet, now);
        return TC_ACT_SHOT as i32;
    };
    let (v, why) = verdict_of(ctx, &config, dir, packet, now);
    events::count(config.id, dir, v, ctx.len());
    // Allowed new flows only: RULE, or NOT_ISOLATED on a parsed IP packet (ARP, NDP and
    // unparseable packets on an open direction start no flow).
    let new_flow = why == reason::RULE || (why == reason::NOT_ISOLATED && packet.kind == Kind::Ip);
    let report_allow = config.flags & endpoint_flags::REPORT_ALLOWS != 0 && new_flow;
    if v == verdict::DENY || report_allow {
        events::report(config.id, dir, v, why, packet, now);
    }
    if v == verdict::DENY {
        TC_ACT_SHOT as i32
    } else {
        TC_ACT_OK as i32
    }
}

/// The endpoint this packet's interface is.
///
/// Why the identity is sound: the agent loads one instance of these programs per slot,
/// with the slot and its epoch as constants, and attaches an instance to the hooks of one
/// interface only, the one it records in that slot (with the interface's netns cookie and
/// ifindex, unique machine-wide during a boot). Every packet a program sees is therefore
/// on the interface its slot names, on both hooks, whatever its addresses: two networks
/// with overlapping ranges never mix. A slot is given out again only after its interface
/// was detached and its tables freed, and then with a new epoch: an instance that stayed
/// attached somewhere by mistake finds an epoch that is not its own and drops, as an
/// unprogrammed interface does, instead of reading the new owner's configuration.
///
/// `bpf_get_netns_cookie(skb)` cannot replace the constant: on this kernel (6.18) a tc
/// program gets the namespace of `skb->sk`, and an ingress packet has no socket, so it
/// returns the initial namespace's cookie for every pod (`tests/tests/datapath_identity.rs`
/// shows the real cookie reaching both hooks with the constant).
#[inline(always)]
fn endpoint() -> Option<EndpointConfig> {
    let slot = ENDPOINT_SLOT.load();
    let entry = ENDPOINTS.get_ptr(slot)?;
    // SAFETY: a pointer into the array, valid for this run. `state` is read with one
    // 8-byte load: the agent replaces it with one atomic store, so it is old or new, never
    // a mix. `epoch` does not change while the slot is assigned.
    let (state, epoch) = unsafe { (core::ptr::read_volatile(&(*entry).state), (*entry).epoch) };
    if epoch != ENDPOINT_EPOCH.load() {
        return None;
    }
    EndpointConfig::from_state(slot, state)
}

#[inline(always)]
fn verdict_of(
    ctx: &TcContext,
    config: &EndpointConfig,
    dir: u8,
    packet: &Packet,
    now: u64,
) -> (u8, u8) {
    let isolated = config.flags
        & if dir == direction::INGRESS {
            endpoint_flags::INGRESS_ISOLATED
        } else {
            endpoint_flags::EGRESS_ISOLATED
        }
        != 0;
    let malformed = if isolated {
        (verdict::DENY, reason::MALFORMED)
    } else {
        (verdict::ALLOW, reason::NOT_ISOLATED)
    };
    match packet.kind {
        Kind::Addressing => return (verdict::ALLOW, reason::NOT_ISOLATED),
        Kind::NotIp | Kind::BadNetwork | Kind::BadTransport => return malformed,
        Kind::Ip => {}
    }
    if dir == direction::EGRESS
        && config.flags & endpoint_flags::ANTI_SPOOF != 0
        && !parse::exempt_source(packet)
        && !owns_address(config.id, packet)
    {
        return (verdict::DENY, reason::SPOOFED_SOURCE);
    }
    let key = conntrack::flow_key(config.id, dir, packet);
    if let Some(state) = conntrack::lookup(&key, now) {
        // SAFETY: a map value pointer valid for this run.
        let flow = unsafe { *state };
        if flow.revision != config.revision {
            let recheck = conntrack::origin_query(&key, &flow);
            if policy::decide(config, &recheck) == reason::NO_MATCHING_RULE {
                let _ = maps::CONNTRACK.remove(&key);
                info!(ctx, "endpoint {}: revoked a tracked flow", config.id);
                return (verdict::DENY, reason::REVOKED);
            }
        }
        conntrack::refresh(state, packet, config.revision, now);
        return (verdict::ALLOW, reason::ESTABLISHED);
    }
    let ingress = dir == direction::INGRESS;
    let query = Query {
        direction: dir,
        peer: if ingress { packet.src } else { packet.dst },
        protocol: packet.protocol,
        port: packet.dst_port,
        portless: packet.portless,
    };
    let why = policy::decide(config, &query);
    if why == reason::NO_MATCHING_RULE {
        return (verdict::DENY, why);
    }
    conntrack::track(&key, packet, dir, config.revision, now);
    (verdict::ALLOW, why)
}

/// Anti-spoofing: the source must be one of the endpoint's assigned addresses.
#[inline(always)]
fn owns_address(endpoint: u32, packet: &Packet) -> bool {
    let key = AddressKey {
        endpoint,
        addr: packet.src,
    };
    // SAFETY: only presence is read.
    unsafe { ADDRESSES.get(&key) }.is_some()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
