//! `cargo xtask setup`: installs what is missing and nothing else, so a second run changes
//! nothing. Prints what it checks and what it does.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{ebpf::Toolchain, run};

/// Needed by the tests and the demo whatever builds the eBPF object.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "containernetworking-plugins",
    "iproute2",
    "iputils-ping",
    "ncat",
    "socat",
    "bpftool",
    // `bench e2e`: iperf3 for throughput, iptables for the multi-networkpolicy-iptables
    // shape it compares against.
    "iperf3",
    "iptables",
    // The containerd test: a real CRI runtime calling netwarden-cni, its pause image from
    // busybox, and protoc for the CRI client's generated code.
    "containerd",
    "runc",
    "busybox-static",
    "protobuf-compiler",
    // The agent keeps a sandbox's new interfaces closed while its ADD runs with an
    // nf_tables table it writes through libnftnl and libmnl (built against their headers,
    // found by pkg-config); the tests read that table back with `nft`.
    "libnftnl-dev",
    "libmnl-dev",
    "pkg-config",
    "nftables",
];
/// Validates the manifests in deploy/ against the Kubernetes schemas, offline.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate";
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// Debian's Rust built on LLVM 22 with its library sources: builds the eBPF object where
/// rustup has no nightly with rust-src (see shared/TOOLCHAIN.md).
const DEBIAN_RUST: &[&str] = &["rustc-web", "cargo-web", "rust-web-src"];
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    run::phase("setup", || {
        let toolchain = Toolchain::detect();
        println!("eBPF toolchain: {toolchain}");
        let mut wanted = PACKAGES.to_vec();
        if toolchain == Toolchain::Debian {
            wanted.extend_from_slice(DEBIAN_RUST);
        }
        packages(&wanted)?;
        kubernetes_validate()?;
        bpf_linker()?;
        bpffs()
    })
}

fn packages(wanted: &[&str]) -> Result<()> {
    let missing: Vec<&str> = wanted.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        println!("packages: all {} present", wanted.len());
        return Ok(());
    }
    need_root(&format!("install Debian packages {}", missing.join(" ")))?;
    println!("packages: installing {}", missing.join(" "));
    run::status(Command::new("apt-get").args(["update", "-qq"]))?;
    run::status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get could not install the packages; is a Debian package mirror reachable?")
}

fn installed(package: &str) -> bool {
    run::output("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|status| status.trim() == "install ok installed")
}

fn kubernetes_validate() -> Result<()> {
    let have = run::output("python3", &["-m", "kubernetes_validate", "--version"]);
    if have
        .as_deref()
        .is_some_and(|v| v.trim() == KUBERNETES_VALIDATE_VERSION)
    {
        println!("{KUBERNETES_VALIDATE}: {KUBERNETES_VALIDATE_VERSION} present");
        return Ok(());
    }
    println!("{KUBERNETES_VALIDATE}: installing {KUBERNETES_VALIDATE_VERSION} from PyPI");
    run::status(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        &format!("{KUBERNETES_VALIDATE}=={KUBERNETES_VALIDATE_VERSION}"),
    ]))
    .context("pip could not install kubernetes-validate: is PyPI reachable?")
}

fn bpf_linker() -> Result<()> {
    let have = run::output("bpf-linker", &["--version"]);
    if have
        .as_deref()
        .is_some_and(|v| v.split_whitespace().any(|w| w == BPF_LINKER_VERSION))
    {
        println!("bpf-linker: {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    println!("bpf-linker: building {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run::status(
        Command::new(cargo)
            .args(["install", "bpf-linker", "--locked", "--force", "--version"])
            .arg(BPF_LINKER_VERSION)
            .args(["--no-default-features", "--features", "llvm-22"])
            // Without it the build script finds no libLLVM and the link fails.
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
    )
    .context("cannot build bpf-linker: is llvm-22-dev installed and crates.io reachable?")
}

fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        matches!(
            (fields.nth(1), fields.next()),
            (Some("/sys/fs/bpf"), Some("bpf"))
        )
    });
    if mounted {
        println!("bpffs: mounted at /sys/fs/bpf");
        return Ok(());
    }
    need_root("mount bpffs at /sys/fs/bpf")?;
    println!("bpffs: mounting at /sys/fs/bpf");
    if !Path::new("/sys/fs/bpf").is_dir() {
        bail!("/sys/fs/bpf does not exist: this kernel has no bpffs mount point");
    }
    run::status(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

fn need_root(to: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("setup needs root to {to}; run it again as root");
    }
    Ok(())
}
