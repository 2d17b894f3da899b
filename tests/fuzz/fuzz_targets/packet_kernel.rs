//! Random frames through the real classifiers (BPF_PROG_TEST_RUN) against the userspace
//! model: the kernel's verdict for a new flow is the model's, on endpoints programmed
//! with random policies. Needs root and bpffs at /sys/fs/bpf; the pins live in a
//! directory of this process's own, removed at exit.
//! Input: a selector byte (endpoint, direction), then the Ethernet frame.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use netwarden_agent::datapath::{
    model::{
        packet::{packet_verdict, EndpointState},
        scenario::{Packet, Scenario, Shape, Transport},
    },
    pins::ScratchPinRoot,
    rules::Direction,
    Datapath, EndpointKey, EndpointSettings, Hook, Verdict,
};
use netwarden_common::verdict;
use netwarden_fuzz::packets::{model_state, PacketInput, SCENARIO_SEEDS};

/// BPF_PROG_TEST_RUN takes frames from an Ethernet header up to about a page; real
/// interfaces deliver nothing shorter, and the model is checked on those alone.
const FRAME_LEN: std::ops::RangeInclusive<usize> = 14..=1514;

/// Dropped at exit (thread-locals of the main thread are), in field order: the programs,
/// their runtime, then the pins directory.
struct Kernel {
    datapath: Datapath,
    endpoints: Vec<(EndpointKey, EndpointState)>,
    _runtime: tokio::runtime::Runtime,
    _pins: ScratchPinRoot,
}

impl Kernel {
    fn load() -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let _entered = runtime.enter();
        let pins = ScratchPinRoot::create("fuzz");
        let mut datapath = Datapath::load_at(pins.root().clone())
            .expect("the datapath loads (run as root, with bpffs mounted at /sys/fs/bpf)");
        let endpoints: Vec<(EndpointKey, EndpointState)> = SCENARIO_SEEDS
            .iter()
            .enumerate()
            .map(|(i, &seed)| {
                let scenario = Scenario::generate(seed);
                let endpoint = EndpointKey {
                    netns_cookie: seed,
                    ifindex: i as u32 + 2,
                    _pad: 0,
                };
                let settings = EndpointSettings {
                    anti_spoof: scenario.anti_spoof,
                    report_allows: false,
                };
                let config = datapath
                    .program(&endpoint, &scenario.policy, &scenario.addresses, settings)
                    .expect("endpoint programmed");
                (endpoint, model_state(&scenario, config))
            })
            .collect();
        drop(_entered);
        // The programs run on a plain TCP frame, so a refusal later is the frame's doing.
        let frame = Packet {
            direction: Direction::Ingress,
            src: [192, 0, 2, 1].into(),
            dst: [10, 9, 0, 5].into(),
            src_port: 40000,
            transport: Transport::Tcp { dst_port: 80 },
            shape: Shape::Plain,
        }
        .frame();
        for (endpoint, _) in &endpoints {
            datapath
                .test_run(Hook::Ingress, endpoint, &frame, 1)
                .expect("the classifier runs on a well-formed frame");
            datapath.clear_flows(endpoint).expect("flows cleared");
        }
        Self {
            datapath,
            endpoints,
            _runtime: runtime,
            _pins: pins,
        }
    }
}

/// Whether the kernel answered EINVAL somewhere down `error`'s chain.
fn invalid_argument(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return io.raw_os_error() == Some(libc::EINVAL);
        }
        cause = error.source();
    }
    false
}

thread_local! {
    static KERNEL: RefCell<Option<Kernel>> = const { RefCell::new(None) };
}

fuzz_target!(
    // Loading and programming the classifiers takes seconds of verifier time on a busy
    // machine: done before libFuzzer's per-input timer, not in the first input.
    init: KERNEL.with_borrow_mut(|kernel| *kernel = Some(Kernel::load())),
    |data: &[u8]| {
        let Some(input) = PacketInput::new(data) else {
            return;
        };
        if !FRAME_LEN.contains(&input.frame.len()) {
            return;
        }
        KERNEL.with_borrow_mut(|kernel| {
            let kernel = kernel.as_mut().expect("loaded by init");
            let (endpoint, model) = &kernel.endpoints[input.endpoint];
            let hook = match input.direction {
                Direction::Ingress => Hook::Ingress,
                Direction::Egress => Hook::Egress,
            };
            let expected = packet_verdict(model, input.direction, input.frame);
            let got = match kernel.datapath.test_run(hook, endpoint, input.frame, 1) {
                Ok(outcome) => outcome.verdict(),
                // BPF_PROG_TEST_RUN refuses some truncated network headers outright; the
                // program is never run on them.
                Err(error) if invalid_argument(&error) => return,
                Err(error) => panic!("BPF_PROG_TEST_RUN: {error}"),
            };
            let expected_verdict = if expected.verdict == verdict::ALLOW {
                Verdict::Allow
            } else {
                Verdict::Deny
            };
            assert_eq!(
                got,
                Some(expected_verdict),
                "{:?} on endpoint {}: the model says {expected:?}",
                input.direction,
                input.endpoint
            );
            // Every input is a new flow.
            kernel
                .datapath
                .clear_flows(endpoint)
                .expect("flows cleared");
        });
    }
);
