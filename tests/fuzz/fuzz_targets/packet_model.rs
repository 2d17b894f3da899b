//! Random frames through the userspace model of the classifiers (`datapath::model`),
//! which `explain` and the kernel differential tests trust: never a panic, and every
//! verdict has a reason that fits the endpoint (nothing is denied on an open direction
//! but spoofing, nothing allowed by a rule where the direction is open).
//! Input: a selector byte (endpoint, direction), then the Ethernet frame.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netwarden_agent::datapath::{
    compile::compile,
    model::{
        packet::{packet_verdict, EndpointState},
        scenario::Scenario,
    },
    rules::{Direction, Isolation},
};
use netwarden_common::{reason, verdict};
use netwarden_fuzz::packets::{model_state, PacketInput, SCENARIO_SEEDS};

fn endpoints() -> &'static [(Scenario, EndpointState)] {
    static ENDPOINTS: OnceLock<Vec<(Scenario, EndpointState)>> = OnceLock::new();
    ENDPOINTS.get_or_init(|| {
        SCENARIO_SEEDS
            .iter()
            .enumerate()
            .map(|(i, &seed)| {
                let scenario = Scenario::generate(seed);
                // Made-up slot and generation: the model alone runs these.
                let config = scenario.config(&compile(i as u32 + 1, 1, &scenario.policy));
                let state = model_state(&scenario, config);
                (scenario, state)
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = PacketInput::new(data) else {
        return;
    };
    let (scenario, state) = &endpoints()[input.endpoint];
    let outcome = packet_verdict(state, input.direction, input.frame);
    let isolated = matches!(
        scenario.policy.direction(input.direction),
        Isolation::Isolated(_)
    );
    let allowed = outcome.verdict == verdict::ALLOW;
    match outcome.reason {
        reason::NOT_ISOLATED => assert!(allowed),
        reason::RULE => assert!(allowed && isolated),
        reason::NO_MATCHING_RULE | reason::MALFORMED => assert!(!allowed && isolated),
        reason::SPOOFED_SOURCE => {
            assert!(!allowed && input.direction == Direction::Egress && scenario.anti_spoof)
        }
        other => panic!("a new flow never gets reason {other}"),
    }
});
