//! netwarden's node agent: the datapath that enforces policy on pod interfaces, and the
//! local lab that runs it on one machine.
pub mod datapath;
pub mod lab;
pub mod netns;
