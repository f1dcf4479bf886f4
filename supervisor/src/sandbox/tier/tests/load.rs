//! The shipped tiers load, and say what the README says they say.

use super::super::{ByteSize, CpuShare, TierSet, ViolationAction};
use super::{policies_dir, shipped, tier};

#[test]
fn shipped_policies_load_as_three_ordered_tiers() {
    let set = shipped();
    let names: Vec<&str> = set.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["L1", "L2", "L3"]);
    assert_eq!(tier("L1").tighter_than, None);
    assert_eq!(tier("L2").tighter_than.as_deref(), Some("L1"));
    assert_eq!(tier("L3").tighter_than.as_deref(), Some("L2"));
}

#[test]
fn loading_twice_gives_the_same_programs() {
    let again = TierSet::load_dir(&policies_dir()).expect("shipped policies load");
    for t in shipped().iter() {
        let other = again.get(&t.name).expect("same tiers");
        assert_eq!(t.program, other.program, "tier {}", t.name);
    }
}

/// README's tier table: L2 and L3 forbid writable+executable memory, L1 does not.
#[test]
fn l2_and_l3_forbid_writable_and_executable_memory_and_l1_does_not() {
    assert!(!tier("L1").forbids_writable_exec());
    assert!(tier("L2").forbids_writable_exec());
    assert!(tier("L3").forbids_writable_exec());
}

#[test]
fn violations_are_errno_in_l1_and_kill_in_l2_and_l3() {
    assert_eq!(tier("L1").violation, ViolationAction::Errno(libc::EPERM as u16));
    assert_eq!(tier("L2").violation, ViolationAction::KillProcess);
    assert_eq!(tier("L3").violation, ViolationAction::KillProcess);
}

#[test]
fn l3_runs_in_new_network_ipc_and_uts_namespaces_with_small_quotas() {
    let l3 = tier("L3");
    assert_eq!(l3.namespaces.clone_flags(), libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS);
    // Best effort by default: a plugin entry can insist (landlock_required).
    assert!(!l3.landlock.required);
    assert!(l3.quota.memory_max <= ByteSize(64 << 20));
    assert!(l3.quota.cpu <= CpuShare { basis_points: 5000 });
    assert!(l3.quota.pids_max <= 8);
    assert_eq!(tier("L1").namespaces.clone_flags(), 0);
}

#[test]
fn every_tier_keeps_fd_1000_out_of_reach() {
    for t in shipped().iter() {
        assert!(t.limits.nofile <= super::super::EXEC_FD as u32, "tier {} nofile {}", t.name, t.limits.nofile);
    }
}
