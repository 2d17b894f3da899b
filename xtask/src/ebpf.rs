//! Building the eBPF object. It targets bpfel-unknown-none, which needs `-Z build-std=core`,
//! so it uses a toolchain that has the library sources, never the workspace's own build.
use std::{fmt, path::Path, process::Command};

use anyhow::Result;

use crate::run;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// rustup's nightly with rust-src: the usual aya route on a developer's machine.
    RustupNightly,
    /// Debian's rustc-web + rust-web-src, unlocked with RUSTC_BOOTSTRAP (shared/TOOLCHAIN.md).
    Debian,
}

impl Toolchain {
    /// The rustup nightly route when it can work here, else Debian's packaged Rust.
    pub fn detect() -> Self {
        let nightly_has_src = run::output(
            "rustup",
            &["component", "list", "--toolchain", "nightly", "--installed"],
        )
        .is_some_and(|list| list.lines().any(|c| c.starts_with("rust-src")));
        if nightly_has_src {
            Self::RustupNightly
        } else {
            Self::Debian
        }
    }
}

impl fmt::Display for Toolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RustupNightly => "rustup nightly + rust-src",
            Self::Debian => "Debian rustc-web + rust-web-src (/usr/bin/rustc, RUSTC_BOOTSTRAP=1)",
        })
    }
}

/// Builds `ebpf/programs` into `target/ebpf/bpfel-unknown-none/release/netwarden-ebpf`;
/// target, build-std and BTF flags come from `ebpf/programs/.cargo/config.toml`.
pub fn build(root: &Path) -> Result<()> {
    run::phase("build eBPF object", || {
        let mut cargo = match Toolchain::detect() {
            Toolchain::RustupNightly => {
                let mut c = Command::new("cargo");
                c.arg("+nightly");
                c
            }
            Toolchain::Debian => {
                let mut c = Command::new("/usr/bin/cargo");
                c.env("RUSTC", "/usr/bin/rustc").env("RUSTC_BOOTSTRAP", "1");
                c
            }
        };
        // The variables rustup and the outer cargo set would pull in the userspace toolchain.
        for var in [
            "RUSTUP_TOOLCHAIN",
            "RUSTC_WRAPPER",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
        ] {
            cargo.env_remove(var);
        }
        run::status(
            cargo
                .args(["build", "--release", "--locked"])
                .current_dir(root.join("ebpf/programs")),
        )
    })
}
