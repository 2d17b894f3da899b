//! What the agent learns about packets: verdict events (rate-limited) and counters.
use netwarden_common::{counter_index, EventBudget, VerdictEvent};

use crate::{
    maps::{COUNTERS, EVENTS, EVENT_BUDGET},
    parse::Packet,
};

/// Events each CPU may send per second, and the burst it may save up.
const EVENTS_PER_SECOND: u64 = 1000;
const EVENT_BURST: u64 = 1000;
const NS_PER_EVENT: u64 = 1_000_000_000 / EVENTS_PER_SECOND;

/// Adds the packet to its endpoint's (direction, verdict) counter on this CPU.
#[inline(always)]
pub fn count(slot: u32, direction: u8, verdict: u8, bytes: u32) {
    // Out of range only for a slot beyond the array, which the agent never gives out.
    if let Some(counter) = COUNTERS.get_ptr_mut(counter_index(slot, direction, verdict)) {
        // SAFETY: a per-CPU value: no other program run touches it concurrently.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes as u64;
        }
    }
}

/// Sends a verdict event if this CPU's budget allows; otherwise counts it as suppressed.
/// `now` is the coarse clock the verdict read.
#[inline(always)]
pub fn report(endpoint: u32, direction: u8, verdict: u8, reason: u8, packet: &Packet, now: u64) {
    if !take_token(now) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<VerdictEvent>(0) else {
        suppressed();
        return;
    };
    entry.write(VerdictEvent {
        endpoint,
        direction,
        verdict,
        reason,
        protocol: packet.protocol,
        family: packet.family,
        _pad: [0, 0, 0],
        src: packet.src,
        dst: packet.dst,
        src_port: packet.src_port,
        dst_port: packet.dst_port,
    });
    entry.submit(0);
}

/// A token bucket per CPU: refilled by elapsed time, capped at the burst.
#[inline(always)]
fn take_token(now: u64) -> bool {
    let Some(budget) = EVENT_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value, used by one program run at a time on this CPU.
    let budget: &mut EventBudget = unsafe { &mut *budget };
    // `now` has jiffies resolution: the bucket refills in steps of a few milliseconds,
    // the same rate on average.
    let earned = now.saturating_sub(budget.last_refill_ns) / NS_PER_EVENT;
    if earned > 0 {
        budget.tokens = (budget.tokens + earned).min(EVENT_BURST);
        budget.last_refill_ns = now;
    }
    if budget.tokens == 0 {
        budget.suppressed += 1;
        return false;
    }
    budget.tokens -= 1;
    true
}

#[inline(always)]
fn suppressed() {
    if let Some(budget) = EVENT_BUDGET.get_ptr_mut(0) {
        // SAFETY: per-CPU value, as above.
        unsafe { (*budget).suppressed += 1 };
    }
}
