//! `netwarden-cni`: the binary the container runtime executes. It will forward each
//! request to the node agent; for now it answers VERSION and refuses the rest with a
//! CNI error, so a runtime never mistakes it for a working plugin.
use std::io::Write;

const SUPPORTED: &str =
    r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.1","0.4.0","1.0.0","1.1.0"]}"#;

fn main() {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let mut stdout = std::io::stdout();
    if command == "VERSION" {
        let _ = writeln!(stdout, "{SUPPORTED}");
        return;
    }
    // Code 4: invalid necessary environment variables / unsupported command here.
    let _ = writeln!(
        stdout,
        r#"{{"cniVersion":"1.1.0","code":4,"msg":"netwarden-cni: command {command:?} is not available in this build","details":"this build only answers VERSION"}}"#
    );
    std::process::exit(1);
}
