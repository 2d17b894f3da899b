//! Privileged: enforcement outlives the process that set it up, and a new process adopts
//! what it pinned: it changes the tables, and nothing is ever attached twice. Every
//! datapath here is a process of its own (`datapath-program`) that has exited before the
//! traffic is checked; with TCX links and with clsact + cls_bpf filters.
use std::process::Command;

use netwarden_agent::{
    datapath::{pins::ScratchPinRoot, AttachMode, Datapath},
    lab::topology::PodPair,
};
use netwarden_tests::hooks::{hooked, Hooked};

/// Runs a datapath process to its end on the server's interface: ingress allowed from the
/// client only, egress isolated or open. Returns the table id and policy revision it left.
fn datapath_process(
    pods: &PodPair,
    pins: &ScratchPinRoot,
    mode: AttachMode,
    isolate_egress: bool,
) -> (u32, u32) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_datapath-program"));
    command
        .arg("--pins")
        .arg(pins.root().path())
        .arg("--netns")
        .arg(pods.server.path())
        .args(["--ifname", pods.ifname.as_str()])
        .args(["--attach-mode", &format!("{mode:?}").to_lowercase()])
        .args(["--address", &PodPair::SERVER_ADDRESS.to_string()])
        .args(["--allow-from", &PodPair::CLIENT_ADDRESS.to_string()]);
    if isolate_egress {
        command.arg("--isolate-egress");
    }
    let out = command.output().expect("datapath-program runs");
    assert!(
        out.status.success(),
        "datapath-program failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let mut fields = stdout
        .split_whitespace()
        .map(|f| f.parse().expect("a number"));
    (fields.next().expect("id"), fields.next().expect("revision"))
}

fn client_address() -> String {
    PodPair::CLIENT_ADDRESS.to_string()
}

async fn a_new_process_adopts_what_an_exited_one_attached(
    mode: AttachMode,
    expected: Hooked,
) -> anyhow::Result<()> {
    let pods = PodPair::create("t-restart")?;
    let pins = ScratchPinRoot::create("t-restart");
    let hooks = || hooked(&pods.server, pods.ifname.as_str());

    let (id, revision) = datapath_process(&pods, &pins, mode, true);
    assert_eq!(hooks(), expected);
    assert!(
        pods.client_reaches_server()?,
        "allowed ingress (and its replies) stopped with the process"
    );
    assert!(
        !pods.server.ping(&client_address())?,
        "denied egress passed once the process was gone"
    );

    // A new process adopts the same policy: no window, nothing doubled.
    let adopted = datapath_process(&pods, &pins, mode, true);
    assert_eq!(
        adopted,
        (id, revision + 1),
        "new tables instead of adopted ones"
    );
    assert_eq!(hooks(), expected, "attached twice");
    assert!(
        !pods.server.ping(&client_address())?,
        "adoption opened egress"
    );
    assert!(pods.client_reaches_server()?, "adoption closed ingress");

    // And another one changes it.
    let changed = datapath_process(&pods, &pins, mode, false);
    assert_eq!(changed, (id, revision + 2));
    assert_eq!(hooks(), expected, "attached twice");
    assert!(
        pods.server.ping(&client_address())?,
        "the new process's change did not take effect"
    );
    assert!(pods.client_reaches_server()?);

    let mut datapath = Datapath::load_at(pins.root().clone())?;
    datapath.set_attach_mode(mode);
    datapath.detach(&pods.server_interface())?;
    assert_eq!(hooks(), Hooked::nothing());
    assert!(pins.root().attached_endpoints()?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_new_process_adopts_the_tcx_links_an_exited_one_pinned() -> anyhow::Result<()> {
    a_new_process_adopts_what_an_exited_one_attached(AttachMode::Tcx, Hooked::tcx()).await
}

#[tokio::test]
async fn a_new_process_adopts_the_cls_bpf_filters_an_exited_one_added() -> anyhow::Result<()> {
    a_new_process_adopts_what_an_exited_one_attached(AttachMode::Clsact, Hooked::cls_bpf()).await
}

#[test]
fn switching_the_attach_mode_moves_the_hooks_without_doubling_them() -> anyhow::Result<()> {
    let pods = PodPair::create("t-switch")?;
    let pins = ScratchPinRoot::create("t-switch");
    let hooks = || hooked(&pods.server, pods.ifname.as_str());

    // Back to TCX at the end: the clsact qdisc netwarden added goes with its filters.
    let modes = [
        (AttachMode::Tcx, Hooked::tcx()),
        (AttachMode::Clsact, Hooked::cls_bpf()),
        (AttachMode::Tcx, Hooked::tcx()),
    ];
    for (mode, expected) in modes {
        datapath_process(&pods, &pins, mode, true);
        assert_eq!(hooks(), expected, "after switching to {mode:?}");
        assert!(pods.client_reaches_server()?, "{mode:?} closed ingress");
        let opened = pods.server.ping(&client_address())?;
        assert!(!opened, "{mode:?} opened egress");
    }
    Ok(())
}
