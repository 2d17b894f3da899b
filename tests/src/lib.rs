//! Support shared by the end-to-end tests and the benchmarks of this crate.
pub mod apiserver;
pub mod greeting;
pub mod hooks;
pub mod lab;
pub mod node;
pub mod tamper;
pub mod truth;
pub mod wait;
