//! Fake hosts for unit tests: `FakeFs` kernels shaped like a hybrid host (this development
//! machine), a pure v2 systemd host and a v1-only host, with this process placed in them.

use std::path::Path;
use std::sync::Arc;

use super::error::Result;
use super::fake_fs::FakeFs;
use super::fs::CgroupFs;
use super::layout::Layout;
use super::subtree::{Subtree, SubtreeConfig};

pub(crate) const SELF_PID: u32 = 100;

pub(crate) fn hybrid() -> (Arc<FakeFs>, Layout) {
    let fs = FakeFs::new(SELF_PID);
    fs.add_v2("/sys/fs/cgroup/unified", &["hugetlb"]);
    for c in ["cpu", "cpuacct", "cpuset", "memory", "pids", "freezer"] {
        fs.add_v1(&format!("/sys/fs/cgroup/{c}"), &[c]);
    }
    fs.add_cgroup("/sys/fs/cgroup/memory/process_api/h");
    fs.spawn(
        SELF_PID,
        &[
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/memory/process_api/h",
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup/cpuacct",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/freezer",
        ],
    );
    let mountinfo: String = ["cpu", "cpuacct", "cpuset", "memory", "pids", "freezer"]
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} 31 0:{i} / /sys/fs/cgroup/{c} rw,relatime - cgroup cgroup rw,{c}\n", 32 + i))
        .chain(["41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n".to_owned()])
        .collect();
    let self_cgroup = "6:freezer:/\n5:pids:/\n4:memory:/process_api/h\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    let layout = Layout::from_proc(&fs, &mountinfo, self_cgroup, None).unwrap();
    fs.clear_ops();
    (Arc::new(fs), layout)
}

pub(crate) const V2_SERVICE: &str = "/sys/fs/cgroup/system.slice/sup.service";

pub(crate) fn pure_v2() -> (Arc<FakeFs>, Layout) {
    let fs = FakeFs::new(SELF_PID);
    fs.add_v2("/sys/fs/cgroup", &["cpu", "io", "memory", "pids"]);
    fs.add_cgroup(V2_SERVICE);
    for dir in ["/sys/fs/cgroup", "/sys/fs/cgroup/system.slice"] {
        fs.write(&Path::new(dir).join("cgroup.subtree_control"), "+cpu +memory +pids").unwrap();
    }
    fs.spawn(SELF_PID, &[V2_SERVICE]);
    let layout = Layout::from_proc(
        &fs,
        "25 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        "0::/system.slice/sup.service\n",
        None,
    )
    .unwrap();
    fs.clear_ops();
    (Arc::new(fs), layout)
}

pub(crate) fn v1_only() -> (Arc<FakeFs>, Layout) {
    let fs = FakeFs::new(SELF_PID);
    fs.add_v1("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]);
    fs.add_v1("/sys/fs/cgroup/memory", &["memory"]);
    fs.add_v1("/sys/fs/cgroup/pids", &["pids"]);
    fs.add_v1("/sys/fs/cgroup/freezer", &["freezer"]);
    for c in ["cpu,cpuacct", "memory", "pids"] {
        fs.add_cgroup(&format!("/sys/fs/cgroup/{c}/user.slice"));
    }
    fs.spawn(
        SELF_PID,
        &[
            "/sys/fs/cgroup/cpu,cpuacct/user.slice",
            "/sys/fs/cgroup/memory/user.slice",
            "/sys/fs/cgroup/pids/user.slice",
            "/sys/fs/cgroup/freezer",
        ],
    );
    let layout = Layout::from_proc(
        &fs,
        "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
         31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
         32 25 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
         33 25 0:29 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n",
        "5:freezer:/\n4:pids:/user.slice\n3:memory:/user.slice\n2:cpu,cpuacct:/user.slice\n",
        None,
    )
    .unwrap();
    fs.clear_ops();
    (Arc::new(fs), layout)
}

/// The fake as the trait object the production code takes.
pub(crate) fn dyn_fs(fs: &Arc<FakeFs>) -> Arc<dyn CgroupFs> {
    fs.clone()
}

/// Locks and builds a subtree, as a supervisor's start does.
pub(crate) fn create(fs: &Arc<FakeFs>, layout: Arc<Layout>, config: &SubtreeConfig) -> Result<Subtree> {
    let lock = Subtree::lock(&**fs, &layout, config)?;
    Subtree::create(dyn_fs(fs), layout, config, lock)
}
