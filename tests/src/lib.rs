//! Support shared by the end-to-end tests and the benchmarks of this crate.
pub mod hooks;
pub mod lab;
pub mod node;
pub mod tamper;
pub mod truth;
