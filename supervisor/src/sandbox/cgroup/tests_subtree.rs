//! Unit tests of the subtree life cycle (create, instances, teardown, stale cleanup) on fake
//! hybrid, pure v2 and v1-only hosts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::controller::Controller;
use super::error::CgroupError;
use super::fake_fs::{FakeFs, FakeOp};
use super::fs::CgroupFs;
use super::layout::Layout;
use super::limits::Limits;
use super::subtree::{Subtree, SubtreeConfig};
use super::test_hosts::{SELF_PID, V2_SERVICE, create, hybrid, pure_v2, v1_only};

fn config(move_self: bool) -> SubtreeConfig {
    SubtreeConfig { name: "s".into(), parent: None, move_self }
}

const HYBRID_ROOTS: [&str; 4] = [
    "/sys/fs/cgroup/unified/s",
    "/sys/fs/cgroup/memory/process_api/h/s",
    "/sys/fs/cgroup/cpu/s",
    "/sys/fs/cgroup/pids/s",
];

fn read(fs: &FakeFs, path: impl AsRef<Path>) -> String {
    CgroupFs::read(fs, path.as_ref()).unwrap()
}

fn op_path(op: &FakeOp) -> Option<&Path> {
    match op {
        FakeOp::Write(p, _) | FakeOp::Mkdir(p) | FakeOp::Rmdir(p) => Some(p),
        FakeOp::OpenDir(_) | FakeOp::OpenWrite(_) | FakeOp::Kill(_) => None,
    }
}

/// Every mutating op is inside one of `roots`, apart from the listed exceptions.
fn assert_confined(fs: &FakeFs, roots: &[&str], allowed_outside: &[PathBuf]) {
    for op in fs.ops() {
        if let Some(p) = op_path(&op) {
            let inside = roots.iter().any(|r| p.starts_with(r));
            assert!(inside || allowed_outside.iter().any(|a| a == p), "write outside the subtree: {op:?}");
        }
    }
}

fn leftovers(fs: &FakeFs, roots: &[&str]) -> Vec<PathBuf> {
    fs.cgroups().into_iter().filter(|c| roots.iter().any(|r| c.starts_with(r))).collect()
}

#[test]
fn hybrid_builds_only_in_the_hierarchies_it_uses() {
    let (fs, layout) = hybrid();
    let mut st = create(&fs, Arc::new(layout), &config(false)).unwrap();
    for root in HYBRID_ROOTS {
        for sub in ["", "/supervisor", "/plugins"] {
            assert!(fs.is_cgroup(&format!("{root}{sub}")), "{root}{sub}");
        }
    }
    for untouched in ["/sys/fs/cgroup/cpuset/s", "/sys/fs/cgroup/cpuacct/s", "/sys/fs/cgroup/freezer/s"] {
        assert!(!fs.is_cgroup(untouched), "{untouched}");
    }
    assert_confined(&fs, &HYBRID_ROOTS, &[]);
    assert!(fs.ops().iter().all(|op| !matches!(op, FakeOp::Write(..))), "nothing to write on hybrid without move_self");
    assert!(st.teardown().unwrap().is_removed());
    assert!(leftovers(&fs, &HYBRID_ROOTS).is_empty());
}

#[test]
fn hybrid_move_self_and_back() {
    let (fs, layout) = hybrid();
    let mut st = create(&fs, Arc::new(layout), &config(true)).unwrap();
    for root in HYBRID_ROOTS {
        assert_eq!(fs.procs_of(&format!("{root}/supervisor")), vec![SELF_PID], "{root}");
    }
    assert!(st.teardown().unwrap().is_removed());
    for origin in
        ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory/process_api/h", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids"]
    {
        assert!(fs.procs_of(origin).contains(&SELF_PID), "{origin}");
    }
    assert!(leftovers(&fs, &HYBRID_ROOTS).is_empty());
    let origins: Vec<PathBuf> =
        ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory/process_api/h", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids"]
            .iter()
            .map(|o| Path::new(o).join("cgroup.procs"))
            .collect();
    assert_confined(&fs, &HYBRID_ROOTS, &origins);
}

