//! Where a CNI request's time goes: each step of ADD and DEL is timed into
//! `netwarden_attach_stage_seconds{command,stage}` (one observation per step and request)
//! and, at debug level, logged per request, so an operator (and `cargo xtask bench attach`)
//! can see which step is slow.
use std::time::{Duration, Instant};

use netwarden_cni::protocol::Command;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::agent::Metrics;

/// One step of a request in the attach service.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Stage {
    /// Waiting until the cluster state has the pod (with the runtime's UID).
    Pod,
    /// Reading the cluster network's config and resolving the pod's networks.
    Plan,
    /// Closing the new interfaces to inbound traffic before the delegates run, opening
    /// them once they are enforced on (one nf_tables transaction each).
    Guard,
    /// The delegates' executions, the cache writes, the default-route request; with the
    /// wait for a `maxConcurrent` slot and the hop to a blocking thread.
    Delegates,
    /// Waiting for the enforcer, which cluster events also use.
    EnforcerLock,
    /// The policy engine taking in the pod with its new interfaces.
    Engine,
    /// Attaching the eBPF programs to the new interfaces and writing their tables (DEL:
    /// detaching them and freeing their entries).
    Datapath,
    /// Writing network-status through the cluster source.
    Status,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pod => "pod",
            Self::Plan => "plan",
            Self::Guard => "guard",
            Self::Delegates => "delegates",
            Self::EnforcerLock => "enforcer_lock",
            Self::Engine => "engine",
            Self::Datapath => "datapath",
            Self::Status => "status",
        }
    }
}

impl EncodeLabelValue for Stage {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.name(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub command: &'static str,
    pub stage: Stage,
}

/// Times the stages of one request, one after the other.
pub struct Stopwatch<'a> {
    metrics: &'a Metrics,
    command: Command,
    last: Instant,
    laps: Vec<(Stage, Duration)>,
}

impl<'a> Stopwatch<'a> {
    pub fn start(metrics: &'a Metrics, command: Command) -> Self {
        Self {
            metrics,
            command,
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    /// The time since the previous lap was `stage`.
    pub fn lap(&mut self, stage: Stage) {
        self.lap_split(stage, None);
    }

    /// The time since the previous lap was `stage`, except `part` of it, which was `of`.
    pub fn lap_split(&mut self, stage: Stage, part: Option<(Stage, Duration)>) {
        let now = Instant::now();
        let mut took = now - self.last;
        self.last = now;
        if let Some((of, part)) = part {
            let part = part.min(took);
            took -= part;
            self.record(of, part);
        }
        self.record(stage, took);
    }

    fn record(&mut self, stage: Stage, took: Duration) {
        match self.laps.iter_mut().find(|(lapped, _)| *lapped == stage) {
            Some((_, total)) => *total += took,
            None => self.laps.push((stage, took)),
        }
    }
}

impl Drop for Stopwatch<'_> {
    fn drop(&mut self) {
        for (stage, took) in &self.laps {
            self.metrics
                .attach_stage_seconds
                .get_or_create(&StageLabels {
                    command: self.command.as_str(),
                    stage: *stage,
                })
                .observe(took.as_secs_f64());
        }
        if !self.laps.is_empty() && tracing::enabled!(tracing::Level::DEBUG) {
            let laps: Vec<String> = self
                .laps
                .iter()
                .map(|(stage, took)| format!("{}={:.2}ms", stage.name(), took.as_secs_f64() * 1e3))
                .collect();
            tracing::debug!(
                command = self.command.as_str(),
                "stages: {}",
                laps.join(" ")
            );
        }
    }
}
