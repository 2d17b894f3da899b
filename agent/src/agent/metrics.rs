//! The agent's Prometheus metrics. Latencies and dropped flow records are recorded as they
//! happen; datapath figures (map occupancy, verdict counters, suppressed events) are read
//! from the kernel at scrape time.
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use crate::attach::stages::StageLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub direction: String,
    pub verdict: String,
}

pub struct Metrics {
    registry: Registry,
    /// A CNI ADD, request to answer (delegates, attach, programming, network-status).
    pub attach_seconds: Histogram,
    /// The steps of ADD and DEL (see [`crate::attach::stages::Stage`]).
    pub attach_stage_seconds: Family<StageLabels, Histogram>,
    /// CNI requests admitted on the attach socket (running or queued).
    pub attach_admitted: Gauge,
    /// One cluster event through the engine and into the datapath.
    pub policy_update_seconds: Histogram,
    pub endpoints: Gauge,
    pub map_entries: Family<MapLabels, Gauge>,
    /// Packets per direction and verdict, summed over CPUs and the current endpoints.
    pub verdict_packets: Family<VerdictLabels, Gauge>,
    /// Verdict events the kernel did not send (per-CPU budget spent).
    pub events_suppressed: Gauge,
    /// Flow records a slow `/flows` client missed.
    pub flow_records_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("netwarden");
        let buckets = || exponential_buckets(0.000_5, 2.0, 16);
        let attach_seconds = Histogram::new(buckets());
        let attach_stage_seconds = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
        });
        let attach_admitted = Gauge::default();
        let policy_update_seconds = Histogram::new(buckets());
        let endpoints = Gauge::default();
        let map_entries = Family::default();
        let verdict_packets = Family::default();
        let events_suppressed = Gauge::default();
        let flow_records_dropped = Counter::default();
        registry.register(
            "attach_seconds",
            "CNI ADD latency: delegates, attach, tables written, network-status",
            attach_seconds.clone(),
        );
        registry.register(
            "attach_stage_seconds",
            "One step of a CNI ADD or DEL: pod, plan, guard, delegates, enforcer_lock, engine, datapath, status",
            attach_stage_seconds.clone(),
        );
        registry.register(
            "attach_admitted",
            "CNI requests admitted on the attach socket, running or queued (maxConcurrent + maxQueued at most)",
            attach_admitted.clone(),
        );
        registry.register(
            "policy_update_seconds",
            "One cluster change through the policy engine into the datapath",
            policy_update_seconds.clone(),
        );
        registry.register(
            "endpoints",
            "Pod interfaces this agent enforces on",
            endpoints.clone(),
        );
        registry.register(
            "map_entries",
            "Entries in each eBPF table",
            map_entries.clone(),
        );
        registry.register(
            "verdict_packets",
            "Packets allowed and denied on the current endpoints",
            verdict_packets.clone(),
        );
        registry.register(
            "events_suppressed",
            "Verdict events the datapath did not send (event budget spent)",
            events_suppressed.clone(),
        );
        registry.register(
            "flow_records_dropped",
            "Flow records a slow /flows reader missed",
            flow_records_dropped.clone(),
        );
        Self {
            registry,
            attach_seconds,
            attach_stage_seconds,
            attach_admitted,
            policy_update_seconds,
            endpoints,
            map_entries,
            verdict_packets,
            events_suppressed,
            flow_records_dropped,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
