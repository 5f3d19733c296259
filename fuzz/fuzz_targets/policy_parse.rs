//! The policy parser on arbitrary text: loading never panics, and a policy that
//! loads answers `decide` and `explain` without panicking for paths built from its
//! own rules and from the input.
#![no_main]

use fdbroker_policy::{Access, Policy};
use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    let mut paths: Vec<Vec<u8>> = policy
        .rules()
        .iter()
        .flat_map(|r| {
            let p = r.pattern.as_bytes().to_vec();
            let mut child = p.clone();
            child.extend_from_slice(b"/x");
            [p, child]
        })
        .collect();
    paths.extend(policy.roots().iter().map(|r| {
        use std::os::unix::ffi::OsStrExt;
        r.as_os_str().as_bytes().to_vec()
    }));
    paths.push(data.iter().copied().take(256).collect());
    paths.push(b"/".to_vec());
    for (i, _) in policy.clients().iter().enumerate() {
        for path in &paths {
            for access in Access::ALL {
                let _ = policy.decide(fdbroker_policy::ClientId(i), path, access);
            }
        }
    }
    for client in policy.clients() {
        let (uid, gid) = (
            client.users.first().copied(),
            client.groups.first().copied(),
        );
        for path in paths.iter().take(8) {
            let e = policy.explain(uid.unwrap_or(0), gid.unwrap_or(0), path, Access::Read);
            let _ = e.to_string();
        }
    }
});
