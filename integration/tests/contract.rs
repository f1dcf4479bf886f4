//! Contract pins with the real daemon, and `supervisorctl contract diff`
//! replaying the library's case table with the same verdicts.

#[path = "../../supervisor/tests/case_table/mod.rs"]
mod case_table;

use std::path::Path;
use std::time::Duration;

use case_table::{Verdict, load_cases};
use plugin_integration::daemon::{config, plugin};
use plugin_integration::files::{ctl_local, stderr, stdout};
use plugin_integration::pb::{echo, token};
use plugin_integration::{Daemon, bins};

const UP: Duration = Duration::from_secs(30);

/// The echo contract with two breaks: a method the plugin does not serve,
/// and a field whose type it changed.
const ECHO_BREAKING_PIN: &str = r#"syntax = "proto3";
package echo.v1;

service Echo {
  rpc Echo(EchoRequest) returns (EchoResponse);
  rpc Shout(EchoRequest) returns (EchoResponse);
}

message EchoRequest {
  int64 message = 1;
}

message EchoResponse {
  string message = 1;
}
"#;

/// A subset of the zoo's contract: everything the zoo adds is compatible.
const ZOO_SUBSET_PIN: &str = r#"syntax = "proto3";
package zoo.v1;

service Zoo {
  rpc Echo(Text) returns (Text);
}

message Text {
  string text = 1;
}
"#;

fn write(dir: &Path, name: &str, contents: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.display().to_string()
}

