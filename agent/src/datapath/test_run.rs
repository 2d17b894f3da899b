//! Running a classifier on a crafted frame with BPF_PROG_TEST_RUN (aya 0.14 exposes it
//! as `TestRun` on `SchedClassifier`): the verdict tests and the benchmark use it.
use std::time::Duration;

use aya::{
    programs::{TestRun, TestRunOptions},
    Ebpf,
};
use netwarden_common::{names, EndpointKey};

use super::{
    events::Verdict,
    loader::{classifier, load_program},
    Datapath, DatapathError,
};

/// Which classifier of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    pub fn program_name(self) -> &'static str {
        match self {
            Self::Ingress => names::PROG_INGRESS,
            Self::Egress => names::PROG_EGRESS,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// The benchmark's reference programs: never attached, tied to no endpoint, loaded on
/// first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// Passes every packet without looking: the floor.
    Passthrough,
    /// Only the flow-table lookup an established packet needs (a miss): a lower bound.
    FlowLookup,
    /// Only the flow, peer and port lookups a new flow needs (misses): a lower bound.
    NewFlowLookups,
    /// The new-flow lookups, then the flow's insert into the flow table: a lower bound.
    /// It writes: only for scratch maps.
    NewFlowAdmission,
}

impl Reference {
    fn program_name(self) -> &'static str {
        match self {
            Self::Passthrough => names::PROG_PASSTHROUGH,
            Self::FlowLookup => names::PROG_FLOW_LOOKUP,
            Self::NewFlowLookups => names::PROG_NEW_FLOW_LOOKUPS,
            Self::NewFlowAdmission => names::PROG_NEW_FLOW_ADMISSION,
        }
    }
}

/// What one test run returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The tc action the program returned.
    pub return_value: u32,
    /// Mean time per run, as the kernel measured it.
    pub per_run: Duration,
}

impl TestRunOutcome {
    /// TC_ACT_OK is allow, TC_ACT_SHOT deny; the classifiers return nothing else.
    pub fn verdict(&self) -> Option<Verdict> {
        match self.return_value {
            0 => Some(Verdict::Allow),
            2 => Some(Verdict::Deny),
            _ => None,
        }
    }
}

impl Datapath {
    /// Runs `hook`'s program of `endpoint` (loaded for it if it is not attached) `repeat`
    /// times on `frame`, Ethernet header first. The endpoint key is compiled into the
    /// program instance, so the run sees exactly the tables a packet on that interface does.
    pub fn test_run(
        &mut self,
        hook: Hook,
        endpoint: &EndpointKey,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, DatapathError> {
        run(self.instance(endpoint)?, hook.program_name(), frame, repeat)
    }

    /// Runs a reference program `repeat` times on `frame`, loading it on first use.
    pub fn test_run_reference(
        &mut self,
        reference: Reference,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, DatapathError> {
        let name = reference.program_name();
        if classifier(&mut self.shared, name)?.fd().is_err() {
            load_program(&mut self.shared, name)?;
        }
        run(&mut self.shared, name, frame, repeat)
    }
}

fn run(
    ebpf: &mut Ebpf,
    name: &'static str,
    frame: &[u8],
    repeat: u32,
) -> Result<TestRunOutcome, DatapathError> {
    let result = classifier(ebpf, name)?
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: repeat.max(1),
            ..TestRunOptions::new()
        })
        .map_err(|source| DatapathError::TestRun {
            program: name,
            source: Box::new(source),
        })?;
    Ok(TestRunOutcome {
        return_value: result.return_value,
        per_run: result.duration,
    })
}
