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
            let state = serving.instances.first().map(|i| i.status().state.to_string()).unwrap_or_default();
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
