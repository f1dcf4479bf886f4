//! Broken seccomp policies are refused with a message naming the file,
//! the rule and the syscall.

use super::super::TierError;
use super::{Fixture, assert_mentions};

#[test]
fn missing_json_names_the_json_file() {
    let f = Fixture::new();
    f.remove("L2.seccomp.json");
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::Read { .. }), "{e:?}");
    assert_mentions(&message, &["L2.seccomp.json"]);
}

#[test]
fn invalid_json_names_file_and_position() {
    let f = Fixture::new();
    f.edit("L2.seccomp.json", "\"match_action\": \"allow\",", "\"match_action\": \"allow\"");
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::Json { .. }), "{e:?}");
    assert_mentions(&message, &["L2.seccomp.json", "line"]);
}

#[test]
fn unknown_syscall_names_file_rule_and_name() {
    let f = Fixture::new();
    f.edit("L2.seccomp.json", "{\"syscall\": \"getpid\"}", "{\"syscall\": \"fooo\"}");
    let (e, message) = f.refused();
    assert!(matches!(&e, TierError::UnknownSyscall { name, .. } if name == "fooo"), "{e:?}");
    assert_mentions(&message, &["L2.seccomp.json", "unknown syscall name \"fooo\"", "rule "]);
}

#[test]
fn syscall_seccompiler_does_not_know_is_refused_with_its_name() {
    let f = Fixture::new();
    // Newer than seccompiler's table, though the kernel has it.
    f.edit("L2.seccomp.json", "{\"syscall\": \"getpid\"}", "{\"syscall\": \"getpid\"}, {\"syscall\": \"setxattrat\"}");
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::Seccompiler { .. }), "{e:?}");
    assert_mentions(&message, &["L2.seccomp.json", "setxattrat"]);
}

#[test]
fn allowing_clone3_is_refused_with_the_reason() {
    for rule in [
        "{\"syscall\": \"clone3\"}",
        "{\"syscall\": \"clone3\", \"args\": [{\"index\": 1, \"type\": \"qword\", \"op\": \"eq\", \"val\": 88}]}",
    ] {
        let f = Fixture::new();
        f.edit("L1.seccomp.json", "{\"syscall\": \"getpid\"}", &format!("{{\"syscall\": \"getpid\"}}, {rule}"));
        let (e, message) = f.refused();
        assert!(matches!(&e, TierError::Rule { syscall, .. } if syscall == "clone3"), "{e:?}");
        assert_mentions(&message, &["L1.seccomp.json", "clone3 cannot be allowed", "ENOSYS"]);
    }
}

#[test]
fn unknown_rule_key_names_the_rule() {
    let f = Fixture::new();
    f.edit("L3.seccomp.json", "{\"syscall\": \"brk\"}", "{\"syscall\": \"brk\", \"arg\": []}");
    let (e, message) = f.refused();
    assert!(matches!(&e, TierError::Rule { syscall, .. } if syscall == "brk"), "{e:?}");
    assert_mentions(&message, &["L3.seccomp.json", "brk", "unknown field `arg`"]);
}

#[test]
fn empty_args_is_refused() {
    let f = Fixture::new();
    f.edit("L3.seccomp.json", "{\"syscall\": \"brk\"}", "{\"syscall\": \"brk\", \"args\": []}");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L3.seccomp.json", "brk", "\"args\" is empty"]);
}

#[test]
fn dword_value_wider_than_32_bits_is_refused() {
    let f = Fixture::new();
    f.edit("L3.seccomp.json", "\"op\": \"eq\", \"val\": 1000", "\"op\": \"eq\", \"val\": 4294968296");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L3.seccomp.json", "execveat", "does not fit in 32 bits"]);
}

#[test]
fn argument_index_beyond_5_is_refused() {
    let f = Fixture::new();
    f.edit(
        "L3.seccomp.json",
        "{\"index\": 4, \"type\": \"dword\", \"op\": \"eq\", \"val\": 4096",
        "{\"index\": 6, \"type\": \"dword\", \"op\": \"eq\", \"val\": 4096",
    );
    let (_, message) = f.refused();
    assert_mentions(&message, &["L3.seccomp.json", "execveat", "index 6"]);
}