#[test]
fn pure_v2_moves_out_enables_controllers_and_restores_parent() {
    let (fs, layout) = pure_v2();
    let root = format!("{V2_SERVICE}/s");
    let mut st = create(&fs, Arc::new(layout), &config(true)).unwrap();
    let parent_ctl = Path::new(V2_SERVICE).join("cgroup.subtree_control");
    assert!(fs.ops().contains(&FakeOp::Write(parent_ctl.clone(), "+memory +cpu +pids".into())));
    for dir in [V2_SERVICE.to_owned(), root.clone(), format!("{root}/plugins")] {
        let got = read(&fs, Path::new(&dir).join("cgroup.subtree_control"));
        assert_eq!(got.trim(), "cpu memory pids", "{dir}");
    }
    assert_eq!(fs.procs_of(&format!("{root}/supervisor")), vec![SELF_PID]);
    let inst = st.create_instance("echo", "0", &Limits { memory_max: Some(1 << 20), ..Limits::default() }).unwrap();
    assert_eq!(inst.limits().unwrap().memory_max, Some(1 << 20));
    assert!(st.teardown().unwrap().is_removed());
    assert_eq!(fs.procs_of(V2_SERVICE), vec![SELF_PID]);
    assert!(fs.ops().contains(&FakeOp::Write(parent_ctl.clone(), "-memory -cpu -pids".into())));
    assert!(leftovers(&fs, &[&root]).is_empty());
    assert_confined(&fs, &[&root], &[parent_ctl, Path::new(V2_SERVICE).join("cgroup.procs")]);
}

