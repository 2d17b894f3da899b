//! netwarden's node agent: cluster state, the policy engine, the datapath that enforces
//! policy on pod interfaces, and the local lab that runs it on one machine.
pub mod agent;
pub mod attach;
pub mod cluster;
pub mod datapath;
pub mod install;
pub mod lab;
pub mod netns;
pub mod policy;