#[test]
fn mixing_any_arguments_and_conditions_for_one_syscall_is_refused() {
    let f = Fixture::new();
    f.edit("L3.seccomp.json", "{\"syscall\": \"brk\"}", "{\"syscall\": \"brk\"}, {\"syscall\": \"fcntl\"}");
    let (e, message) = f.refused();
    assert!(matches!(&e, TierError::Rule { syscall, .. } if syscall == "fcntl"), "{e:?}");
    assert_mentions(&message, &["L3.seccomp.json", "fcntl", "seccompiler would drop"]);
}

#[test]
fn repeated_rule_is_refused() {
    let f = Fixture::new();
    f.edit("L3.seccomp.json", "{\"syscall\": \"brk\"}", "{\"syscall\": \"brk\"}, {\"syscall\": \"brk\"}");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L3.seccomp.json", "brk", "already allowed"]);
}

#[test]
fn match_action_other_than_allow_is_refused() {
    let f = Fixture::new();
    f.edit("L2.seccomp.json", "\"match_action\": \"allow\"", "\"match_action\": \"trap\"");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L2.seccomp.json", "match_action must be \"allow\""]);
}

#[test]
fn mismatch_action_the_supervisor_cannot_carry_out_is_refused() {
    for action in ["\"trap\"", "\"log\"", "\"kill_thread\"", "{\"errno\": 0}", "{\"errno\": 5000}"] {
        let f = Fixture::new();
        f.edit("L2.seccomp.json", "\"mismatch_action\": \"kill_process\"", &format!("\"mismatch_action\": {action}"));
        let (_, message) = f.refused();
        assert_mentions(&message, &["L2.seccomp.json", "mismatch_action must be"]);
    }
}

#[test]
fn two_filters_in_one_policy_are_refused() {
    let f = Fixture::new();
    let text = std::fs::read_to_string(f.path("L3.seccomp.json")).expect("read");
    let body = text.trim().trim_start_matches('{').trim_end_matches('}');
    for second in ["\"other\"", "\"L3\""] {
        f.write("L3.seccomp.json", &format!("{{{body}, {}}}", body.replacen("\"L3\"", second, 1)));
        let (_, message) = f.refused();
        assert_mentions(&message, &["L3.seccomp.json", "exactly one filter", "holds 2"]);
    }
}

#[test]
fn tier_without_the_exec_rule_is_refused() {
    let f = Fixture::new();
    f.edit("L3.seccomp.json", "\"op\": \"eq\", \"val\": 1000", "\"op\": \"eq\", \"val\": 999");
    let (e, message) = f.refused();
    assert!(matches!(&e, TierError::MissingRequired { tier, .. } if tier == "L3"), "{e:?}");
    assert_mentions(&message, &["L3.seccomp.json", "execveat(1000"]);
}

#[test]
fn tier_without_sendmsg_is_refused() {
    let f = Fixture::new();
    f.edit("L3.seccomp.json", "{\"syscall\": \"sendmsg\"},", "");
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::MissingRequired { .. }), "{e:?}");
    assert_mentions(&message, &["L3.seccomp.json", "tier L3 must allow sendmsg"]);
}

/// The listener is sent on the status descriptor, 1001: a rule allowing sendmsg on low
/// descriptors alone would block every start in that call.
#[test]
fn tier_whose_sendmsg_leaves_out_the_status_descriptor_is_refused() {
    let f = Fixture::new();
    f.edit(
        "L3.seccomp.json",
        "{\"syscall\": \"sendmsg\"},",
        "{\"syscall\": \"sendmsg\", \"args\": [{\"index\": 0, \"type\": \"dword\", \"op\": \"le\", \"val\": 5}]},",
    );
    let (e, message) = f.refused();
    assert!(matches!(e, TierError::MissingRequired { .. }), "{e:?}");
    assert_mentions(&message, &["L3.seccomp.json", "tier L3 must allow sendmsg on fds 0-5 and 1001"]);
}

