//! The runtime's environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
//! CNI_ARGS, CNI_PATH; any bytes, non-UTF-8 included). Input: the six values separated by
//! NUL (an empty value is an unset variable). An error names the variable; an accepted
//! request renders back to the same environment, and its container ID keeps the cache
//! file inside the cache directory.
#![no_main]

use std::{
    collections::HashMap,
    ffi::OsString,
    os::unix::ffi::OsStrExt,
    path::{Component, Path},
};

use libfuzzer_sys::fuzz_target;
use netwarden_cni::{cache::Cache, protocol::Request};

const VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

fuzz_target!(|data: &[u8]| {
    let values = netwarden_fuzz::fields::<6>(data);
    let env: HashMap<&str, OsString> = VARS
        .iter()
        .zip(values)
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (*k, std::ffi::OsStr::from_bytes(v).to_owned()))
        .collect();
    let request = match Request::from_vars(|key| env.get(key).cloned()) {
        Ok(request) => request,
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("CNI_"), "{message}");
            return;
        }
    };
    if let Some(id) = &request.container_id {
        let cache = Cache::new("/var/lib/netwarden/cache");
        let file = cache.path(id);
        assert_eq!(file.parent(), Some(Path::new("/var/lib/netwarden/cache")));
        assert!(file
            .components()
            .all(|c| !matches!(c, Component::ParentDir)));
    }
    if let Some(netns) = &request.netns {
        assert!(netns.is_absolute());
    }
    let rendered: HashMap<&str, OsString> = request.to_vars().into_iter().collect();
    let again =
        Request::from_vars(|key| rendered.get(key).cloned()).expect("a rendered request parses");
    // The interface name is only read for per-container commands.
    assert_eq!(again, request);
});
