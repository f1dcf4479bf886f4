//! The supervisor moving itself into the `supervisor` leaf and back on teardown. Its own test
//! binary: it moves the whole test process, which must not race with other tests.

#[path = "cgroup_common/mod.rs"]
mod common;

use common::{Guard, cgroup_path_of_dir, cgroup_paths_of, pause_forever, spawn_into, wait};
use plugin_supervisor::sandbox::cgroup::{ForkMode, Limits};

#[test]
fn move_self_then_teardown_moves_back_and_removes_everything() {
    let me = libc::pid_t::try_from(std::process::id()).unwrap();
    let mut guard = Guard::new(true);
    let before: Vec<_> =
        guard.layout.hierarchies().map(|(_, h)| cgroup_path_of_dir(&guard.layout, &h.own_dir().unwrap())).collect();
    let leaf: Vec<_> =
        guard.subtree().supervisor_leaf().dirs().map(|(_, d)| cgroup_path_of_dir(&guard.layout, d)).collect();
    assert_eq!(cgroup_paths_of(me, &guard.layout), leaf, "moved into the supervisor leaf");

    let inst = guard.subtree().create_instance("p", "0", &Limits { pids_max: Some(4), ..Limits::default() }).unwrap();
    let child = spawn_into(&inst, ForkMode::Auto, pause_forever);
    let roots = guard.roots();

    let mut st = guard.subtree.take().unwrap();
    let mut polls = 0;
    while !st.teardown().unwrap().is_removed() {
        polls += 1;
        assert!(polls < 1000, "teardown did not finish");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(common::killed_by(wait(child.pid)), Some(libc::SIGKILL));
    assert_eq!(cgroup_paths_of(me, &guard.layout), before, "back where it started");
    for r in roots {
        assert!(!r.exists(), "{} left behind", r.display());
    }
}
