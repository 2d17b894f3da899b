//! The CNI protocol as the runtime and the delegates speak it: versions, commands, the
//! runtime environment, network configurations, results and errors. Pure: no I/O beyond
//! reading the environment handed in.
pub mod args;
pub mod command;
pub mod config;
pub mod container_id;
pub mod error;
pub mod request;
pub mod result;
pub mod version;

pub use args::CniArgs;
pub use command::Command;
pub use config::{ConfList, ConfigError, PluginConf};
pub use container_id::{ContainerId, ContainerIdError};
pub use error::{CniError, ErrorCode};
pub use request::{Request, RequestError};
pub use result::{CniResult, ResultError};
pub use version::{Version, VersionError, VersionInfo};