/// The key was accepted, and every start of such a tier then failed (or, forking, ran in
/// the host's PID namespace without a word).
#[test]
fn tier_asking_for_a_pid_namespace_is_refused() {
    let f = Fixture::new();
    f.edit("L3.toml", "pid = false", "pid = true");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L3.toml", "namespaces.pid", "a PID namespace is not supported"]);
}

#[test]
fn tier_without_exit_group_is_refused() {
    let f = Fixture::new();
    f.edit("L3.seccomp.json", "{\"syscall\": \"exit_group\"}", "{\"syscall\": \"getppid\"}");
    let (_, message) = f.refused();
    assert_mentions(&message, &["L3.seccomp.json", "exit_group"]);
}

/// The policy `file` loaded from a fixture, expecting a `DuplicateKey`
/// error; returns its filter, place and key, and checks its message.
fn duplicate_key(f: &Fixture, file: &str) -> (String, String, String) {
    match f.refused() {
        (TierError::DuplicateKey { path, filter, place, key }, message) => {
            assert_eq!(path, f.path(file));
            assert_eq!(
                message,
                format!(
                    "{}: filter {filter:?}, {place}: key {key:?} is given twice; JSON readers keep only one",
                    path.display()
                )
            );
            (filter, place, key)
        }
        (e, _) => panic!("expected DuplicateKey, got {e:?}"),
    }
}

/// The number of the shipped L2 policy's (only) rule for `syscall`.
fn l2_rule_number(syscall: &str) -> usize {
    let rules = super::tier("L2").policy.rules();
    rules.iter().find(|r| r.syscall == syscall).map(|r| r.number).expect("L2 has the rule")
}

#[test]
fn a_second_mismatch_action_is_refused_not_taken() {
    // Read last-wins, L2 would deny with EPERM where the file first says kill.
    let f = Fixture::new();
    f.edit(
        "L2.seccomp.json",
        "\"mismatch_action\": \"kill_process\",",
        "\"mismatch_action\": \"kill_process\", \"mismatch_action\": {\"errno\": 1},",
    );
    let (filter, place, key) = duplicate_key(&f, "L2.seccomp.json");
    assert_eq!((filter.as_str(), place.as_str(), key.as_str()), ("L2", "top level", "mismatch_action"));
}

#[test]
fn a_second_args_in_a_rule_is_refused_not_taken() {
    // Read last-wins, L2's exec rule would lose its fd condition and allow
    // execveat of any descriptor, still tighter than L1.
    let f = Fixture::new();
    f.edit(
        "L2.seccomp.json",
        "\"val\": 4096, \"comment\": \"flags == AT_EMPTY_PATH: execute that descriptor itself\"}]",
        "\"val\": 4096, \"comment\": \"flags == AT_EMPTY_PATH: execute that descriptor itself\"}], \
         \"args\": [{\"index\": 4, \"type\": \"dword\", \"op\": \"eq\", \"val\": 4096}]",
    );
    let (filter, place, key) = duplicate_key(&f, "L2.seccomp.json");
    let rule = l2_rule_number("execveat");
    assert_eq!(
        (filter.as_str(), place.as_str(), key.as_str()),
        ("L2", format!("rule {rule} (syscall \"execveat\")").as_str(), "args")
    );
}

#[test]
fn a_repeated_key_in_an_argument_condition_is_refused_not_taken() {
    // Read last-wins, `eq 1000` would become `ge 1000`: any fd from 1000 up.
    let f = Fixture::new();
    f.edit("L2.seccomp.json", "\"op\": \"eq\", \"val\": 1000,", "\"op\": \"eq\", \"val\": 1000, \"op\": \"ge\",");
    let (filter, place, key) = duplicate_key(&f, "L2.seccomp.json");
    let rule = l2_rule_number("execveat");
    assert_eq!(
        (filter.as_str(), place.as_str(), key.as_str()),
        ("L2", format!("rule {rule} (syscall \"execveat\"), args[0]").as_str(), "op")
    );
}
