//! Unit tests of one instance's leaf on fake hosts: live limits, stats parsing, populated,
//! kill strategies and removal.

use std::path::Path;
use std::sync::Arc;

use super::error::CgroupError;
use super::fake_fs::{FakeFs, FakeOp};
use super::fs::CgroupFs;
use super::instance::Instance;
use super::kill::KillStrategy;
use super::layout::Layout;
use super::limits::Limits;
use super::remove::Removal;
use super::stats::Stats;
use super::subtree::{Subtree, SubtreeConfig};
use super::test_hosts::{SELF_PID, create, hybrid, pure_v2, v1_only};

fn make(fs: &Arc<FakeFs>, layout: Layout, move_self: bool) -> (Subtree, Instance) {
    let cfg = SubtreeConfig { name: "s".into(), parent: None, move_self };
    let st = create(fs, Arc::new(layout), &cfg).unwrap();
    let inst = st.create_instance("p", "0", &Limits::default()).unwrap();
    fs.clear_ops();
    (st, inst)
}

fn dirs(inst: &Instance) -> Vec<String> {
    inst.cgroups().dirs().map(|(_, d)| d.display().to_string()).collect()
}

fn writes(fs: &FakeFs) -> Vec<(String, String)> {
    fs.ops()
        .into_iter()
        .filter_map(|op| match op {
            FakeOp::Write(p, v) => Some((p.file_name().unwrap().to_string_lossy().into_owned(), v)),
            _ => None,
        })
        .collect()
}

#[test]
fn hybrid_live_limit_changes_keep_v1_memsw_order() {
    let (fs, layout) = hybrid();
    let (_st, inst) = make(&fs, layout, false);
    let small = Limits { memory_max: Some(16 << 20), ..Limits::default() };
    let big = Limits { memory_max: Some(256 << 20), pids_max: Some(10), ..Limits::default() };
    inst.set_limits(&small).unwrap();
    assert_eq!(inst.limits().unwrap().memory_max, Some(16 << 20));
    inst.set_limits(&big).unwrap();
    assert_eq!(inst.limits().unwrap(), big);
    inst.set_limits(&small).unwrap();
    assert_eq!(inst.limits().unwrap(), small, "lifting pids_max and lowering memory");
    inst.set_limits(&Limits::default()).unwrap();
    assert_eq!(inst.limits().unwrap(), Limits::default());
}

#[test]
fn pure_v2_limit_files() {
    let (fs, layout) = pure_v2();
    let (_st, inst) = make(&fs, layout, true);
    let l = Limits {
        memory_max: Some(128 << 20),
        memory_high: Some(96 << 20),
        cpu_max: Some((25_000, 100_000)),
        pids_max: Some(64),
    };
    inst.set_limits(&l).unwrap();
    let w = writes(&fs);
    for (file, value) in [
        ("memory.max", "134217728"),
        ("memory.swap.max", "0"),
        ("memory.high", "100663296"),
        ("cpu.max", "25000 100000"),
        ("pids.max", "64"),
    ] {
        assert!(w.contains(&(file.to_owned(), value.to_owned())), "{file}={value} in {w:?}");
    }
    assert_eq!(inst.limits().unwrap(), l);
    fs.clear_ops();
    inst.set_limits(&Limits::default()).unwrap();
    let w = writes(&fs);
    for file in ["memory.max", "memory.swap.max", "memory.high", "cpu.max", "pids.max"] {
        assert!(w.contains(&(file.to_owned(), "max".to_owned())), "{file} in {w:?}");
    }
}

#[test]
fn invalid_limits_write_nothing() {
    let (fs, layout) = hybrid();
    let (_st, inst) = make(&fs, layout, false);
    let e = inst.set_limits(&Limits { cpu_max: Some((10, 100_000)), ..Limits::default() }).unwrap_err();
    assert!(matches!(e, CgroupError::InvalidLimit { field: "cpu_max", .. }), "{e}");
    assert!(writes(&fs).is_empty());
}

