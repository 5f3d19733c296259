//! A connection leaving for another server, and arriving from one (see
//! `server::handover`): what moves with it is its socket, how far it got, the
//! descriptors charged to it, and a reply it could not take yet.

use super::{Binding, Conn, Outgoing, Phase};
use crate::audit::Written;
use crate::server::inflight::InFlight;
use fdbroker_policy::ClientId;
use fdbroker_shared::Channel;
use fdbroker_shared::peer::PeerCredentials;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A connection's state as it moves to another server (see `handover`): its socket,
/// how far it got, the descriptors charged to it, and a reply it could not take yet.
#[derive(Debug)]
pub struct Exported {
    pub socket: OwnedFd,
    /// Greeted (serving) or not yet.
    pub greeted: bool,
    pub charged: usize,
    /// A parked reply: the request id, its bytes and its descriptors.
    pub parked: Option<(Option<u64>, Vec<u8>, Vec<OwnedFd>)>,
    /// A connection made by `Connect`, for whose worker's uid this is: it travels
    /// shut down, only so that its charge stays counted ([`Conn::export`]).
    pub derived_uid: Option<u32>,
}

impl Conn {
    /// Everything a successor needs to carry on with this connection, or `None` for a
    /// connection that is closing anyway. Called once no thread serves it; the charge
    /// goes with it (the successor's count takes it over).
    pub fn export(&self) -> io::Result<Option<Exported>> {
        if self.derived {
            return self.export_charge();
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let greeted = match st.phase {
            Phase::AwaitHello => false,
            Phase::Serving { .. } => true,
            Phase::Closing => return Ok(None),
        };
        let socket = self.channel.as_fd().try_clone_to_owned()?;
        let parked = st.pending.take().map(|o| (o.id, o.bytes, o.fds));
        let charged = self.charged.swap(0, Ordering::Relaxed);
        self.inflight.release(self.peer.uid, charged);
        Ok(Some(Exported {
            socket,
            greeted,
            charged,
            parked,
            derived_uid: None,
        }))
    }

    /// A connection made by `Connect` cannot be served by a successor: its identity is
    /// this server's word (`SO_PEERCRED` of a socketpair names the server that made
    /// it), so it ends here, as at a restart. But what was passed on it and not yet
    /// received still sits in its worker's socket, and the kernel counts it against the
    /// broker's user until then: dropping the charge would give the uid a fresh
    /// allowance at every reload. So it is shut down (the worker reads what was queued,
    /// then end-of-file) and travels only for its charge: the successor keeps it,
    /// unserved, among its draining connections until its send queue is empty. A parked
    /// reply is dropped (its descriptors were never passed); with nothing in flight the
    /// connection simply closes here.
    fn export_charge(&self) -> io::Result<Option<Exported>> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.phase = Phase::Closing;
        let held = st.pending.take().map_or(0, |o| o.fds.len());
        let total = self.charged.swap(0, Ordering::Relaxed);
        self.inflight.release(self.peer.uid, total);
        let _ = self.channel.shutdown();
        let charged = total.saturating_sub(held);
        if charged == 0 || matches!(self.channel.unreceived_bytes(), Ok(0)) {
            return Ok(None);
        }
        Ok(Some(Exported {
            socket: self.channel.as_fd().try_clone_to_owned()?,
            greeted: false,
            charged,
            parked: None,
            derived_uid: Some(self.peer.uid),
        }))
    }

    /// Carry on with a connection a predecessor exported. Its client is chosen again
    /// under this server's policy on its next request; its descriptors in flight are
    /// charged here whatever the budget (the kernel already counts them). One passed
    /// for its charge only (`derived_uid`) is charged to that uid and never served.
    pub fn import(
        e: Exported,
        peer: PeerCredentials,
        groups: Box<[u32]>,
        inflight: Arc<InFlight>,
    ) -> (Conn, bool) {
        let Exported {
            socket,
            greeted,
            charged,
            parked,
            derived_uid,
        } = e;
        let mut conn = Conn::new(
            Channel::wrap(socket),
            peer,
            groups,
            Binding::Credentials,
            inflight,
        );
        // A `Connect`-made connection kept for its charge stays one: the next reload
        // passes it on the same way.
        conn.derived = derived_uid.is_some();
        conn.inflight.charge_anyway(peer.uid, charged);
        conn.charged.store(charged, Ordering::Relaxed);
        let has_parked = parked.is_some();
        {
            let mut st = conn.state.lock().unwrap_or_else(|p| p.into_inner());
            if greeted {
                conn.greeted.store(true, Ordering::Relaxed);
                // Generation 0 is never current: the client is looked up again.
                st.phase = Phase::Serving {
                    generation: 0,
                    client: ClientId(0),
                };
            }
            st.pending = parked.map(|(id, bytes, fds)| Outgoing {
                id,
                bytes,
                fds,
                written: Written::by_predecessor(),
            });
        }
        (conn, has_parked)
    }
}
