//! `netwarden attach-service` refuses a bad configuration with an error naming the file
//! and the field, before it touches cluster state or the socket.
use std::process::Command;

#[test]
fn a_bad_attach_config_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("attach.json");
    std::fs::write(
        &config,
        r#"{"clusterNetwork": "/x.conflist", "maxConcurrent": 0}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_netwarden"))
        .args(["attach-service", "--cluster"])
        .arg(format!("dir:{}", dir.path().display()))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("attach.json") && stderr.contains("maxConcurrent"),
        "{stderr}"
    );
    assert!(!dir.path().join("attach.sock").exists());
}
