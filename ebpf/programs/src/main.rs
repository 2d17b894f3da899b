//! netwarden's tc classifiers: one verdict per packet on a pod interface.
//!
//! Order, identical for both hooks (the userspace model in `agent/src/datapath/model.rs`
//! follows the same steps):
//! 1. endpoint: `ENDPOINTS[(netns cookie, ifindex)]`; none -> drop (not programmed);
//! 2. ARP and NDP pass; other non-IP frames are dropped on an isolated direction;
//! 3. a broken or truncated header is malformed (dropped on an isolated direction, else
//!    passed);
//! 4. anti-spoofing on egress;
//! 5. a tracked flow passes, re-checked once after each policy revision;
//! 6. a new flow asks the policy (`policy.rs`) and is tracked when allowed.
#![no_std]
#![no_main]

mod conntrack;
mod events;
mod maps;
mod parse;
mod policy;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_ktime_get_ns,
    macros::classifier,
    programs::TcContext,
    Global,
};
use aya_log_ebpf::info;
use netwarden_common::{
    direction, endpoint_flags, reason, verdict, AddressKey, EndpointConfig, EndpointKey,
};

use crate::{
    maps::{ADDRESSES, ENDPOINTS},
    parse::{Kind, Packet},
    policy::Query,
};

/// The endpoint key of the interface this program instance is attached to, set by the
/// loader (`names::GLOBAL_*`); see [`endpoint`].
#[no_mangle]
static ENDPOINT_NETNS_COOKIE: Global<u64> = Global::new(0);
#[no_mangle]
static ENDPOINT_IFINDEX: Global<u32> = Global::new(0);

#[classifier]
pub fn netwarden_ingress(ctx: TcContext) -> i32 {
    judge(&ctx, direction::INGRESS)
}

#[classifier]
pub fn netwarden_egress(ctx: TcContext) -> i32 {
    judge(&ctx, direction::EGRESS)
}

/// Passes everything without looking: the floor the benchmark measures against.
#[classifier]
pub fn netwarden_passthrough(_ctx: TcContext) -> i32 {
    TC_ACT_OK as i32
}

#[inline(always)]
fn judge(ctx: &TcContext, dir: u8) -> i32 {
    let packet = parse::parse(ctx);
    let Some(config) = endpoint() else {
        events::report(0, dir, verdict::DENY, reason::NOT_PROGRAMMED, &packet);
        return TC_ACT_SHOT as i32;
    };
    let (v, why) = verdict_of(ctx, &config, dir, &packet);
    events::count(config.id, dir, v, ctx.len());
    let report_allow = config.flags & endpoint_flags::REPORT_ALLOWS != 0
        && (why == reason::RULE || why == reason::NOT_ISOLATED);
    if v == verdict::DENY || report_allow {
        events::report(config.id, dir, v, why, &packet);
    }
    if v == verdict::DENY {
        TC_ACT_SHOT as i32
    } else {
        TC_ACT_OK as i32
    }
}

/// The endpoint this packet's interface is.
///
/// Why the identity is sound: the agent loads one instance of these programs per pod
/// interface, with that interface's (netns cookie, ifindex) as constants, and attaches the
/// instance to that interface only. Every packet a program sees is therefore on the
/// interface its constants name, on both hooks, whatever its addresses: two networks with
/// overlapping ranges never mix. The pair itself is unique: an ifindex only inside one
/// network namespace (every pod has an `eth0`, often with the same index), the netns
/// cookie machine-wide, never reused during a boot.
///
/// `bpf_get_netns_cookie(skb)` cannot replace the constant: on this kernel (6.18) a tc
/// program gets the namespace of `skb->sk`, and an ingress packet has no socket, so it
/// returns the initial namespace's cookie for every pod (`tests/tests/datapath_identity.rs`
/// shows the real cookie reaching both hooks with the constant).
#[inline(always)]
fn endpoint() -> Option<EndpointConfig> {
    let key = EndpointKey {
        netns_cookie: ENDPOINT_NETNS_COOKIE.load(),
        ifindex: ENDPOINT_IFINDEX.load(),
        _pad: 0,
    };
    // SAFETY: the value is copied out at once; the agent replaces it as a whole.
    unsafe { ENDPOINTS.get(&key) }.copied()
}

#[inline(always)]
fn verdict_of(ctx: &TcContext, config: &EndpointConfig, dir: u8, packet: &Packet) -> (u8, u8) {
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
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
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
