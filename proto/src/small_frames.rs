//! How many small DATA frames a request stream has sent alone that its peer has not
//! answered, and so how long the next must wait for more of the body to join it.
//!
//! A peer on Rust's h2 (every plugin built with the SDK, and any tonic server)
//! counts each non-final DATA frame under 256 bytes its handler has not yet read
//! as 256 bytes less its length, and ends the whole connection with GOAWAY
//! ENHANCE_YOUR_CALM ("too_many_data_frames") past a budget: half its connection
//! window, at least 25,600 (about 512 KiB on a tonic server). The supervisor carries
//! every call of a plugin instance on one connection and passes a streaming
//! request's messages on as they come, so a caller sending short messages faster
//! than a handler reads them (or while the plugin's one thread is busy) ended every
//! other call of the plugin, which was then restarted.
//!
//! No frame says what a peer's handler has read, so this cannot be known, only
//! made costly: once a stream has [`UNANSWERED`] small frames that its peer has not
//! answered message for message, or its connection [`UNANSWERED_ON_CONNECTION`], a
//! small frame waits up to [`JOIN_WAIT`] for more of the body, and leaves joined
//! with it (a frame of 256 bytes or more costs the peer nothing, and pays back some
//! of what small ones cost) or alone once the wait is over. A caller faster than
//! that has its messages joined; a slower one's messages are at most [`JOIN_WAIT`]
//! late; a chat answered message by message never waits (unless many other streams
//! of the connection are unanswered). The SDK's log stream, answered only at its
//! end, is one of those waiting: a plugin's records past the first few may reach
//! the supervisor [`JOIN_WAIT`] later, joined.
//!
//! What is left, each small frame costing up to 255 (251 for an empty gRPC
//! message): a stream nobody answers still sends one small frame per [`JOIN_WAIT`]
//! for as long as its deadline lets it (about 1,530 frames, some 380 KiB, in a
//! `call_timeout` of 30 s), so two such streams end a tonic server's connection
//! (512 KiB), one does past a deadline of about 40 s, and one ends that of an h2
//! server left at h2's own default window (a budget of 32 KiB, about 130 frames)
//! in about 2 s; and N of them at once send N frames per [`JOIN_WAIT`] (64, the
//! default `max_in_flight`, fill a tonic server's budget in about 0.6 s of it
//! reading nothing). A stream's count ends with it, while a busy plugin still holds
//! what a stream reset had sent, so streams one after another add up too. And a
//! handler that answers without reading (a subscription that streams updates and
//! seldom reads its caller's messages) is taken to have read a message for each
//! answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Below this many bytes of payload, h2 counts a non-final DATA frame as overhead
/// (its `DEFAULT_DATA_FRAME_OVERHEAD_THRESHOLD`, not public).
pub const SMALL_FRAME: usize = 256;

/// Small frames a stream sends alone, unanswered, before the next waits to be joined.
pub const UNANSWERED: usize = 32;

/// The same for all of a connection's streams together: some 16 KiB of overhead, half
/// what an h2 server left at its default window takes.
pub const UNANSWERED_ON_CONNECTION: usize = 64;

/// The longest a small frame waits for more of its body to join it.
pub const JOIN_WAIT: Duration = Duration::from_millis(20);

/// One stream's small frames sent alone and not yet answered, shared by its request's
/// pump and its answer's body (which counts the answer's messages with
/// [`MessageEnds`](crate::message_ends::MessageEnds)),
/// and added to its connection's.
#[derive(Debug)]
pub struct Unanswered {
    mine: AtomicUsize,
    connection: Arc<AtomicUsize>,
}

impl Unanswered {
    /// A stream of the connection whose count is `connection`.
    pub fn on(connection: Arc<AtomicUsize>) -> Self {
        Self { mine: AtomicUsize::new(0), connection }
    }

    /// A small frame left alone.
    pub fn sent(&self) {
        self.mine.fetch_add(1, Ordering::Relaxed);
        self.connection.fetch_add(1, Ordering::Relaxed);
    }

    /// The peer answered `messages` messages on the stream: a handler that answers has,
    /// as a rule, read a message for each answer, so a small frame is taken as read for
    /// each (not for each DATA frame: an answer of more than a frame's 16 KiB comes in
    /// several).
    pub fn answered(&self, messages: usize) {
        if messages == 0 {
            return;
        }
        if let Ok(had) = self
            .mine
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n > 0).then(|| n.saturating_sub(messages)))
        {
            self.connection.fetch_sub(had.min(messages), Ordering::Relaxed);
        }
    }

    /// Whether the next small frame waits to be joined.
    pub fn many(&self) -> bool {
        self.mine.load(Ordering::Relaxed) >= UNANSWERED
            || self.connection.load(Ordering::Relaxed) >= UNANSWERED_ON_CONNECTION
    }
}

impl Drop for Unanswered {
    /// The stream is over: its count leaves the connection's.
    fn drop(&mut self) {
        self.connection.fetch_sub(*self.mine.get_mut(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_wait_to_be_joined_once_many_are_unanswered_and_each_answer_takes_one_off() {
        let stream = Unanswered::on(Arc::default());
        for _ in 0..UNANSWERED - 1 {
            stream.sent();
        }
        assert!(!stream.many());
        stream.sent();
        assert!(stream.many(), "{UNANSWERED} unanswered");
        stream.answered(1);
        assert!(!stream.many(), "an answer takes one off");
        stream.answered(2 * UNANSWERED);
        stream.sent();
        assert!(!stream.many(), "answers beyond the frames sent are not kept as credit");
        assert_eq!(stream.mine.load(Ordering::Relaxed), 1);
        assert_eq!(stream.connection.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_connections_streams_together_make_each_wait_and_a_stream_over_leaves_the_count() {
        let connection = Arc::new(AtomicUsize::new(0));
        let streams: Vec<_> = (0..4).map(|_| Unanswered::on(connection.clone())).collect();
        for _ in 0..UNANSWERED_ON_CONNECTION / 4 {
            for s in &streams {
                assert!(!s.many());
                s.sent();
            }
        }
        let quiet = Unanswered::on(connection.clone());
        assert!(quiet.many(), "a stream with nothing unanswered of its own, on a connection with many");
        streams[0].answered(3);
        assert_eq!(connection.load(Ordering::Relaxed), UNANSWERED_ON_CONNECTION - 3);
        assert!(!quiet.many());
        drop(streams);
        assert_eq!(connection.load(Ordering::Relaxed), 0, "streams over leave nothing counted");
    }
}
