//! `supervisorctl config [NAME] [--json]`: the configuration in force, as
//! `key = value` lines per plugin (a comment says where a value comes from
//! when not from the plugin's entry), or as JSON.

use std::process::ExitCode;

use plugin_proto::control::v1::{ConfigRequest, PluginSettings};
use serde_json::{Map, Value, json};

use crate::client::{Client, Wait};
use crate::exit::Failure;
use crate::stdout::outln;

pub async fn run(c: &mut Client, w: &Wait, name: Option<String>, as_json: bool) -> Result<ExitCode, Failure> {
    let plugins = w.answer(c.config(w.request(ConfigRequest { name: name.unwrap_or_default() }))).await?.plugins;
    if as_json {
        let all: Vec<Value> = plugins.iter().map(plugin_json).collect();
        outln!("{}", serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?);
        return Ok(ExitCode::SUCCESS);
    }
    for (i, p) in plugins.iter().enumerate() {
        if i > 0 {
            outln!("");
        }
        for line in lines(p) {
            outln!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn value(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.to_owned()))
}

/// `{"name", "file", "settings": {KEY: {"value", "source", "overridden"}}}`.
pub fn plugin_json(p: &PluginSettings) -> Value {
    let settings: Map<String, Value> = p
        .settings
        .iter()
        .map(|s| {
            let entry = json!({"value": value(&s.value_json), "source": s.source, "overridden": s.source == "runtime"});
            (s.key.clone(), entry)
        })
        .collect();
    json!({"name": p.name, "file": p.file, "settings": settings})
}

/// One plugin as TOML-like lines, every key in the reference's order.
pub fn lines(p: &PluginSettings) -> Vec<String> {
    let file = if p.file.is_empty() { String::new() } else { format!("  # {}", p.file) };
    let mut out = vec![format!("[{}]{file}", p.name)];
    let shown: Vec<(String, &str)> = p
        .settings
        .iter()
        .map(|s| {
            let v = value(&s.value_json);
            let text = if v.is_null() { format!("# {} (unset)", s.key) } else { format!("{} = {v}", s.key) };
            (text, s.source.as_str())
        })
        .collect();
    let width = shown.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
    for (text, source) in shown {
        let note = match source {
            "file" => "",
            "default" => "default",
            "tier" => "tier default",
            "runtime" => "overridden at run time (supervisorctl quota)",
            other => other,
        };
        if note.is_empty() || text.starts_with('#') && source == "default" {
            out.push(text);
        } else {
            out.push(format!("{}  # {note}", crate::output::padded(&text, width)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_proto::control::v1::Setting;

    fn demo() -> PluginSettings {
        let s =
            |key: &str, v: &str, source: &str| Setting { key: key.into(), value_json: v.into(), source: source.into() };
        PluginSettings {
            name: "echo".into(),
            file: "/etc/p.toml".into(),
            settings: vec![
                s("call_timeout", "\"2s\"", "file"),
                s("stop_timeout", "\"5s\"", "default"),
                s("sha256", "null", "default"),
                s("quota.memory_max", "\"128M\"", "runtime"),
            ],
        }
    }

    #[test]
    fn text_marks_defaults_and_run_time_overrides() {
        let l = lines(&demo());
        assert_eq!(l[0], "[echo]  # /etc/p.toml");
        assert_eq!(l[1], "call_timeout = \"2s\"");
        assert!(l[2].starts_with("stop_timeout = \"5s\" ") && l[2].ends_with("# default"), "{l:?}");
        assert_eq!(l[3], "# sha256 (unset)");
        assert!(l[4].ends_with("# overridden at run time (supervisorctl quota)"), "{l:?}");
    }

    #[test]
    fn json_keys_each_setting_and_flags_overrides() {
        let j = plugin_json(&demo());
        assert_eq!(
            j["settings"]["quota.memory_max"],
            json!({"value": "128M", "source": "runtime", "overridden": true})
        );
        assert_eq!(j["settings"]["sha256"]["value"], Value::Null);
        assert_eq!(j["settings"]["call_timeout"]["overridden"], json!(false));
    }
}
