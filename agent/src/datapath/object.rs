//! The eBPF object, embedded at build time (see `agent/build.rs`).

/// Bytes of the object `cargo xtask build-ebpf` produced, 8-byte aligned as aya needs.
pub(super) static BYTES: &[u8] = aya::include_bytes_aligned!(env!("NETWARDEN_EBPF_OBJECT"));
