//! Pods, Namespaces, MultiNetworkPolicies and NetworkPolicies as JSON (a list of objects,
//! each read as the API's type its `kind` names) through the policy engine: never a panic;
//! deletes leave what a fresh compile of the rest gives; and where the naive reference
//! evaluator can read the cluster, the compiled tables agree with it on every flow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netwarden_agent::cluster::{crd::v1beta2::MultiNetworkPolicy, Object};
use netwarden_fuzz::policy_oracle::{check, latest};
use serde_json::Value;

/// The object `value` describes, if it is one of a kind the engine reads.
fn object(value: Value) -> Option<Object> {
    let kind = value.get("kind")?.as_str()?.to_owned();
    Some(match kind.as_str() {
        "Pod" => Object::Pod(serde_json::from_value(value).ok()?),
        "Namespace" => Object::Namespace(serde_json::from_value(value).ok()?),
        "MultiNetworkPolicy" => Object::MultiNetworkPolicy(
            serde_json::from_value::<Box<MultiNetworkPolicy>>(value).ok()?,
        ),
        "NetworkPolicy" => Object::NetworkPolicy(serde_json::from_value(value).ok()?),
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Array(values)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let objects = values.into_iter().filter_map(object).collect();
    if let Err(problem) = check(&latest(objects)) {
        panic!("{problem}");
    }
});
