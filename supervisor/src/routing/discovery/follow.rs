//! Following each ready instance's own `grpc.health.v1` status while it runs: one
//! `Watch` stream per instance (idle, it costs no wake-up at all, where polling would
//! cost one per instance and interval), and the board where what they said is kept and
//! where health's watchers learn that something changed. What an instance says is also
//! set on its own flag, which the routing reads on each call's pick (one atomic load).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use plugin_proto::transport::H2Channel;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// How long after its `Watch` stream ended (the plugin restarting its health service,
/// or a plugin that does not implement `Watch`) an instance is asked again.
const AGAIN_AFTER: Duration = Duration::from_secs(2);
/// How often a plugin that does not implement `Watch` is asked with `Check`.
const POLL_EVERY: Duration = Duration::from_secs(5);
/// The longest a `Check` of a plugin that does not implement `Watch` may take.
const CHECK_WITHIN: Duration = Duration::from_secs(2);

/// What every ready instance's plugin says of its own health, by instance id, and a
/// counter bumped whenever anything health answers may depend on changes: an instance
/// ready or gone, a plugin's own word, the set of plugins.
#[derive(Debug)]
pub struct Board {
    reported: Mutex<HashMap<String, bool>>,
    epoch: watch::Sender<u64>,
}

impl Default for Board {
    fn default() -> Self {
        Self { reported: Mutex::default(), epoch: watch::channel(0).0 }
    }
}

impl Board {
    /// Something health answers depend on changed.
    pub fn bump(&self) {
        self.epoch.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Whether the plugin behind `instance` says it serves (false for an instance not
    /// followed: not ready).
    pub fn says_serving(&self, instance: &str) -> bool {
        self.lock().get(instance).copied().unwrap_or(false)
    }

    pub(super) fn set(&self, instance: &str, serving: bool) {
        let changed = {
            let mut map = self.lock();
            match map.get_mut(instance) {
                // A plugin repeating itself costs no allocation and wakes nobody.
                Some(said) => std::mem::replace(said, serving) != serving,
                None => map.insert(instance.to_owned(), serving).is_none(),
            }
        };
        if changed {
            self.bump();
        }
    }

    fn forget(&self, instance: &str) {
        if self.lock().remove(instance).is_some() {
            self.bump();
        }
    }

    /// How many instances are followed now.
    pub fn followed(&self) -> usize {
        self.lock().len()
    }

    // Each write is one map operation: a poisoned lock still holds a whole map.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.reported.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows `instance`'s health on `channel` from now until [`Follower::stop`];
    /// `serving` is what its first check (at its start) said. Each word is also stored
    /// in `flag` (the instance's [`crate::instance::Live::serving_flag`]), and `changed`
    /// is called when that flips (calls queued for the plugin then look again).
    pub fn follow(
        self: &Arc<Self>,
        instance: &str,
        channel: H2Channel,
        serving: bool,
        flag: Arc<AtomicBool>,
        changed: Arc<dyn Fn() + Send + Sync>,
    ) -> Follower {
        let said = Said { board: self.clone(), instance: instance.to_owned(), flag, changed };
        said.set(serving);
        let task = tokio::spawn(follow(said, channel));
        Follower { task: Some(task), board: self.clone(), instance: instance.to_owned() }
    }
}

/// Where one instance's word goes: the board, and the instance's own flag.
struct Said {
    board: Arc<Board>,
    instance: String,
    flag: Arc<AtomicBool>,
    changed: Arc<dyn Fn() + Send + Sync>,
}

impl Said {
    /// The plugin said it: calls follow it.
    fn set(&self, serving: bool) {
        if self.flag.swap(serving, Ordering::Relaxed) != serving {
            // A call queued behind a full serving instance may go to this one now, or
            // (none serving any more) be refused at once rather than at its deadline.
            (self.changed)();
        }
        self.board.set(&self.instance, serving);
    }

    /// Its word is not known for a while (its `Watch` stream ended or could not be
    /// opened): health says it does not serve, but calls go on as it last said, so a
    /// plugin that never said NOT_SERVING is not refused calls for a hiccup.
    fn lost(&self) {
        self.board.set(&self.instance, false);
    }
}

/// One instance followed; [`Follower::stop`] ends it.
#[derive(Debug)]
pub struct Follower {
    /// Taken by [`Follower::stop`]; aborted on drop otherwise (the instance's task
    /// dropped, as when an embedded supervisor is), so no follower outlives its instance.
    task: Option<JoinHandle<()>>,
    board: Arc<Board>,
    instance: String,
}

impl Follower {
    /// Stops following, and forgets what the plugin said. Its `Watch` stream is reset
    /// by the time this returns: a plugin drains only once its calls have ended, and a
    /// `Watch` never ends by itself, so this must come before the plugin is asked to
    /// drain.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Awaited, the task's future (and with it the stream) has been dropped.
            let _ = task.await;
        }
        // Dropped here: what the plugin said is forgotten.
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.board.forget(&self.instance);
    }
}

