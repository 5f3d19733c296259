//! The decoder properties, shared by the proptests (`shared/tests/decode_props.rs`)
//! and the cargo-fuzz targets (`fuzz/fuzz_targets/decode_*.rs`), which include this
//! file by path so both check exactly the same thing:
//!
//! * decoding any bytes never panics;
//! * it never holds more than [`ALLOC_BOUND`] bytes of heap at once (measured by
//!   [`CountingAlloc`], which the including binary installs as its global allocator);
//! * a frame that decodes re-encodes to exactly the same bytes (the encoding is
//!   canonical, so a message means one thing to every reader);
//! * a decoded batch or reply stays within the protocol's caps.
//!
//! Each check panics with the offending input on a violation.
#![allow(dead_code)] // each includer uses a different part

use fdbroker_shared::frame::{self, Kind, MAX_MESSAGE};
use fdbroker_shared::wire::{Hello, MAX_BATCH, Op, Reply, ReplyBody, Request, Welcome};
use serde::{Serialize, de::DeserializeOwned};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Most heap a decode may hold at once: the frame cap (every string and path is
/// bounded by it) plus the element headers of one capped list.
pub const ALLOC_BOUND: usize = MAX_MESSAGE + 16 * 1024;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, counting live bytes and their peak per thread.
pub struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to `System`; the counters are plain
// thread-local cells with const initialisers (no allocation, no destructor).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size);
        shrink(layout.size());
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn grow(n: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(n);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn shrink(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(n)));
}

/// Run `f` and return its result with the most heap this thread held during it,
/// above what it held before.
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get).saturating_sub(base))
}

/// Decode `data` as a `T` frame of `kind` under the allocation bound; if it decodes,
/// it must re-encode to the same bytes.
fn decode_checked<T: DeserializeOwned + Serialize + std::fmt::Debug>(
    kind: Kind,
    data: &[u8],
) -> Option<T> {
    let (decoded, peak) = peak_during(|| frame::decode::<T>(kind, data));
    assert!(
        peak <= ALLOC_BOUND,
        "decoding {} bytes as {kind:?} held {peak} bytes of heap (bound {ALLOC_BOUND}): {}",
        data.len(),
        shown(data)
    );
    let msg = decoded.ok()?;
    let mut again = Vec::new();
    if let Err(e) = frame::encode(kind, &msg, &mut again) {
        panic!("{msg:?} decoded from a valid frame but does not encode: {e}");
    }
    assert!(
        again == data,
        "{kind:?} frame does not round-trip: {} decoded as {msg:?}",
        shown(data)
    );
    Some(msg)
}

/// The start of an input, escaped, for a failure message.
fn shown(data: &[u8]) -> String {
    let head = &data[..data.len().min(160)];
    let more = if data.len() > head.len() { "..." } else { "" };
    format!("\"{}\"{more}", head.escape_ascii())
}

/// What the broker decodes from a worker: a hello, then requests.
pub fn check_broker_side(data: &[u8]) {
    let _ = decode_checked::<Hello>(Kind::Hello, data);
    if let Some(Request {
        op: Op::OpenMany { paths, .. },
        ..
    }) = decode_checked::<Request>(Kind::Request, data)
    {
        assert!(paths.len() <= MAX_BATCH, "{} paths decoded", paths.len());
    }
}

/// What the worker decodes from the broker: a welcome, then replies.
pub fn check_worker_side(data: &[u8]) {
    let _ = decode_checked::<Welcome>(Kind::Welcome, data);
    if let Some(reply) = decode_checked::<Reply>(Kind::Reply, data) {
        let n = reply.body.descriptor_count();
        assert!(n <= MAX_BATCH, "reply accounts for {n} descriptors");
        if let ReplyBody::OpenMany(v) = &reply.body {
            assert!(v.len() <= MAX_BATCH, "{} outcomes decoded", v.len());
        }
    }
}
