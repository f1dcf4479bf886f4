//! The plugins' declared contracts for `supervisorctl list` and `describe`: as the
//! serving revision declared them at its last handshake, so a stopped plugin is still
//! described. The operator sees every plugin (callers' limits are the gateway's).

use plugin_proto::control::v1::PluginContract;

use crate::{Supervisor, SupervisorError};

/// Every plugin's contract, or `name`'s.
pub fn of(sup: &Supervisor, name: &str) -> Result<Vec<PluginContract>, SupervisorError> {
    let plugins = if name.is_empty() { sup.plugins() } else { vec![sup.plugin(name)?] };
    Ok(plugins
        .iter()
        .map(|p| {
            let serving = p.serving();
            let state = states_of(serving.instances.iter().map(|i| i.status().state));
            let contract = p.contract();
            PluginContract {
                name: p.name.clone(),
                state,
                revision: serving.number,
                services: contract.as_ref().map(|c| c.services.clone()).unwrap_or_default(),
                file_descriptor_set: contract.map(|c| c.descriptor_set.clone()).unwrap_or_default(),
            }
        })
        .collect())
}

/// The replicas' states in a word: "running" when they agree, else each state with its
/// count ("2 running, 1 backoff"), so no replica's state hides behind the first's.
fn states_of(states: impl Iterator<Item = crate::instance::state::State>) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for s in states {
        let s = s.to_string();
        match counts.iter_mut().find(|(name, _)| *name == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    match counts.as_slice() {
        [(only, _)] => only.clone(),
        _ => counts.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::states_of;
    use crate::instance::state::State;

    #[test]
    fn replicas_that_agree_are_one_word_and_others_are_counted() {
        assert_eq!(states_of([State::Running, State::Running].into_iter()), "running");
        assert_eq!(states_of([State::Running, State::Backoff, State::Running].into_iter()), "2 running, 1 backoff");
        assert_eq!(states_of(std::iter::empty()), "");
    }
}
