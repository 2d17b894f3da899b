//! The on-disk sandbox cache (`<cacheDir>/<container ID>.json`), which DEL trusts after a
//! restart or a reboot: any bytes in a record file are read as a record or refused as
//! corrupt, naming the file; never a panic, never a record of another container. An
//! accepted record is written back (atomically) and reads the same, and GC lists it.
//! Input: line 1 the container ID asked for, the rest the file's bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netwarden_cni::{
    cache::{Cache, CacheError},
    protocol::ContainerId,
    status::build_network_status,
};

fn cache() -> &'static Cache {
    static DIR: OnceLock<(tempfile::TempDir, Cache)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cache = Cache::new(dir.path().join("cache"));
        (dir, cache)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let (id, bytes) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"c1"[..], data),
    };
    let Ok(id) = std::str::from_utf8(id).unwrap_or("").parse::<ContainerId>() else {
        return;
    };
    let cache = cache();
    std::fs::create_dir_all(cache.dir()).expect("cache directory");
    let file = cache.path(&id);
    assert_eq!(file.parent(), Some(cache.dir()));
    std::fs::write(&file, bytes).expect("record file written");
    match cache.read(&id) {
        Ok(Some(record)) => {
            assert_eq!(record.container_id, id);
            let _ = build_network_status(&record.attachments);
            cache.write(&record).expect("a record writes back");
            let again = cache.read(&id).expect("reads").expect("present");
            netwarden_fuzz::assert_same(&again, &record);
            assert_eq!(
                cache.container_ids().expect("lists"),
                std::slice::from_ref(&id)
            );
        }
        Ok(None) => panic!("a record file that exists read as absent"),
        Err(CacheError::Corrupt { path, .. }) => assert_eq!(path, file),
        Err(error) => panic!("reading {}: {error}", file.display()),
    }
    cache.remove(&id).expect("removed");
    assert!(cache.container_ids().expect("lists").is_empty());
});
