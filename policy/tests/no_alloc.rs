//! `decide` runs once per requested path on the broker's hot path: it must not
//! allocate. A counting global allocator (per thread, so the test harness's own
//! threads do not interfere) checks that for every kind of outcome.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use fdbroker_policy::{Access, Policy};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to `System` unchanged; only counts allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

const POLICY: &str = r#"
[[client]]
name = "c"
users = [1]
[[client.allow]]
path = "/in/"
access = ["read", "directory"]
[[client.allow]]
path = "/in/sub/file"
access = ["write"]
[[client.allow]]
path = "/etc/x/*.conf"
[[client.allow]]
path = "/data/**/y/*.db"
[[client.deny]]
path = "/in/private/"
[[client.deny]]
path = "/in/**/*.key"
"#;

#[test]
fn decide_does_not_allocate() {
    let policy = Policy::parse(POLICY, Path::new("p.toml")).unwrap();
    let client = policy.client_for(1, 1).unwrap();
    let long = {
        let mut p = b"/in/".to_vec();
        p.resize(5000, b'a');
        p
    };
    let requests: &[(&[u8], Access)] = &[
        (b"/in/a/b/c", Access::Read),
        (b"/in", Access::Directory),
        (b"/in/sub/file", Access::Write),
        (b"/in/sub/file", Access::Create),
        (b"/etc/x/a.conf", Access::Read),
        (b"/data/a/b/c/y/z.db", Access::Read),
        (b"/data/a/b/c/y/z.dbx", Access::Read),
        (b"/in/private/x", Access::Read),
        (b"/in/a/b/c.key", Access::Read),
        (b"/nowhere/at/all", Access::Read),
        (b"/in/../etc/shadow", Access::Read),
        (b"relative", Access::Read),
        (&long, Access::Read),
        (b"/in/\xff\xfe", Access::Read),
    ];
    // Warm up anything lazily initialised (e.g. the hasher's random keys).
    for (path, access) in requests {
        std::hint::black_box(policy.decide(client, path, *access));
    }
    let before = allocations();
    let mut allowed = 0;
    for (path, access) in requests {
        allowed +=
            usize::from(std::hint::black_box(policy.decide(client, path, *access)).is_allow());
    }
    assert_eq!(allocations() - before, 0);
    assert_eq!(allowed, 6);
}