/// Health's messages are a few bytes: the stream's decoding buffer need not be tonic's
/// default 8 KiB, which held for the life of every instance would cost 8 MiB across a
/// thousand of them. (tonic's generated client takes no buffer size: this is the thin
/// codec that does.)
#[derive(Default)]
struct SmallCodec;

/// The largest health message taken from a plugin (one holds a status: a few bytes).
const MAX_MESSAGE: usize = 1 << 10;

/// The least time between two changes of one instance's health taken from its plugin.
const MIN_GAP: std::time::Duration = std::time::Duration::from_millis(250);

/// What one health message may need at once; more grows the buffer as needed.
const SMALL_BUFFER: usize = 64;

impl tonic::codec::Codec for SmallCodec {
    type Encode = HealthCheckRequest;
    type Decode = HealthCheckResponse;
    type Encoder = tonic_prost::ProstEncoder<HealthCheckRequest>;
    type Decoder = tonic_prost::ProstDecoder<HealthCheckResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::raw_decoder(settings())
    }
}

fn settings() -> tonic::codec::BufferSettings {
    tonic::codec::BufferSettings::new(SMALL_BUFFER, 32 << 10)
}

/// `grpc.health.v1.Health/Watch` of the plugin as a whole, with [`SmallCodec`].
async fn watch(channel: H2Channel) -> Result<tonic::Streaming<HealthCheckResponse>, tonic::Status> {
    // A plugin cannot make the buffer grow past a health message's size for good.
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Watch");
    let request = tonic::Request::new(HealthCheckRequest { service: String::new() });
    Ok(grpc.server_streaming(request, path, SmallCodec).await?.into_inner())
}

async fn follow(said: Said, channel: H2Channel) {
    let instance = &said.instance;
    let mut client = HealthClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE);
    loop {
        // The call's futures boxed, here and for Check below: held in place they made this
        // task, one per running instance, larger by their size all the while it follows.
        match Box::pin(watch(channel.clone())).await {
            Ok(mut stream) => {
                while let Ok(Some(answer)) = stream.message().await {
                    said.set(answer.status == ServingStatus::Serving as i32);
                    // A plugin that flips its health as fast as it can is heard at this
                    // pace: each change wakes every gateway Watch stream.
                    tokio::time::sleep(MIN_GAP).await;
                }
                // The stream ended: the plugin is going, or restarted its health.
                said.lost();
                tokio::time::sleep(AGAIN_AFTER).await;
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => loop {
                let mut check = tonic::Request::new(HealthCheckRequest { service: String::new() });
                check.set_timeout(CHECK_WITHIN);
                let serving = matches!(
                    tokio::time::timeout(CHECK_WITHIN, Box::pin(client.check(check))).await,
                    Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
                );
                said.set(serving);
                tokio::time::sleep(POLL_EVERY).await;
            },
            Err(status) => {
                let message = crate::instance::said::plugin_said(status.message());
                tracing::debug!(%instance, code = ?status.code(), %message, "cannot follow the plugin's health");
                said.lost();
                tokio::time::sleep(AGAIN_AFTER).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// What a plugin says moves its routing flag and wakes the plugin's queued calls on
    /// each flip (only then); a word merely lost changes what health says, not routing.
    #[test]
    fn a_flip_wakes_queued_calls_and_a_lost_word_keeps_the_routing() {
        let board = Arc::new(Board::default());
        let flips = Arc::new(AtomicUsize::new(0));
        let counted = flips.clone();
        let flag = Arc::new(AtomicBool::new(true));
        let said = Said {
            board: board.clone(),
            instance: "p-0".into(),
            flag: flag.clone(),
            changed: Arc::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        };
        said.set(true);
        assert_eq!(flips.load(Ordering::SeqCst), 0, "no flip, no wake-up");
        said.set(false);
        said.set(false);
        assert_eq!((flag.load(Ordering::SeqCst), flips.load(Ordering::SeqCst)), (false, 1));
        said.set(true);
        assert_eq!((flag.load(Ordering::SeqCst), flips.load(Ordering::SeqCst)), (true, 2));
        said.lost();
        assert!(flag.load(Ordering::SeqCst), "calls still go to it");
        assert!(!board.says_serving("p-0"), "health says it does not serve");
        assert_eq!(flips.load(Ordering::SeqCst), 2);
    }
}
