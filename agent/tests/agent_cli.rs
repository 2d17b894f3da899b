//! `netwarden agent` refuses a bad configuration with an error naming the file and the
//! field, before it touches cluster state, the datapath or the socket.
use std::process::Command;

#[test]
fn a_bad_agent_config_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.json");
    let socket = dir.path().join("agent.sock");
    std::fs::write(
        &config,
        serde_json::json!({
            "clusterNetwork": "/x.conflist",
            "socket": socket,
            "maxConcurrent": 0,
        })
        .to_string(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_netwarden"))
        .args(["agent", "--cluster"])
        .arg(format!("dir:{}", dir.path().display()))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent.json") && stderr.contains("maxConcurrent"),
        "{stderr}"
    );
    assert!(!socket.exists());
}
