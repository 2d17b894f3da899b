//! The local lab: nodes and pods as network namespaces on one machine, joined by real
//! links, running the real datapath.
pub mod cli;
pub mod fabric;
pub mod lifecycle;
pub mod node_agent;
pub mod parallel;
pub mod pods;
pub mod probe;
pub mod process;
pub mod servers;
pub mod spec;
pub mod state;
pub mod store;
pub mod topology;
