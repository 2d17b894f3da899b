//! The local lab: nodes and pods as network namespaces on one machine, joined by real
//! links, running the real datapath.
pub mod demo;
pub mod topology;
