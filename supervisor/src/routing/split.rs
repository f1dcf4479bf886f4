//! The weighted split of a canary rollout: each call goes to the canary revision or to the
//! stable (serving) one, in the share the rollout's current step says, and what it came
//! to is recorded against the revision it went to. Calls are spread evenly rather than
//! drawn at random, so a step of 5% gives the canary 5 calls in every 100 from the start,
//! and a short step is judged on the share it was meant to have.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tonic::body::Body;

use super::record::{Outermost, Sink, Source, recorded};
use super::wrap::{Answer, Wrapped, Wraps};
use crate::instance::{Plugin, Revision};

/// The canary of a rollout and its share of calls now. Written by the rollout, read by
/// every call.
#[derive(Debug)]
pub struct Split {
    pub canary: Arc<Revision>,
    /// Percent of calls, 0 to 100.
    pub share: u8,
    /// Calls split so far (the spread's position).
    seen: AtomicU64,
}

impl Split {
    pub fn new(canary: Arc<Revision>, share: u8) -> Self {
        Self { canary, share: share.min(100), seen: AtomicU64::new(0) }
    }

    /// Whether the next call goes to the canary: call n does when the count of canary
    /// calls owed, n × share / 100 rounded down, goes up with it.
    fn to_canary(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        let share = u64::from(self.share);
        (n + 1) * share / 100 > n * share / 100
    }
}

/// The revision the split chose for a call; the layers under it (deadline, instance pick)
/// read it from the request.
#[derive(Clone, Debug)]
pub struct Target(pub Arc<Revision>);

/// The revision a call was placed on, once it was (0 until then): the chosen one, or
/// another when the chosen one had no room or said NOT_SERVING. The pick writes it and the
/// call's outcome is recorded against it.
#[derive(Clone, Debug, Default)]
pub struct Placed(Arc<AtomicU64>);

impl Placed {
    pub fn set(&self, revision: u64) {
        self.0.store(revision, Ordering::Relaxed);
    }
}

/// The revision for the next call of `plugin`: the canary in its share of calls while it
/// has an instance ready, else the serving one.
pub fn choose(plugin: &Plugin) -> Arc<Revision> {
    if let Some(split) = plugin.split()
        && split.to_canary()
        && split.canary.has_ready()
    {
        return split.canary.clone();
    }
    plugin.serving()
}

/// Records a revision's calls into its outcomes: only what the plugin answered (or did not
/// answer in time). A call shed by the limit, failed fast by the breaker or refused for its
/// size is not the revision's doing.
#[derive(Debug)]
struct RevisionSink {
    plugin: Arc<Plugin>,
    chosen: Arc<Revision>,
    placed: Placed,
}

impl RevisionSink {
    /// The revision that answered: the one the call was placed on. Chosen for the canary
    /// and answered by the stable revision (the canary said NOT_SERVING, or had no room),
    /// a call was counted as the canary's, and a canary that served nothing was promoted
    /// on the stable revision's answers.
    fn answered_by(&self) -> Option<Arc<Revision>> {
        let placed = self.placed.0.load(Ordering::Relaxed);
        if placed == 0 || placed == self.chosen.number {
            return Some(self.chosen.clone());
        }
        let serving = self.plugin.serving();
        if serving.number == placed {
            return Some(serving);
        }
        // Gone since (retired): nothing is left to judge.
        self.plugin.revisions().into_iter().find(|r| r.number == placed)
    }
}

impl Sink for RevisionSink {
    fn record(&self, code: tonic::Code, source: Source, took: std::time::Duration) {
        let caller_gave_up =
            source == Source::Caller && matches!(code, tonic::Code::DeadlineExceeded | tonic::Code::Cancelled);
        if !source.is_plugins() && !caller_gave_up {
            return;
        }
        let Some(rev) = self.answered_by() else { return };
        if source.is_plugins() {
            rev.outcomes.record(code, took);
        } else {
            // Its caller's short deadline ran out, or it stopped reading or sending: counted
            // apart, or a canary that never answers would only ever have too few calls to
            // judge. The caller's other faults (a request that does not decode, headers
            // too large) say nothing of how the revision answers.
            rev.outcomes.abandoned();
        }
    }
}

