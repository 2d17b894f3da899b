//! The policy engine: pure functions from cluster objects to per-interface datapath rules.
