//! What a peer the control socket does not admit is told: every call it makes is answered
//! PERMISSION_DENIED, naming its uid and the key that admits it, instead of a connection
//! dropped without a word (which its client could only report as a reset). The peer gets
//! nothing else: no handler of the control API runs for it. An admitted peer that comes
//! while the control socket holds as many connections as it takes, each busy, is refused
//! the same way, told UNAVAILABLE and why ([`super::conns::Full`]), from slots of its own:
//! a flood of refused uids does not leave it closed without a word.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Set on every refusal (its value: the refused uid), so a client tells the control
/// socket's refusal from a plugin's own PERMISSION_DENIED (or UNAVAILABLE) answer relayed
/// by `call`.
pub const REFUSED_KEY: &str = "x-supervisor-refused";

/// How long a refused peer's connection is served: time enough to read the refusal.
const SERVED_FOR: Duration = Duration::from_secs(2);
/// Refused connections served at once; more are closed without a word, as before.
const AT_ONCE: usize = 16;
/// Admitted peers told at once that the control socket has no room, besides: descriptors
/// kept from the reserve as the refused uids' are.
const NO_ROOM_AT_ONCE: usize = 4;
/// Calls a refused peer may have open at once on its connection.
const STREAMS: u32 = 4;

/// The refusal's text.
pub fn message(uid: u32) -> String {
    format!(
        "permission denied: uid {uid} may not use this supervisor's control socket; \
         add it to control_allowed_uids in the [supervisor] section of its config \
         (root and the supervisor's own uid are always admitted)"
    )
}

/// Answers every request with the refusal of `uid`.
#[derive(Clone, Debug)]
pub struct Refusal {
    uid: u32,
    /// Refused for want of room, not for its uid.
    full: Option<super::conns::Full>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Refusal {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        let mut status = match &self.full {
            None => tonic::Status::permission_denied(message(self.uid)),
            Some(full) => tonic::Status::unavailable(full.to_string()),
        };
        if let Ok(v) = self.uid.to_string().parse() {
            status.metadata_mut().insert(REFUSED_KEY, v);
        }
        std::future::ready(Ok(status.into_http()))
    }
}

/// Serves refusals: a bounded number at once, each for a bounded time, so refused peers
/// cannot hold the daemon's descriptors or memory.
#[derive(Clone, Debug)]
pub struct Refusals {
    slots: Arc<Semaphore>,
    no_room_slots: Arc<Semaphore>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self { slots: Arc::new(Semaphore::new(AT_ONCE)), no_room_slots: Arc::new(Semaphore::new(NO_ROOM_AT_ONCE)) }
    }
}

impl Refusals {
    /// Tells the peer on `stream` (uid `uid`) it is refused, in the background; closes it
    /// at once when as many refusals are being served as may be.
    pub fn refuse(&self, stream: tokio::net::UnixStream, uid: u32) {
        Self::serve(&self.slots, stream, Refusal { uid, full: None });
    }

    /// Tells the admitted peer on `stream` (uid `uid`) that the control socket has no room
    /// for it, as [`Refusals::refuse`] does, with slots of its own.
    pub fn no_room(&self, stream: tokio::net::UnixStream, uid: u32, full: super::conns::Full) {
        Self::serve(&self.no_room_slots, stream, Refusal { uid, full: Some(full) });
    }

    fn serve(slots: &Arc<Semaphore>, stream: tokio::net::UnixStream, refusal: Refusal) {
        let Ok(slot) = slots.clone().try_acquire_owned() else { return };
        tokio::spawn(async move {
            let served = crate::net::serve_h2_with(stream, refusal, Some(STREAMS));
            let _ = tokio::time::timeout(SERVED_FOR, served).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a `status` asked over `theirs` (the other end of a refused peer's socket) is
    /// answered.
    async fn status_over(theirs: tokio::net::UnixStream) -> tonic::Status {
        use plugin_proto::control::v1::StatusRequest;
        use plugin_proto::control::v1::control_client::ControlClient;
        let (channel, conn) =
            plugin_proto::transport::H2Channel::handshake(theirs).await.expect("closed without a word");
        tokio::spawn(conn);
        ControlClient::new(channel).status(StatusRequest::default()).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_refused_peer_reads_why_with_its_uid_and_the_key_that_admits_it() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        Refusals::default().refuse(ours, 4242);
        let status = status_over(theirs).await;
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), message(4242));
        assert!(status.message().contains("uid 4242") && status.message().contains("control_allowed_uids"));
        assert_eq!(status.metadata().get(REFUSED_KEY).unwrap(), "4242");
    }

    #[tokio::test]
    async fn a_peer_without_room_reads_that_the_socket_is_full_and_how_many_it_takes() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        Refusals::default().no_room(ours, 0, super::super::conns::Full { limit: 128 });
        let status = status_over(theirs).await;
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().starts_with("the supervisor's control socket is serving 128 connections"),
            "{status:?}"
        );
        assert_eq!(status.metadata().get(REFUSED_KEY).unwrap(), "0", "supervisorctl says it was refused (exit 5)");
    }

    #[tokio::test]
    async fn a_peer_without_room_is_told_why_while_refused_uids_take_every_slot_of_theirs() {
        let refusals = Refusals::default();
        let mut held = Vec::new();
        for _ in 0..AT_ONCE {
            let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
            refusals.refuse(ours, 65534);
            held.push(theirs);
        }
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        refusals.no_room(ours, 0, super::super::conns::Full { limit: 128 });
        let status = status_over(theirs).await;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        drop(held);
    }

    #[tokio::test]
    async fn refused_peers_past_the_bound_are_closed_without_a_word() {
        use tokio::io::AsyncReadExt;
        let refusals = Refusals::default();
        let mut held = Vec::new();
        for _ in 0..AT_ONCE {
            let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
            refusals.refuse(ours, 1);
            held.push(theirs);
        }
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        refusals.refuse(ours, 1);
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(1), theirs.read(&mut buf)).await;
        assert_eq!(read.expect("closed at once").unwrap(), 0, "one past the bound is closed");
        // A refused peer that says nothing is let go after SERVED_FOR.
        let mut first = held.remove(0);
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(SERVED_FOR * 2, async {
            loop {
                match first.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => rest.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "a silent refused peer was held past {SERVED_FOR:?}");
    }
}