#[derive(Clone, Debug)]
pub struct SplitLayer {
    pub plugin: Arc<Plugin>,
}

impl<S> tower::Layer<S> for SplitLayer {
    type Service = Wrapped<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Wrapped::new(self.clone(), inner)
    }
}

impl Wraps for SplitLayer {
    fn around<S>(&self, mut req: http::Request<Body>, next: &mut S) -> Answer
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
        S::Future: Send + 'static,
    {
        let rev = choose(&self.plugin);
        let placed = Placed::default();
        req.extensions_mut().insert(Target(rev.clone()));
        req.extensions_mut().insert(placed.clone());
        let sink = RevisionSink { plugin: self.plugin.clone(), chosen: rev, placed };
        Box::pin(recorded(Arc::new(sink), Outermost(false), next.call(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> Arc<Plugin> {
        let config: crate::config::Config = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"none\"\n".parse().unwrap();
        Arc::new(Plugin::new(config.specs().remove(0), 10))
    }

    #[test]
    fn a_revision_is_judged_on_the_plugins_outcomes_only() {
        let plugin = plugin();
        let rev = plugin.serving();
        let sink = RevisionSink { plugin: plugin.clone(), chosen: rev.clone(), placed: Placed::default() };
        let took = std::time::Duration::from_millis(1);
        sink.record(tonic::Code::Internal, Source::Plugin, took);
        sink.record(tonic::Code::DeadlineExceeded, Source::Deadline, took);
        for source in [Source::Caller, Source::Limit, Source::Breaker, Source::Size, Source::Supervisor] {
            sink.record(tonic::Code::ResourceExhausted, source, took);
            sink.record(tonic::Code::Unavailable, source, took);
        }
        let t = rev.outcomes.snapshot();
        assert_eq!(
            (t.calls, t.failed),
            (2, 2),
            "a shed, an open circuit or a refused size is not the revision's doing"
        );
    }

    #[test]
    fn a_call_chosen_for_the_canary_and_answered_by_the_stable_revision_counts_as_the_stables() {
        let plugin = plugin();
        let (stable, canary) = (plugin.serving(), plugin.new_revision(plugin.spec()));
        let placed = Placed::default();
        let sink = RevisionSink { plugin: plugin.clone(), chosen: canary.clone(), placed: placed.clone() };
        let took = std::time::Duration::from_millis(1);
        // The canary said NOT_SERVING: the pick placed the call on the stable revision.
        placed.set(stable.number);
        sink.record(tonic::Code::Ok, Source::Plugin, took);
        sink.record(tonic::Code::Internal, Source::Plugin, took);
        assert_eq!((canary.outcomes.snapshot().calls, stable.outcomes.snapshot().calls), (0, 2));
        // Placed on the canary it chose: the canary's.
        placed.set(canary.number);
        sink.record(tonic::Code::Ok, Source::Plugin, took);
        assert_eq!((canary.outcomes.snapshot().calls, stable.outcomes.snapshot().calls), (1, 2));
    }

    #[test]
    fn each_share_is_spread_evenly_from_the_first_call() {
        let plugin = plugin();
        let canary = plugin.new_revision(plugin.spec());
        for (share, calls, expect) in [(5u8, 100, 5), (25, 8, 2), (50, 10, 5), (100, 7, 7), (0, 50, 0), (33, 300, 99)] {
            let split = Split::new(canary.clone(), share);
            let to_canary = (0..calls).filter(|_| split.to_canary()).count();
            assert_eq!(to_canary, expect, "{share}% of {calls} calls");
        }
        let split = Split::new(canary, 5);
        let first: Vec<bool> = (0..20).map(|_| split.to_canary()).collect();
        assert_eq!(first.iter().position(|c| *c), Some(19), "the 20th call is the first owed to a 5% canary");
    }
}
