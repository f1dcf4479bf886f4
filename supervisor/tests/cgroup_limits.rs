//! Limits on the real kernel: written by this layer, read back by it and, independently, by
//! cgroups-rs's controllers at the same paths; changed live on an instance with a process.

#[path = "cgroup_common/mod.rs"]
mod common;

use std::path::Path;

use cgroups_rs::fs::MaxValue;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use common::{Guard, pause_forever, spawn_into, wait};
use plugin_supervisor::sandbox::cgroup::{Controller, ForkMode, Instance, Layout, Limits, Version};

/// The limits as cgroups-rs reads them (`None` = unlimited).
fn oracle(layout: &Layout, inst: &Instance) -> Limits {
    let at = |c: Controller| {
        let (v, dir) = inst.cgroups().for_controller(layout, c).expect("controller available");
        let base = layout.hierarchy(layout.source(c).unwrap()).unwrap().mount_point.clone();
        (v == Version::V2, dir.to_path_buf(), base)
    };
    let unlimited = |v: i64| (v >= 0 && (v as u64) < 0x7FFF_FFFF_FFFF_F000).then_some(v as u64);
    let (v2, dir, base) = at(Controller::Memory);
    let mem = MemController::new(dir, base, v2);
    let (memory_max, memory_high) = if v2 {
        let m = mem.get_mem().unwrap();
        let val = |x: Option<MaxValue>| match x {
            Some(MaxValue::Value(n)) => unlimited(n),
            _ => None,
        };
        (val(m.max), val(m.high))
    } else {
        let s = mem.memory_stat();
        let sw = mem.memswap();
        assert_eq!(sw.limit_in_bytes, s.limit_in_bytes, "memsw follows the memory limit");
        (unlimited(s.limit_in_bytes), unlimited(s.soft_limit_in_bytes))
    };
    let (v2, dir, base) = at(Controller::Cpu);
    let cpu = CpuController::new(dir, base, v2);
    let quota = cpu.cfs_quota().unwrap();
    let cpu_max = (quota > 0).then(|| (quota as u64, cpu.cfs_period().unwrap()));
    let (v2, dir, base) = at(Controller::Pids);
    let pids_max = match PidController::new(dir, base, v2).get_pid_max().unwrap() {
        MaxValue::Max => None,
        MaxValue::Value(n) => Some(n as u64),
    };
    Limits { memory_max, memory_high, cpu_max, pids_max }
}

#[test]
fn set_read_back_and_change_live() {
    let guard = Guard::new(false);
    let first = Limits {
        memory_max: Some(64 << 20),
        memory_high: Some(48 << 20),
        cpu_max: Some((50_000, 100_000)),
        pids_max: Some(32),
    };
    let inst = guard.subtree().create_instance("limits", "0", &first).unwrap();
    assert_eq!(inst.limits().unwrap(), first);
    assert_eq!(oracle(&guard.layout, &inst), first);

    let child = spawn_into(&inst, ForkMode::Auto, pause_forever);
    let stats = inst.stats().unwrap();
    assert_eq!(stats.pids_current, Some(1));
    assert!(stats.memory_current.is_some() && stats.cpu_usage_usec.is_some(), "{stats:?}");

    // Live: lower memory, raise CPU, lift pids, then raise memory again (v1 memsw order).
    let second =
        Limits { memory_max: Some(32 << 20), memory_high: None, cpu_max: Some((150_000, 200_000)), pids_max: None };
    inst.set_limits(&second).unwrap();
    assert_eq!(inst.limits().unwrap(), second);
    assert_eq!(oracle(&guard.layout, &inst), second);
    let third = Limits { memory_max: Some(512 << 20), ..second };
    inst.set_limits(&third).unwrap();
    assert_eq!(oracle(&guard.layout, &inst), third);
    inst.set_limits(&Limits::default()).unwrap();
    assert_eq!(oracle(&guard.layout, &inst), Limits::default());

    inst.kill().unwrap();
    assert_eq!(common::killed_by(wait(child.pid)), Some(libc::SIGKILL));
    common::remove_instance(&inst);
}

fn find_named(dir: &Path, name: &str, depth: u32) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_type().is_ok_and(|t| t.is_dir())
            && (e.file_name() == name || (depth > 0 && find_named(&e.path(), name, depth - 1)))
    })
}

#[test]
fn subtree_lands_beneath_own_cgroups_and_nowhere_else() {
    let guard = Guard::new(false);
    for (id, h) in guard.layout.hierarchies() {
        let root = guard.subtree().root().dir(id).unwrap();
        assert_eq!(root.parent(), h.own_dir().as_deref(), "{}", h.mount_point.display());
        assert!(root.join("supervisor").is_dir() && root.join("plugins").is_dir());
    }
    let used: Vec<_> = guard.layout.hierarchies().map(|(_, h)| h.mount_point.clone()).collect();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for m in plugin_supervisor::sandbox::cgroup::cgroup_mounts(&mountinfo).unwrap() {
        if !used.contains(&m.mount_point) {
            assert!(
                !find_named(&m.mount_point, &guard.config.name, 6),
                "created something in unused hierarchy {}",
                m.mount_point.display()
            );
        }
    }
}