#[test]
fn pure_v2_without_move_self_names_the_busy_parent_and_rolls_back() {
    let (fs, layout) = pure_v2();
    let e = create(&fs, Arc::new(layout), &config(false)).unwrap_err();
    match &e {
        CgroupError::InternalProcesses { cgroup, pids } => {
            assert_eq!(cgroup, Path::new(V2_SERVICE));
            assert_eq!(pids, &vec![SELF_PID]);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(leftovers(&fs, &[&format!("{V2_SERVICE}/s")]).is_empty());
}

#[test]
fn pure_v2_configured_empty_parent_already_delegated() {
    let (fs, _) = pure_v2();
    fs.add_cgroup("/sys/fs/cgroup/system.slice/plugins.slice");
    CgroupFs::write(
        &*fs,
        Path::new("/sys/fs/cgroup/system.slice/plugins.slice/cgroup.subtree_control"),
        "+memory +cpu +pids",
    )
    .unwrap();
    fs.clear_ops();
    let parent = PathBuf::from("/system.slice/plugins.slice");
    let layout = Layout::from_proc(
        &*fs,
        "25 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "0::/system.slice/sup.service\n",
        Some(&parent),
    )
    .unwrap();
    let cfg = SubtreeConfig { parent: Some(parent), ..config(false) };
    let mut st = create(&fs, Arc::new(layout), &cfg).unwrap();
    let root = "/sys/fs/cgroup/system.slice/plugins.slice/s";
    assert!(fs.is_cgroup(&format!("{root}/plugins")));
    assert_confined(&fs, &[root], &[]);
    assert!(st.teardown().unwrap().is_removed());
    assert!(!fs.is_cgroup(root));
}

#[test]
fn existing_root_and_missing_parent_are_refused() {
    let (fs, layout) = hybrid();
    // What a dead run left and nobody cleaned: an empty root is taken over, one with
    // anything beneath it is not built upon.
    fs.add_cgroup("/sys/fs/cgroup/cpu/s/plugins");
    let layout = Arc::new(layout);
    let e = create(&fs, layout.clone(), &config(false)).unwrap_err();
    assert!(
        matches!(e, CgroupError::AlreadyExists { ref cgroup } if cgroup == Path::new("/sys/fs/cgroup/cpu/s")),
        "{e}"
    );
    assert!(!fs.is_cgroup("/sys/fs/cgroup/unified/s"), "nothing was created");
    let cfg = SubtreeConfig { parent: Some("/nope".into()), ..config(false) };
    let e = create(&fs, layout, &cfg).unwrap_err();
    assert!(matches!(e, CgroupError::MissingParent { .. }), "{e}");
}

#[test]
fn instance_leaf_per_hierarchy_with_v1_limits() {
    let (fs, layout) = hybrid();
    let st = create(&fs, Arc::new(layout), &config(false)).unwrap();
    let limits = Limits {
        memory_max: Some(64 << 20),
        memory_high: Some(32 << 20),
        cpu_max: Some((50_000, 100_000)),
        pids_max: Some(32),
    };
    let inst = st.create_instance("echo", "a1", &limits).unwrap();
    for root in HYBRID_ROOTS {
        assert!(fs.is_cgroup(&format!("{root}/plugins/echo/a1")), "{root}");
    }
    assert_eq!(inst.limits().unwrap(), limits);
    let mem = "/sys/fs/cgroup/memory/process_api/h/s/plugins/echo/a1";
    assert_eq!(read(&fs, format!("{mem}/memory.memsw.limit_in_bytes")).trim(), (64u64 << 20).to_string());
    assert_eq!(read(&fs, "/sys/fs/cgroup/cpu/s/plugins/echo/a1/cpu.cfs_quota_us").trim(), "50000");
    assert_eq!(read(&fs, "/sys/fs/cgroup/pids/s/plugins/echo/a1/pids.max").trim(), "32");
    let e = st.create_instance("echo", "a1", &limits).unwrap_err();
    assert!(matches!(e, CgroupError::AlreadyExists { .. }), "{e}");
    assert!(st.create_instance("../x", "a", &limits).is_err());
    assert!(inst.try_remove().unwrap().is_removed());
    assert!(st.remove_plugin("echo").unwrap().is_removed());
    assert!(!fs.is_cgroup("/sys/fs/cgroup/unified/s/plugins/echo"));
}

#[test]
fn unavailable_controller_fails_before_creating_anything() {
    let (fs, _) = pure_v2();
    CgroupFs::write(&*fs, Path::new("/sys/fs/cgroup/system.slice/cgroup.subtree_control"), "-memory").unwrap();
    let layout = Layout::from_proc(
        &*fs,
        "25 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "0::/system.slice/sup.service\n",
        None,
    )
    .unwrap();
    let mut st = create(&fs, Arc::new(layout), &config(true)).unwrap();
    let e = st.create_instance("hog", "0", &Limits { memory_max: Some(1 << 20), ..Limits::default() }).unwrap_err();
    match e {
        CgroupError::ControllerUnavailable { controller, quota } => {
            assert_eq!(controller, Controller::Memory);
            assert_eq!(quota, "memory_max");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(!fs.is_cgroup(&format!("{V2_SERVICE}/s/plugins/hog")));
    let ok = st.create_instance("hog", "0", &Limits { pids_max: Some(8), ..Limits::default() }).unwrap();
    assert_eq!(ok.limits().unwrap().pids_max, Some(8));
    assert!(st.teardown().unwrap().is_removed());
}

#[test]
fn cleanup_stale_after_a_crash() {
    let (fs, layout) = hybrid();
    let layout = Arc::new(layout);
    {
        let st = create(&fs, layout.clone(), &config(false)).unwrap();
        st.create_instance("p", "0", &Limits::default()).unwrap();
        st.create_instance("p", "1", &Limits::default()).unwrap();
        // A crash: the handles are gone (and the kernel lets the lock go with the process),
        // the cgroups and processes are not.
    }
    let leaf0: Vec<String> = HYBRID_ROOTS.iter().map(|r| format!("{r}/plugins/p/0")).collect();
    fs.spawn(500, &leaf0.iter().map(String::as_str).collect::<Vec<_>>());
    fs.spawn(501, &[&format!("{}/plugins/p/1", HYBRID_ROOTS[1])]);
    fs.fork_on_kill(500, 502);
    let lock = Subtree::lock(&*fs, &layout, &config(false)).unwrap();
    let mut rounds = 0;
    while !Subtree::cleanup_stale(&*fs, &layout, &config(false), &lock).unwrap().is_removed() {
        rounds += 1;
        assert!(rounds < 5, "stale subtree not removed");
    }
    // Everything is gone but the locked roots, which the new owner keeps.
    let mut kept = leftovers(&fs, &HYBRID_ROOTS);
    kept.sort();
    let mut roots: Vec<PathBuf> = HYBRID_ROOTS.iter().map(PathBuf::from).collect();
    roots.sort();
    assert_eq!(kept, roots);
    for pid in [500, 501, 502] {
        assert!(!fs.is_alive(pid), "{pid}");
    }
    assert!(Subtree::cleanup_stale(&*fs, &layout, &config(false), &lock).unwrap().is_removed(), "idempotent");
    let mut st = Subtree::create(fs.clone(), layout, &config(false), lock).unwrap();
    assert!(st.teardown().unwrap().is_removed());
    assert!(leftovers(&fs, &HYBRID_ROOTS).is_empty());
}

#[test]
fn a_live_owner_is_named_and_its_subtree_left_alone() {
    let (fs, layout) = hybrid();
    let layout = Arc::new(layout);
    let live = create(&fs, layout.clone(), &config(false)).unwrap();
    live.create_instance("p", "0", &Limits::default()).unwrap();
    let leaf: Vec<String> = HYBRID_ROOTS.iter().map(|r| format!("{r}/plugins/p/0")).collect();
    fs.spawn(600, &leaf.iter().map(String::as_str).collect::<Vec<_>>());
    // Another live supervisor holds the v1 memory root only: two supervisors in different
    // unified cgroups can share a v1 cgroup (and so a v1 root).
    for root in HYBRID_ROOTS {
        fs.release_lock(root);
    }
    fs.hold_lock(HYBRID_ROOTS[1], 4242);
    let before = fs.cgroups();
    fs.clear_ops();
    let e = Subtree::lock(&*fs, &layout, &config(false)).unwrap_err();
    match &e {
        CgroupError::InUse { cgroup, pid } => {
            assert_eq!(cgroup, Path::new(HYBRID_ROOTS[1]));
            assert_eq!(*pid, Some(4242));
        }
        other => panic!("unexpected {other}"),
    }
    let message = e.to_string();
    assert!(message.contains("pid 4242") && message.contains(HYBRID_ROOTS[1]), "{message}");
    for root in [HYBRID_ROOTS[0], HYBRID_ROOTS[2], HYBRID_ROOTS[3]] {
        assert_eq!(fs.lock_holder_of(root), None, "{root}: a refused lock lets go of what it took");
    }
    assert!(fs.is_alive(600), "the live owner's plugin was not killed");
    assert!(fs.ops().iter().all(|op| matches!(op, FakeOp::Mkdir(_))), "only the lock's mkdir: {:?}", fs.ops());
    assert_eq!(fs.cgroups(), before, "nothing made or removed");
}

#[test]
fn the_lock_lives_with_the_subtree_and_goes_with_it() {
    let (fs, layout) = pure_v2();
    let layout = Arc::new(layout);
    let mut st = create(&fs, layout.clone(), &config(true)).unwrap();
    let root = format!("{V2_SERVICE}/s");
    assert_eq!(fs.lock_holder_of(&root), Some(SELF_PID));
    assert!(matches!(Subtree::lock(&*fs, &layout, &config(true)), Err(CgroupError::InUse { .. })));
    assert!(st.teardown().unwrap().is_removed());
    assert_eq!(fs.lock_holder_of(&root), None, "removing the directory takes its lock along");
    drop(st);
    let again = create(&fs, layout, &config(true)).unwrap();
    assert_eq!(fs.lock_holder_of(&root), Some(SELF_PID));
    drop(again);
    assert_eq!(fs.lock_holder_of(&root), None, "dropping the subtree lets go");
}

#[test]
fn cleanup_stale_refuses_a_tree_holding_this_process() {
    let (fs, layout) = hybrid();
    let layout = Arc::new(layout);
    let crashed = create(&fs, layout.clone(), &config(true)).unwrap();
    drop(crashed);
    let lock = Subtree::lock(&*fs, &layout, &config(true)).unwrap();
    fs.clear_ops();
    let e = Subtree::cleanup_stale(&*fs, &layout, &config(true), &lock).unwrap_err();
    assert!(matches!(e, CgroupError::ContainsSelf { pid: SELF_PID, .. }), "{e}");
    assert!(fs.ops().is_empty(), "nothing killed or removed: {:?}", fs.ops());
}

#[test]
fn teardown_is_pollable() {
    let (fs, layout) = v1_only();
    let mut st = create(&fs, Arc::new(layout), &config(false)).unwrap();
    st.create_instance("p", "0", &Limits { cpu_max: Some((10_000, 100_000)), ..Limits::default() }).unwrap();
    let busy = "/sys/fs/cgroup/memory/user.slice/s/plugins/p/0";
    fs.fail_on(busy, libc::EBUSY);
    match st.teardown().unwrap() {
        super::remove::Removal::Pending { cgroup } => assert_eq!(cgroup, Path::new(busy)),
        other => panic!("unexpected {other:?}"),
    }
    fs.clear_failures();
    assert!(st.teardown().unwrap().is_removed());
    assert!(
        leftovers(&fs, &["/sys/fs/cgroup/memory/user.slice/s", "/sys/fs/cgroup/cpu,cpuacct/user.slice/s"]).is_empty()
    );
}

#[test]
fn pure_v2_root_parent_keeps_the_controllers_it_enabled() {
    let fs = FakeFs::new(SELF_PID);
    fs.add_v2("/sys/fs/cgroup", &["cpu", "memory", "pids"]);
    fs.spawn(SELF_PID, &["/sys/fs/cgroup"]);
    let layout = Layout::from_proc(&fs, "1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "0::/\n", None).unwrap();
    let fs = Arc::new(fs);
    let mut st = create(&fs, Arc::new(layout), &config(false)).unwrap();
    let root_ctl = PathBuf::from("/sys/fs/cgroup/cgroup.subtree_control");
    assert!(
        fs.ops().contains(&FakeOp::Write(root_ctl.clone(), "+memory +cpu +pids".into())),
        "the root may hold processes"
    );
    let inst = st.create_instance("p", "0", &Limits { cpu_max: Some((5_000, 10_000)), ..Limits::default() }).unwrap();
    assert_eq!(inst.limits().unwrap().cpu_max, Some((5_000, 10_000)));
    assert!(st.teardown().unwrap().is_removed());
    let disabled =
        fs.ops().into_iter().any(|op| matches!(op, FakeOp::Write(p, v) if p == root_ctl && v.starts_with('-')));
    assert!(!disabled, "siblings under the root keep their controllers");
    assert!(!fs.is_cgroup("/sys/fs/cgroup/s"));
}
