//! The `netwarden-cni` binary as a runtime executes it: environment in, JSON on stdout,
//! exit status.
use std::{
    io::Write,
    process::{Command, Stdio},
};

use serde_json::Value;

fn run(env: &[(&str, &str)], stdin: &str) -> (i32, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netwarden-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("netwarden-cni starts");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    let out = child.wait_with_output().expect("netwarden-cni ends");
    let json = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).expect("stdout is JSON")
    };
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn version_lists_the_supported_versions() {
    let (code, out) = run(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        serde_json::json!({"cniVersion":"1.1.0","supportedVersions":["0.3.1","0.4.0","1.0.0","1.1.0"]})
    );
}

#[test]
fn errors_are_cni_error_json_in_the_requested_version() {
    let (code, out) = run(&[("CNI_COMMAND", "ADD")], r#"{"cniVersion":"0.4.0"}"#);
    assert_eq!(code, 1);
    assert_eq!(out["cniVersion"], "0.4.0");
    assert_eq!(out["code"], 4);
    assert!(
        out["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{out}"
    );

    let del = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_IFNAME", "eth0"),
    ];
    let (code, out) = run(&del, r#"{"cniVersion":"0.2.0"}"#);
    assert_eq!((code, out["code"].as_u64()), (1, Some(1)), "{out}");

    // A config that is not JSON is named as such, not as a version problem.
    let (code, out) = run(&del, r#"{"cniVersion":"1.0.0","#);
    assert_eq!((code, out["code"].as_u64()), (1, Some(6)), "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("stdin is not JSON"),
        "{out}"
    );
}

#[test]
fn del_without_the_agent_uses_the_cache_and_refuses_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "cniVersion": "1.0.0",
        "cacheDir": dir.path(),
        "socket": dir.path().join("no-agent.sock"),
    })
    .to_string();
    let del = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_IFNAME", "eth0"),
    ];
    // Nothing cached: nothing was added, nothing can leak.
    assert_eq!(run(&del, &config), (0, Value::Null));

    std::fs::write(dir.path().join("abc.json"), "{\"format\":").unwrap();
    let (code, out) = run(&del, &config);
    assert_eq!(code, 1);
    assert_eq!(out["code"], 5);
    assert!(out["msg"].as_str().unwrap().contains("corrupt"), "{out}");
}