#[test]
fn write_errors_name_cgroup_and_file() {
    let (fs, layout) = pure_v2();
    let (_st, inst) = make(&fs, layout, true);
    let dir = dirs(&inst)[0].clone();
    fs.fail_on(&format!("{dir}/pids.max"), libc::EIO);
    let e = inst.set_limits(&Limits { pids_max: Some(3), ..Limits::default() }).unwrap_err();
    match &e {
        CgroupError::Write { cgroup, file, value, .. } => {
            assert_eq!(cgroup, Path::new(&dir));
            assert_eq!(file, "pids.max");
            assert_eq!(value, "3");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
}

#[test]
fn a_v1_memory_limit_below_usage_is_refused_and_the_previous_limits_stay() {
    let (fs, layout) = hybrid();
    let (_st, inst) = make(&fs, layout, false);
    let before = Limits { memory_max: Some(256 << 20), pids_max: Some(64), ..Limits::default() };
    inst.set_limits(&before).unwrap();
    let (_, mem) = inst.cgroups().dirs().find(|(_, d)| d.starts_with("/sys/fs/cgroup/memory")).unwrap();
    fs.set_file(&format!("{}/memory.usage_in_bytes", mem.display()), &format!("{}\n", 64 << 20));
    let lower = Limits { memory_max: Some(16 << 20), pids_max: Some(32), ..Limits::default() };
    let e = inst.set_limits(&lower).unwrap_err();
    assert!(matches!(&e, CgroupError::Write { file, .. } if file == "memory.limit_in_bytes"), "{e}");
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
    assert_eq!(inst.limits().unwrap(), before);
}

#[test]
fn a_refusal_part_way_puts_back_what_was_already_written() {
    let (fs, layout) = pure_v2();
    let (_st, inst) = make(&fs, layout, true);
    let before = Limits { memory_max: Some(256 << 20), cpu_max: Some((50_000, 100_000)), ..Limits::default() };
    inst.set_limits(&before).unwrap();
    let dir = dirs(&inst)[0].clone();
    fs.fail_on(&format!("{dir}/pids.max"), libc::EINVAL);
    let after =
        Limits { memory_max: Some(64 << 20), cpu_max: Some((20_000, 100_000)), pids_max: Some(9), ..Limits::default() };
    let e = inst.set_limits(&after).unwrap_err();
    assert!(matches!(&e, CgroupError::Write { file, .. } if file == "pids.max"), "{e}");
    fs.clear_failures();
    assert_eq!(inst.limits().unwrap(), before, "memory and cpu were written, then put back");
}

#[test]
fn v2_stats() {
    let (fs, layout) = pure_v2();
    let (_st, inst) = make(&fs, layout, true);
    let d = &dirs(&inst)[0];
    fs.set_file(&format!("{d}/memory.current"), "1048576\n");
    fs.set_file(&format!("{d}/memory.peak"), "2097152\n");
    fs.set_file(&format!("{d}/memory.events"), "low 0\nhigh 4\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n");
    // The page cache (file) is not what a leak grows: anon is, and shared memory (a memfd,
    // /dev/shm), which no reclaim frees either.
    fs.set_file(&format!("{d}/memory.stat"), "anon 655360\nfile 393216\nkernel 8192\nshmem 4096\n");
    fs.set_file(
        &format!("{d}/cpu.stat"),
        "usage_usec 5000\nuser_usec 4000\nsystem_usec 1000\nnr_periods 30\nnr_throttled 12\nthrottled_usec 777\n",
    );
    fs.set_file(&format!("{d}/pids.current"), "7\n");
    fs.set_file(&format!("{d}/pids.events"), "max 3\n");
    assert_eq!(
        inst.stats().unwrap(),
        Stats {
            memory_current: Some(1 << 20),
            memory_peak: Some(2 << 20),
            memory_held: Some(655360 + 4096),
            cpu_usage_usec: Some(5000),
            cpu_nr_throttled: Some(12),
            cpu_throttled_usec: Some(777),
            pids_current: Some(7),
            oom_kills: Some(1),
            pids_max_hits: Some(3),
        }
    );
    // The sampler pays for every file it reads, per instance (a thousand instances are
    // read a hundred a second): `cpu.stat` holds both the usage and the throttling, and is
    // read once for both.
    for file in
        ["cpu.stat", "memory.current", "memory.peak", "memory.events", "memory.stat", "pids.current", "pids.events"]
    {
        assert_eq!(fs.reads_of(&format!("{d}/{file}")), 1, "{file} read once");
    }
    fs.remove_file(&format!("{d}/memory.peak"));
    assert_eq!(inst.stats().unwrap().memory_peak, None, "memory.peak needs 5.19+");
    fs.set_file(&format!("{d}/memory.stat"), "file 393216\n");
    assert_eq!(inst.stats().unwrap().memory_held, None, "no anon key: no made-up 0");
    fs.set_file(&format!("{d}/memory.stat"), "anon 8192\nfile 393216\n");
    assert_eq!(inst.stats().unwrap().memory_held, Some(8192), "a kernel without shmem: anon alone");
    fs.set_file(&format!("{d}/memory.stat"), "anon lots\n");
    let e = inst.stats().unwrap_err();
    assert!(matches!(&e, CgroupError::Parse { file, .. } if file == "memory.stat"), "{e}");
    fs.set_file(&format!("{d}/memory.stat"), "anon 4096\n");
    fs.set_file(&format!("{d}/pids.current"), "many\n");
    let e = inst.stats().unwrap_err();
    assert!(matches!(&e, CgroupError::Parse { file, .. } if file == "pids.current"), "{e}");
    assert!(e.to_string().contains(d.as_str()), "{e}");
    fs.set_file(&format!("{d}/pids.current"), "7\n");
    // A cpu.stat that cannot be parsed is named with its cgroup, whichever key is wrong.
    for text in ["usage_usec 5000\nnr_throttled many\n", "usage_usec many\nnr_throttled 12\n"] {
        fs.set_file(&format!("{d}/cpu.stat"), text);
        let e = inst.stats().unwrap_err();
        assert!(
            matches!(&e, CgroupError::Parse { cgroup, file, .. } if file == "cpu.stat" && cgroup == Path::new(d)),
            "{e}"
        );
        assert!(e.to_string().contains(d.as_str()), "{e}");
    }
}

#[test]
fn hybrid_stats_mix_v1_controllers_and_unified_usage() {
    let (fs, layout) = hybrid();
    let (_st, inst) = make(&fs, layout, false);
    let d = dirs(&inst);
    let (unified, mem, cpu, pids) = (&d[0], &d[1], &d[2], &d[3]);
    assert!(mem.starts_with("/sys/fs/cgroup/memory/process_api/h/"));
    fs.set_file(&format!("{unified}/cpu.stat"), "usage_usec 4242\nuser_usec 4000\nsystem_usec 242\n");
    fs.set_file(&format!("{mem}/memory.usage_in_bytes"), "4096\n");
    fs.set_file(&format!("{mem}/memory.max_usage_in_bytes"), "8192\n");
    fs.set_file(&format!("{mem}/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    // v1: the hierarchical total_rss and total_shmem, not the cgroup's own rss.
    fs.set_file(
        &format!("{mem}/memory.stat"),
        "cache 8192\nrss 1024\nshmem 512\ntotal_cache 8192\ntotal_rss 3072\ntotal_shmem 1024\n",
    );
    fs.set_file(&format!("{cpu}/cpu.stat"), "nr_periods 10\nnr_throttled 4\nthrottled_time 5000000\n");
    fs.set_file(&format!("{pids}/pids.current"), "2\n");
    fs.set_file(&format!("{pids}/pids.events"), "max 0\n");
    assert_eq!(
        inst.stats().unwrap(),
        Stats {
            memory_current: Some(4096),
            memory_peak: Some(8192),
            memory_held: Some(3072 + 1024),
            cpu_usage_usec: Some(4242),
            cpu_nr_throttled: Some(4),
            cpu_throttled_usec: Some(5000),
            pids_current: Some(2),
            oom_kills: Some(2),
            pids_max_hits: Some(0),
        }
    );
}

/// The sampler finds a cgroup's files once and reads them for as long as the cgroup lives:
/// each reading is the kernel's counters as they are then, read from the file again (never
/// a value kept), with the errors naming the cgroup and file as `stats` does.
#[test]
fn stat_files_found_once_read_the_counters_as_they_are_at_each_reading() {
    let (fs, layout) = hybrid();
    let (_st, inst) = make(&fs, layout, false);
    let d = dirs(&inst);
    let (unified, mem, cpu, pids) = (&d[0], &d[1], &d[2], &d[3]);
    fs.set_file(&format!("{unified}/cpu.stat"), "usage_usec 10\n");
    fs.set_file(&format!("{mem}/memory.usage_in_bytes"), "4096\n");
    fs.set_file(&format!("{mem}/memory.oom_control"), "oom_kill 0\n");
    fs.set_file(&format!("{mem}/memory.stat"), "total_rss 100\ntotal_shmem 1\n");
    fs.set_file(&format!("{cpu}/cpu.stat"), "nr_throttled 0\nthrottled_time 0\n");
    fs.set_file(&format!("{pids}/pids.current"), "1\n");
    fs.set_file(&format!("{pids}/pids.events"), "max 0\n");
    fs.remove_file(&format!("{mem}/memory.max_usage_in_bytes"));
    let files = inst.stat_files();
    let first = files.read().unwrap();
    assert_eq!(
        first,
        Stats {
            memory_current: Some(4096),
            memory_peak: None,
            memory_held: Some(101),
            cpu_usage_usec: Some(10),
            cpu_nr_throttled: Some(0),
            cpu_throttled_usec: Some(0),
            pids_current: Some(1),
            oom_kills: Some(0),
            pids_max_hits: Some(0),
        }
    );
    fs.set_file(&format!("{unified}/cpu.stat"), "usage_usec 20\n");
    fs.set_file(&format!("{mem}/memory.max_usage_in_bytes"), "8192\n");
    fs.set_file(&format!("{cpu}/cpu.stat"), "nr_throttled 3\nthrottled_time 9000\n");
    fs.set_file(&format!("{pids}/pids.events"), "max 2\n");
    let second = files.read().unwrap();
    assert_eq!(second.cpu_usage_usec, Some(20));
    assert_eq!(second.memory_peak, Some(8192), "a file that came since is read");
    assert_eq!((second.cpu_nr_throttled, second.cpu_throttled_usec, second.pids_max_hits), (Some(3), Some(9), Some(2)));
    assert_eq!(fs.reads_of(&format!("{pids}/pids.events")), 2, "read at each reading");
    fs.set_file(&format!("{pids}/pids.current"), "lots\n");
    let e = files.read().unwrap_err();
    assert!(
        matches!(&e, CgroupError::Parse { cgroup, file, .. } if file == "pids.current" && cgroup == Path::new(pids)),
        "{e}"
    );
    fs.remove_file(&format!("{mem}/memory.oom_control"));
    let e = files.read().unwrap_err();
    assert!(
        matches!(&e, CgroupError::Read { cgroup, file, .. } if file == "memory.oom_control" && cgroup == Path::new(mem)),
        "{e}"
    );
    assert_eq!(files.procs().unwrap(), Vec::<u32>::new());
    fs.spawn(700, &[unified]);
    assert_eq!(files.procs().unwrap(), vec![700]);
}

#[test]
fn v1_only_usage_from_cpuacct_and_populated_from_procs() {
    let (fs, layout) = v1_only();
    let (_st, inst) = make(&fs, layout, false);
    let cpu = dirs(&inst).into_iter().find(|d| d.contains("cpu,cpuacct")).unwrap();
    fs.set_file(&format!("{cpu}/cpuacct.usage"), "3000000\n");
    // cpu and cpuacct mounted together: the throttling from the same directory's cpu.stat.
    fs.set_file(&format!("{cpu}/cpu.stat"), "nr_periods 9\nnr_throttled 5\nthrottled_time 7000\n");
    let stats = inst.stats().unwrap();
    assert_eq!(
        (stats.cpu_usage_usec, stats.cpu_nr_throttled, stats.cpu_throttled_usec),
        (Some(3000), Some(5), Some(7))
    );
    assert!(!inst.populated().unwrap());
    inst.add_process(700).unwrap_err();
    fs.spawn(700, &[&cpu]);
    inst.add_process(700).unwrap();
    assert!(inst.populated().unwrap());
    assert_eq!(inst.procs().unwrap(), vec![700]);
}

#[test]
fn kill_uses_cgroup_kill_when_present() {
    let (fs, layout) = hybrid();
    let (_st, inst) = make(&fs, layout, false);
    let d = dirs(&inst);
    fs.spawn(600, &d.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(inst.populated().unwrap());
    assert!(matches!(inst.try_remove().unwrap(), Removal::Pending { .. }));
    inst.kill().unwrap();
    assert_eq!(fs.ops().iter().filter(|o| matches!(o, FakeOp::Kill(_))).count(), 0);
    assert!(writes(&fs).contains(&("cgroup.kill".to_owned(), "1".to_owned())));
    assert!(!inst.populated().unwrap());
    assert!(inst.try_remove().unwrap().is_removed());
    assert!(inst.try_remove().unwrap().is_removed(), "idempotent");
}

#[test]
fn fallback_freezes_signals_every_pid_and_thaws() {
    for strategy_and_fs in [0, 1] {
        let (fs, layout) = if strategy_and_fs == 0 {
            hybrid()
        } else {
            let fs = FakeFs::new(SELF_PID).without_cgroup_kill();
            fs.add_v2("/u", &[]);
            let layout = Layout::from_proc(&fs, "1 0 0:1 / /u rw - cgroup2 cgroup2 rw\n", "0::/\n", None).unwrap();
            (Arc::new(fs), layout)
        };
        let strategy = if strategy_and_fs == 0 { KillStrategy::FreezeAndSignal } else { KillStrategy::Auto };
        let (_st, inst) = make(&fs, layout, false);
        let d = dirs(&inst);
        fs.spawn(600, &d.iter().map(String::as_str).collect::<Vec<_>>());
        fs.spawn(601, &[&d[0]]);
        fs.fork_on_kill(601, 602);
        inst.kill_with(strategy).unwrap();
        let w = writes(&fs);
        assert_eq!(w.first(), Some(&("cgroup.freeze".to_owned(), "1".to_owned())));
        assert_eq!(w.last(), Some(&("cgroup.freeze".to_owned(), "0".to_owned())));
        for pid in [600, 601, 602] {
            assert!(fs.ops().contains(&FakeOp::Kill(pid)), "{pid}");
            assert!(!fs.is_alive(pid), "{pid}");
        }
        assert!(inst.try_remove().unwrap().is_removed());
    }
}

#[test]
fn v1_freezer_kills_take_effect_at_thaw() {
    let (fs, layout) = v1_only();
    let (_st, inst) = make(&fs, layout, false);
    let d = dirs(&inst);
    fs.spawn(800, &d.iter().map(String::as_str).collect::<Vec<_>>());
    inst.kill().unwrap();
    let w = writes(&fs);
    assert_eq!(w, vec![("freezer.state".into(), "FROZEN".into()), ("freezer.state".into(), "THAWED".into())]);
    assert!(fs.ops().contains(&FakeOp::Kill(800)));
    assert!(!fs.is_alive(800));
}

#[test]
fn endless_forking_without_freezer_is_reported() {
    let fs = FakeFs::new(SELF_PID);
    fs.add_v1("/m", &["memory"]);
    let layout = Layout::from_proc(&fs, "1 0 0:1 / /m rw - cgroup cgroup rw,memory\n", "1:memory:/\n", None).unwrap();
    let fs = Arc::new(fs);
    let (_st, inst) = make(&fs, layout, false);
    let leaf = dirs(&inst)[0].clone();
    fs.spawn(1000, &[&leaf]);
    for pid in 1000..1200 {
        fs.fork_on_kill(pid, pid + 1);
    }
    let e = inst.kill().unwrap_err();
    match e {
        CgroupError::KillIncomplete { cgroup, pids, rounds } => {
            assert_eq!(cgroup, Path::new(&leaf));
            assert_eq!(rounds, 64);
            assert_eq!(pids.len(), 1);
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn never_kills_the_supervisor() {
    let (fs, layout) = hybrid();
    let (_st, inst) = make(&fs, layout, false);
    inst.add_process(SELF_PID).unwrap();
    fs.clear_ops();
    for s in [KillStrategy::Auto, KillStrategy::FreezeAndSignal] {
        let e = inst.kill_with(s).unwrap_err();
        assert!(matches!(e, CgroupError::ContainsSelf { pid: SELF_PID, .. }), "{e}");
    }
    assert!(fs.ops().is_empty(), "{:?}", fs.ops());
}

#[test]
fn join_fds_cover_every_leaf() {
    let (fs, layout) = v1_only();
    let (_st, inst) = make(&fs, layout, false);
    let j = inst.join_fds().unwrap();
    assert!(j.cgroup_dir().is_none(), "no unified hierarchy: fork + writes only");
    let opened = fs.ops().into_iter().filter(|o| matches!(o, FakeOp::OpenWrite(_))).count();
    assert_eq!(opened, 4);
    let mem = dirs(&inst).into_iter().find(|d| d.contains("memory")).unwrap();
    assert!(CgroupFs::exists(&*fs, &Path::new(&mem).join("cgroup.procs")));
}