#[test]
fn a_breaking_pin_refuses_the_instance_listing_every_break_and_compatible_pins_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let breaking = write(dir.path(), "echo-pin.proto", ECHO_BREAKING_PIN.as_bytes());
    let subset = write(dir.path(), "zoo-pin.proto", ZOO_SUBSET_PIN.as_bytes());
    let exact = write(dir.path(), "token.binpb", token::FILE_DESCRIPTOR_SET);
    let plugins = [
        plugin("echo", &bins::example("echo"), &format!("contract = [{breaking:?}]")),
        plugin("zoo", &bins::zoo(), &format!("contract = [{subset:?}]")),
        plugin(
            "token-validator",
            &bins::example("token_validator"),
            &format!("contract = [{exact:?}]\n[plugin.config]\nsecret = \"0123456789abcdef-test-secret\""),
        ),
    ]
    .concat();
    let d = Daemon::start(&config(&plugins));

    let zoo_up = d.wait_state("zoo-0", "running", UP);
    assert!(zoo_up["reason"].as_str().unwrap_or_default().is_empty(), "{zoo_up}");
    let v = d.wait_state("echo-0", "failed", UP);
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.starts_with("refused: contract breaks the pinned one in 2 place(s): "), "{reason}");
    for brk in [
        "BREAKING echo-pin.proto: echo.v1.Echo/Shout [RPC_NO_DELETE] method `Shout` was deleted from service `echo.v1.Echo`",
        "BREAKING echo.proto: echo.v1.EchoRequest.message [FIELD_WIRE_COMPATIBLE_TYPE] field 1 `message` in message `echo.v1.EchoRequest` changed type from int64 to string",
    ] {
        assert!(reason.contains(brk), "missing {brk:?} in {reason}");
    }
    let events = stdout(&d.ctl(&["events", "--plugin", "echo"]));
    assert!(!events.contains(" ready "), "the refused instance never became ready: {events}");
    let call = d.ctl(&["call", "echo", "echo.v1.Echo/Echo", "--data", r#"{"message":"x"}"#]);
    assert!(!call.status.success(), "no call reaches a plugin whose contract broke its pin");
    let call = d.ctl(&["call", "zoo", "zoo.v1.Zoo/Echo", "--data", r#"{"text":"pinned"}"#]);
    assert!(stdout(&call).contains("pinned"), "{}{}", stdout(&call), stderr(&call));

    // A descriptor-set pin identical to what the plugin declares.
    d.wait_state("token-validator-0", "running", UP);
}

#[test]
fn the_case_table_gives_the_same_verdicts_through_supervisorctl_contract_diff() {
    let cases = load_cases().unwrap_or_else(|problem| panic!("the case table is malformed: {problem}"));
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let report = case.run().unwrap_or_else(|problem| panic!("{}: {problem}", case.name));
        let library = if report.is_breaking() { Verdict::Breaking } else { Verdict::Compatible };
        let mut args = vec![
            "contract".into(),
            "diff".into(),
            case.old.clone().into_os_string(),
            case.new.clone().into_os_string(),
        ];
        for service in case.services.iter().flatten() {
            args.push("--service".into());
            args.push(service.into());
        }
        let out = ctl_local(&args);
        let cli = match out.status.code() {
            Some(0) => Verdict::Compatible,
            Some(1) => Verdict::Breaking,
            other => {
                failures.push(format!("{}: exit {other:?}: {}", case.name, stderr(&out)));
                continue;
            }
        };
        if cli != library || cli != case.verdict {
            failures.push(format!("{}: expected {:?}, library {library:?}, cli {cli:?}", case.name, case.verdict));
        }
        // The same report, line for line, naming the case's rules, then the summary.
        let text = stdout(&out);
        let unnamed: Vec<&String> = case.rules.iter().filter(|id| !text.contains(&format!("[{id}]"))).collect();
        if !unnamed.is_empty() {
            failures.push(format!("{}: the CLI report lacks {unnamed:?}:\n{text}", case.name));
        }
        let Some(summary) = text.strip_prefix(&report.to_string()) else {
            failures.push(format!("{}: the CLI printed another report:\n{text}\nlibrary:\n{report}", case.name));
            continue;
        };
        let expected_start = if cli == Verdict::Breaking { "breaking: " } else { "compatible: " };
        if !summary.starts_with(expected_start) || summary.trim_end().lines().count() != 1 {
            failures.push(format!("{}: summary {summary:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn contract_diff_mixes_proto_files_and_descriptor_sets_and_names_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let echo_set = write(dir.path(), "echo.binpb", echo::FILE_DESCRIPTOR_SET);
    let echo_proto = bins::repo().join("plugin-sdk/echo-plugin/proto/echo.proto").display().to_string();
    let breaking = write(dir.path(), "echo-pin.proto", ECHO_BREAKING_PIN.as_bytes());

    for (old, new) in [(&echo_set, &echo_proto), (&echo_proto, &echo_set)] {
        let out = ctl_local(&["contract", "diff", old, new]);
        assert_eq!(out.status.code(), Some(0), "{old} vs {new}: {}", stderr(&out));
        assert_eq!(stdout(&out), "compatible: no changes\n");
    }
    let out = ctl_local(&["contract", "diff", &breaking, &echo_set, "--service", "echo.v1.Echo"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("BREAKING ") && lines[1].starts_with("BREAKING "), "{text}");
    assert_eq!(lines[2], "breaking: 2 breaking change(s), 0 compatible change(s)");

    let broken = write(dir.path(), "broken.proto", b"syntax = \"proto3\";\nmessage {\n");
    let garbage = write(dir.path(), "garbage.binpb", &[0xff, 0xff, 0xff, 0x0f, 0x12]);
    let missing = dir.path().join("missing.proto").display().to_string();
    let bad = [
        (&broken, format!("cannot compile contract {broken} (at broken.proto:2:9): expected an identifier")),
        (&garbage, format!("contract {garbage} is not a valid FileDescriptorSet")),
        (&missing, format!("cannot read contract {missing}")),
    ];
    for (input, cause) in bad {
        for (old, new) in [(input, &echo_proto), (&echo_proto, input)] {
            let out = ctl_local(&["contract", "diff", old, new]);
            assert_eq!(out.status.code(), Some(2), "{old} vs {new}");
            let err = stderr(&out);
            assert!(err.starts_with("supervisorctl: ") && err.contains(&cause), "{err}");
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert!(stdout(&out).is_empty(), "no report for unusable input");
        }
    }
}
