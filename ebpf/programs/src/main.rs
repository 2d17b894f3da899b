//! netwarden's tc classifiers.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::{classifier, map},
    maps::HashMap,
    programs::TcContext,
};
use aya_log_ebpf::info;
use netwarden_common::Ipv4Key;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
/// Offset of the source address inside an IPv4 header.
const IPV4_SRC_OFFSET: usize = 12;

#[map]
static DENY_SOURCES_V4: HashMap<Ipv4Key, u8> = HashMap::with_max_entries(1024, 0);

#[classifier]
pub fn netwarden_ingress(ctx: TcContext) -> i32 {
    match source_denied(&ctx) {
        Some(src) => {
            info!(
                &ctx,
                "drop from {}.{}.{}.{}", src.addr[0], src.addr[1], src.addr[2], src.addr[3]
            );
            TC_ACT_SHOT as i32
        }
        None => TC_ACT_OK as i32,
    }
}

/// The IPv4 source of the packet when the deny map names it.
#[inline(always)]
fn source_denied(ctx: &TcContext) -> Option<Ipv4Key> {
    let ether_type = u16::from_be(ctx.load::<u16>(12).ok()?);
    if ether_type != ETH_P_IP {
        return None;
    }
    let src = Ipv4Key::new(ctx.load::<[u8; 4]>(ETH_HLEN + IPV4_SRC_OFFSET).ok()?);
    // SAFETY: the value is a plain u8 read once; a concurrent update cannot corrupt it.
    unsafe { DENY_SOURCES_V4.get(&src) }.map(|_| src)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
