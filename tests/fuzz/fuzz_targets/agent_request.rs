//! One line on the attach socket, as the agent decodes it before anything else (the
//! peer's uid is checked after decoding): a ping or a CNI request with the runtime's
//! stdin. An accepted request holds nothing the runtime's environment could not: the
//! same values re-read from the environment give the same request.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use netwarden_agent::attach::service::runtime_version;
use netwarden_cni::{
    agent_link::{decode, encode, AgentRequest},
    protocol::Request,
};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = decode::<AgentRequest>(data) else {
        return;
    };
    let again: AgentRequest = decode(&encode(&request)).expect("an encoded request decodes");
    assert_eq!(again, request);
    let AgentRequest::Cni { request, config } = request else {
        return;
    };
    if let Ok(config) = serde_json::from_str::<serde_json::Value>(&config) {
        let _ = runtime_version(&config);
    }
    let env: HashMap<&str, std::ffi::OsString> = request.to_vars().into_iter().collect();
    let from_env = Request::from_vars(|key| env.get(key).cloned());
    assert_eq!(from_env.as_ref(), Ok(&request), "{env:?}");
});
