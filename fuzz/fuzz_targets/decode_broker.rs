//! The broker's decoder on hostile bytes: whatever a worker sends as a hello or a
//! request. Never panics, holds at most the frame cap (plus one capped list's element
//! headers) of heap, and what decodes re-encodes to the same bytes.
#![no_main]

#[path = "../../shared/tests/support/decode_checks.rs"]
mod checks;

#[global_allocator]
static ALLOC: checks::CountingAlloc = checks::CountingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_broker_side(data);
});
