//! Privileged: in clsact mode the datapath shares the interface's tc hooks with whatever
//! else is there. Detaching removes only netwarden's filters, and the clsact qdisc only
//! when netwarden added it and nothing else uses it; another tool's filter where ours goes
//! is an error naming the place, not something to replace.
use netwarden_agent::{
    datapath::{pins::ScratchPinRoot, AttachMode, Datapath},
    lab::topology::PodPair,
};
use netwarden_tests::hooks::{hooked, Hooked};

/// A datapath in clsact mode pinned under its own root, and a pod pair to attach to.
fn setup(prefix: &str) -> anyhow::Result<(PodPair, ScratchPinRoot, Datapath)> {
    let pods = PodPair::create(prefix)?;
    let pins = ScratchPinRoot::create(prefix);
    let mut datapath = Datapath::load_at(pins.root().clone())?;
    datapath.set_attach_mode(AttachMode::Clsact);
    Ok((pods, pins, datapath))
}

/// `tc ARGS` on the server's interface (`dev eth0` follows the first two words).
fn tc(pods: &PodPair, args: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["tc", args[0], args[1], "dev", pods.ifname.as_str()];
    argv.extend_from_slice(&args[2..]);
    pods.server.exec(&argv)?;
    Ok(())
}

/// A u32 filter matching nothing in particular, on `hook` at `priority`: another tool's.
fn foreign_filter(pods: &PodPair, hook: &str, priority: &str) -> anyhow::Result<()> {
    let args = [
        "filter", "add", hook, "prio", priority, "u32", "match", "u32", "0", "0",
    ];
    tc(pods, &[&args[..], &["classid", "1:1"]].concat())
}

#[tokio::test]
async fn detach_keeps_a_clsact_qdisc_netwarden_did_not_add() -> anyhow::Result<()> {
    let (pods, _pins, mut datapath) = setup("t-cls-keep")?;
    tc(&pods, &["qdisc", "add", "clsact"])?;
    let target = pods.server_interface();
    datapath.attach(&target)?;
    assert_eq!(hooked(&pods.server, "eth0"), Hooked::cls_bpf());

    datapath.detach(&target)?;
    let left = Hooked {
        clsact: true,
        ..Hooked::nothing()
    };
    assert_eq!(hooked(&pods.server, "eth0"), left);
    Ok(())
}

#[tokio::test]
async fn detach_leaves_another_tools_filters_and_their_qdisc() -> anyhow::Result<()> {
    let (pods, _pins, mut datapath) = setup("t-cls-share")?;
    let target = pods.server_interface();
    datapath.attach(&target)?; // adds the qdisc
    foreign_filter(&pods, "ingress", "100")?;
    let theirs = hooked(&pods.server, "eth0").filters.0[1..].to_vec();
    assert!(!theirs.is_empty() && theirs.iter().all(|f| f == "u32"));

    datapath.detach(&target)?;
    let left = Hooked {
        filters: (theirs, Vec::new()),
        clsact: true,
        ..Hooked::nothing()
    };
    assert_eq!(hooked(&pods.server, "eth0"), left);
    Ok(())
}

#[tokio::test]
async fn a_foreign_filter_where_ours_goes_is_an_error_naming_the_place() -> anyhow::Result<()> {
    let (pods, _pins, mut datapath) = setup("t-cls-taken")?;
    tc(&pods, &["qdisc", "add", "clsact"])?;
    foreign_filter(&pods, "ingress", "1")?;
    let error = datapath
        .attach(&pods.server_interface())
        .expect_err("attached beside a foreign filter at our priority")
        .to_string();
    assert!(
        error.contains("interface eth0")
            && error.contains("priority 1")
            && error.contains("Ingress"),
        "{error}"
    );
    assert_eq!(hooked(&pods.server, "eth0").filters.1, Vec::<String>::new());
    Ok(())
}
