//! The worker library's decoder on hostile bytes: whatever a (compromised or fake)
//! broker sends as a welcome or a reply. Same properties as `decode_broker`, plus a
//! decoded reply never accounts for more descriptors than one message may carry.
#![no_main]

#[path = "../../shared/tests/support/decode_checks.rs"]
mod checks;

#[global_allocator]
static ALLOC: checks::CountingAlloc = checks::CountingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_worker_side(data);
});
