//! Points `include_bytes_aligned!` at the eBPF object that `cargo xtask build-ebpf` built.
//! The object is never built from here: it needs its own toolchain (see xtask).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=NETWARDEN_EBPF_OBJECT");
    let object = match std::env::var_os("NETWARDEN_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/ebpf/bpfel-unknown-none/release/netwarden-ebpf"),
    };
    if !object.is_file() {
        panic!(
            "the eBPF object {} is missing: run `cargo xtask build-ebpf` first \
             (or `cargo xtask build`, which does both)",
            object.display()
        );
    }
    println!("cargo:rerun-if-changed={}", object.display());
    println!(
        "cargo:rustc-env=NETWARDEN_EBPF_OBJECT={}",
        object.canonicalize().expect("canonical path").display()
    );
}
