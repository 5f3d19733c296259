//! Opening a stream of paths with the broker's next batch always in flight.
//!
//! A scanner alternates two kinds of waiting: for the broker to open files, and for its
//! own reading and hashing. [`OpenIter`] overlaps them: when it hands out the first
//! result of a batch, the request for the following batch has already gone out, so the
//! broker opens those files while the caller works through the current ones. At most
//! two batches are outstanding, so at most two batches of descriptors are held.
//!
//! ```no_run
//! let broker = fdbroker_worker::Client::from_env()?;
//! let paths = ["/srv/in/a", "/srv/in/b", "/srv/in/c"];
//! for (path, file) in broker.open_iter(paths) {
//!     println!("{path}: {}", if file.is_ok() { "opened" } else { "refused" });
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use super::pipeline::{CallError, Ticket};
use super::{Client, batch_len, open_many_op};
use fdbroker_shared::wire::Access;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::Path;

/// `(path, result)` pairs for a sequence of paths ([`Client::open_iter`]), in order.
///
/// Each result says what happened to its own path: a refusal for one path never hides
/// another's file. If the connection fails, every path from then on carries that error
/// (a client made from a socket path reconnects once first).
///
/// ```no_run
/// let broker = fdbroker_worker::Client::from_env()?;
/// let paths = (0..1000).map(|i| format!("/var/spool/quarantine/{i}.bin"));
/// let opened = broker.open_iter(paths).filter(|(_, f)| f.is_ok()).count();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct OpenIter<'c, P, I> {
    client: &'c Client,
    paths: std::iter::Fuse<I>,
    access: Access,
    /// Paths taken from `paths` but not yet sent (a batch cut short by the size cap).
    carry: VecDeque<P>,
    /// Results ready to hand out.
    ready: VecDeque<(P, io::Result<File>)>,
    /// The batch requested and not yet collected.
    in_flight: Option<(Ticket, Vec<P>)>,
}

impl<'c, P: AsRef<Path>, I: Iterator<Item = P>> OpenIter<'c, P, I> {
    pub(crate) fn new(client: &'c Client, paths: I, access: Access) -> Self {
        OpenIter {
            client,
            paths: paths.fuse(),
            access,
            carry: VecDeque::new(),
            ready: VecDeque::new(),
            in_flight: None,
        }
    }

    /// Take the next batch's paths from the input; empty when it is exhausted.
    fn next_batch(&mut self) -> Vec<P> {
        let max = self.client.max_batch();
        while self.carry.len() < max {
            match self.paths.next() {
                Some(p) => self.carry.push_back(p),
                None => break,
            }
        }
        let slice = self.carry.make_contiguous();
        if slice.is_empty() {
            return Vec::new();
        }
        let n = batch_len(slice, max);
        self.carry.drain(..n).collect()
    }

    /// Request the next batch, if there is one. A connection that failed is retried
    /// through a reconnect where the client can; otherwise the batch's results are the
    /// error, queued behind what is ready.
    fn request_next(&mut self) {
        let batch = self.next_batch();
        if batch.is_empty() {
            return;
        }
        let op = open_many_op(&batch, self.access, 0);
        let sent = match self.client.pipeline.submit(&op) {
            Err(e @ CallError::Gone { .. }) => self
                .client
                .pipeline
                .recover(e, &op)
                .map_err(CallError::Other)
                .and_then(|()| self.client.pipeline.submit(&op)),
            r => r,
        };
        match sent {
            Ok(ticket) => self.in_flight = Some((ticket, batch)),
            Err(e) => self.fail_batch(batch, e.into_io()),
        }
    }

    /// Collect the batch in flight into `ready`.
    fn collect(&mut self) {
        let Some((ticket, batch)) = self.in_flight.take() else {
            return;
        };
        let results = match self.client.pipeline.collect(ticket) {
            Ok(d) => self.client.batch_outcomes(d, batch.len()),
            Err(e) => {
                let op = open_many_op(&batch, self.access, 0);
                match self.client.pipeline.recover(e, &op) {
                    // Reconnected: this batch again, without pipelining.
                    Ok(()) => self
                        .client
                        .pipeline
                        .submit(&op)
                        .and_then(|t| self.client.pipeline.collect(t))
                        .map_err(CallError::into_io)
                        .and_then(|d| self.client.batch_outcomes(d, batch.len())),
                    Err(e) => Err(e),
                }
            }
        };
        match results {
            Ok(results) => self.ready.extend(
                batch
                    .into_iter()
                    .zip(results)
                    .map(|(p, r)| (p, r.map(|o| o.file))),
            ),
            Err(e) => self.fail_batch(batch, e),
        }
    }

    fn fail_batch(&mut self, batch: Vec<P>, e: io::Error) {
        let kind = e.kind();
        let why = e.to_string();
        self.ready.extend(
            batch
                .into_iter()
                .map(|p| (p, Err(io::Error::new(kind, why.clone())))),
        );
    }
}

impl<P: AsRef<Path>, I: Iterator<Item = P>> Iterator for OpenIter<'_, P, I> {
    type Item = (P, io::Result<File>);

    fn next(&mut self) -> Option<(P, io::Result<File>)> {
        if self.ready.is_empty() {
            if self.in_flight.is_none() {
                self.request_next();
            }
            self.collect();
            // Before handing out this batch, have the broker start on the next one.
            if self.in_flight.is_none() {
                self.request_next();
            }
        }
        self.ready.pop_front()
    }
}

impl<P, I> Drop for OpenIter<'_, P, I> {
    fn drop(&mut self) {
        // Its descriptors are closed when the reply arrives, not held for ever.
        if let Some((ticket, _)) = self.in_flight.take() {
            self.client.pipeline.abandon(ticket);
        }
    }
}
