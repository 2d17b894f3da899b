//! Privileged: the kernel's verdict (BPF_PROG_TEST_RUN) equals the userspace model's
//! (`datapath::model`) on random policies and random frames of every shape: thousands of
//! cases, reproducible from their seed (`NETWARDEN_DIFFERENTIAL_SEED` replays one). The
//! policies mix host peers and prefixes, single ports and ranges, so the exact hashes and
//! the LPM tries answer side by side.
use std::collections::BTreeSet;

use netwarden_agent::datapath::{
    compile::compile,
    model::{
        packet::{packet_verdict, EndpointState},
        scenario::Scenario,
    },
    pins::ScratchPinRoot,
    rules::Direction,
    Datapath, EndpointKey, EndpointSettings, Hook, Verdict,
};
use netwarden_common::verdict;

const SCENARIOS: u64 = 40;

#[tokio::test]
async fn kernel_and_model_agree_on_new_flows() -> anyhow::Result<()> {
    let seeds: Vec<u64> = match std::env::var("NETWARDEN_DIFFERENTIAL_SEED") {
        Ok(seed) => vec![seed.parse()?],
        Err(_) => (0..SCENARIOS).map(|i| 0x6e77_0000 + i).collect(),
    };
    let pins = ScratchPinRoot::create("t-diff");
    let mut datapath = Datapath::load_at(pins.root().clone())?;
    let mut cases = 0;
    let mut all_four_tables = 0;
    for seed in seeds {
        let scenario = Scenario::generate(seed);
        let endpoint = EndpointKey {
            netns_cookie: seed,
            ifindex: 2,
            _pad: 0,
        };
        let settings = EndpointSettings {
            anti_spoof: scenario.anti_spoof,
            report_allows: false,
        };
        let config =
            datapath.program(&endpoint, &scenario.policy, &scenario.addresses, settings)?;
        let tables = compile(config.id, config.generation as u8, &scenario.policy);
        if !tables.hosts.is_empty()
            && !tables.peers.is_empty()
            && !tables.exact_ports.is_empty()
            && !tables.ports.is_empty()
        {
            all_four_tables += 1;
        }
        let addresses: BTreeSet<_> = scenario.addresses.iter().copied().collect();
        let model = EndpointState::new(config, &tables, addresses);
        for packet in &scenario.packets {
            let frame = packet.frame();
            let hook = match packet.direction {
                Direction::Ingress => Hook::Ingress,
                Direction::Egress => Hook::Egress,
            };
            let kernel = datapath.test_run(hook, &endpoint, &frame, 1)?.verdict();
            let expected = packet_verdict(&model, packet.direction, &frame);
            let expected = if expected.verdict == verdict::ALLOW {
                Verdict::Allow
            } else {
                Verdict::Deny
            };
            assert_eq!(
                kernel,
                Some(expected),
                "seed {seed}: {packet:?} (model reason {:?}); replay with NETWARDEN_DIFFERENTIAL_SEED={seed}",
                packet_verdict(&model, packet.direction, &frame).reason
            );
            // Every case is a new flow: portless packets would otherwise share one.
            datapath.clear_flows(&endpoint)?;
            cases += 1;
        }
        datapath.forget(&endpoint)?;
    }
    assert!(cases >= 120, "only {cases} cases ran");
    if std::env::var_os("NETWARDEN_DIFFERENTIAL_SEED").is_none() {
        assert!(
            all_four_tables >= 10,
            "only {all_four_tables} scenarios filled all four tables"
        );
    }
    Ok(())
}
