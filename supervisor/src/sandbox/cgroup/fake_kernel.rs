//! The in-memory kernel behind `FakeFs`: cgroup directories per hierarchy, processes, and
//! the kernel rules the cgroup logic must respect (no internal processes on v2, controllers
//! only from the parent's `cgroup.subtree_control`, rmdir only when empty, recursive
//! `cgroup.kill`, v1-frozen tasks dying only when thawed).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use super::controller::Version;
use super::fake_files::{READ_ONLY, V2_CPU_THROTTLE_KEYS, controller_files, core_files, normalise};
use super::fake_fs::FakeOp;

#[derive(Debug)]
pub(super) struct Hier {
    pub(super) mount: PathBuf,
    pub(super) version: Version,
    /// v1: controllers bound to the hierarchy; v2: controllers the root offers.
    pub(super) controllers: Vec<String>,
}

#[derive(Debug)]
pub(super) struct Node {
    pub(super) hier: usize,
    pub(super) files: BTreeMap<String, String>,
    pub(super) procs: Vec<u32>,
    pub(super) subtree_control: BTreeSet<String>,
    /// SIGKILLed while v1-frozen: they die when the cgroup is thawed.
    pub(super) doomed: BTreeSet<u32>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) hiers: Vec<Hier>,
    pub(super) nodes: BTreeMap<PathBuf, Node>,
    pub(super) plain: BTreeMap<PathBuf, String>,
    pub(super) self_pid: u32,
    pub(super) no_cgroup_kill: bool,
    pub(super) ops: Vec<FakeOp>,
    pub(super) fork_on_kill: BTreeMap<u32, u32>,
    pub(super) failures: BTreeMap<PathBuf, i32>,
    /// flock holders of cgroup directories: (pid, token of the lock taken).
    pub(super) locks: BTreeMap<PathBuf, (u32, u64)>,
    pub(super) next_lock: u64,
    /// How often each file was read: each read of a control file is a cost the sampler
    /// pays per instance.
    pub(super) reads: BTreeMap<PathBuf, usize>,
}

pub(super) fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

pub(super) fn split(path: &Path) -> io::Result<(&Path, &str)> {
    let parent = path.parent().ok_or_else(|| errno(libc::ENOENT))?;
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| errno(libc::ENOENT))?;
    Ok((parent, name))
}

impl State {
    pub(super) fn add_hierarchy(&mut self, mount: &Path, version: Version, controllers: &[&str]) {
        let hier = self.hiers.len();
        let mut files: BTreeMap<String, String> =
            core_files(version, true, true).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if version == Version::V1 {
            for c in controllers {
                add_controller_files(&mut files, version, c);
            }
        }
        self.hiers.push(Hier {
            mount: mount.to_path_buf(),
            version,
            controllers: controllers.iter().map(|c| (*c).to_owned()).collect(),
        });
        self.nodes.insert(
            mount.to_path_buf(),
            Node { hier, files, procs: Vec::new(), subtree_control: BTreeSet::new(), doomed: BTreeSet::new() },
        );
    }

    pub(super) fn fail(&self, path: &Path) -> io::Result<()> {
        match self.failures.get(path) {
            Some(e) => Err(errno(*e)),
            None => Ok(()),
        }
    }

    pub(super) fn node(&self, dir: &Path) -> io::Result<&Node> {
        self.nodes.get(dir).ok_or_else(|| errno(libc::ENOENT))
    }

    pub(super) fn is_root(&self, dir: &Path) -> bool {
        self.hiers.iter().any(|h| h.mount == dir)
    }

    pub(super) fn subtree<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = (&'a PathBuf, &'a Node)> + 'a {
        self.nodes.iter().filter(move |(p, _)| p.starts_with(dir))
    }

    pub(super) fn children(&self, dir: &Path) -> Vec<PathBuf> {
        self.nodes.keys().filter(|p| p.parent() == Some(dir)).cloned().collect()
    }

    pub(super) fn available_v2(&self, dir: &Path) -> Vec<String> {
        let Some(node) = self.nodes.get(dir) else {
            return Vec::new();
        };
        if self.is_root(dir) {
            return self.hiers[node.hier].controllers.clone();
        }
        dir.parent()
            .and_then(|p| self.nodes.get(p))
            .map(|p| p.subtree_control.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn create(&mut self, dir: &Path) -> io::Result<()> {
        if self.nodes.contains_key(dir) {
            return Err(errno(libc::EEXIST));
        }
        let parent = dir.parent().ok_or_else(|| errno(libc::ENOENT))?;
        let (hier, parent_enabled) = {
            let p = self.node(parent)?;
            (p.hier, p.subtree_control.clone())
        };
        let version = self.hiers[hier].version;
        let mut files: BTreeMap<String, String> =
            core_files(version, false, !self.no_cgroup_kill).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let controllers: Vec<String> = match version {
            Version::V1 => self.hiers[hier].controllers.clone(),
            Version::V2 => parent_enabled.into_iter().collect(),
        };
        for c in &controllers {
            add_controller_files(&mut files, version, c);
        }
        self.nodes.insert(
            dir.to_path_buf(),
            Node { hier, files, procs: Vec::new(), subtree_control: BTreeSet::new(), doomed: BTreeSet::new() },
        );
        Ok(())
    }

    pub(super) fn move_pid(&mut self, pid: u32, dir: &Path) {
        let Some(hier) = self.nodes.get(dir).map(|n| n.hier) else {
            return;
        };
        for n in self.nodes.values_mut().filter(|n| n.hier == hier) {
            n.procs.retain(|p| *p != pid);
        }
        if let Some(n) = self.nodes.get_mut(dir) {
            n.procs.push(pid);
        }
    }

    pub(super) fn die(&mut self, pid: u32) {
        let homes: Vec<PathBuf> =
            self.nodes.iter().filter(|(_, n)| n.procs.contains(&pid)).map(|(p, _)| p.clone()).collect();
        for n in self.nodes.values_mut() {
            n.procs.retain(|p| *p != pid);
            n.doomed.remove(&pid);
        }
        if let Some(child) = self.fork_on_kill.remove(&pid) {
            for home in homes {
                self.move_pid(child, &home);
            }
        }
    }

    pub(super) fn v1_frozen(&self, pid: u32) -> Option<PathBuf> {
        self.nodes
            .iter()
            .find(|(_, n)| n.procs.contains(&pid) && n.files.get("freezer.state").map(|s| s.trim()) == Some("FROZEN"))
            .map(|(p, _)| p.clone())
    }

    pub(super) fn write_procs(&mut self, dir: &Path, value: &str) -> io::Result<()> {
        let pid = match value.trim().parse::<u32>() {
            Ok(0) => self.self_pid,
            Ok(p) => p,
            Err(_) => return Err(errno(libc::EINVAL)),
        };
        if pid != self.self_pid && !self.nodes.values().any(|n| n.procs.contains(&pid)) {
            return Err(errno(libc::ESRCH));
        }
        let node = self.node(dir)?;
        let v2 = self.hiers[node.hier].version == Version::V2;
        if v2 && !self.is_root(dir) && !node.subtree_control.is_empty() {
            return Err(errno(libc::EBUSY));
        }
        self.move_pid(pid, dir);
        Ok(())
    }

    pub(super) fn write_subtree_control(&mut self, dir: &Path, value: &str) -> io::Result<()> {
        let available = self.available_v2(dir);
        let is_root = self.is_root(dir);
        for token in value.split_whitespace() {
            let (enable, name) = match token.split_at_checked(1) {
                Some(("+", n)) => (true, n),
                Some(("-", n)) => (false, n),
                _ => return Err(errno(libc::EINVAL)),
            };
            if !available.iter().any(|a| a == name) {
                return Err(errno(libc::ENOENT));
            }
            let children = self.children(dir);
            let node = self.node(dir)?;
            if enable {
                if !is_root && !node.procs.is_empty() {
                    return Err(errno(libc::EBUSY));
                }
            } else if children.iter().any(|c| self.nodes.get(c).is_some_and(|n| n.subtree_control.contains(name))) {
                return Err(errno(libc::EBUSY));
            }
            if let Some(n) = self.nodes.get_mut(dir) {
                if enable {
                    n.subtree_control.insert(name.to_owned());
                } else {
                    n.subtree_control.remove(name);
                }
            }
            for c in children {
                if let Some(n) = self.nodes.get_mut(&c) {
                    if enable {
                        add_controller_files(&mut n.files, Version::V2, name);
                    } else {
                        for (f, _) in controller_files(Version::V2, name) {
                            n.files.remove(f);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn read_file(&self, path: &Path) -> io::Result<String> {
        if let Some(text) = self.plain.get(path) {
            return Ok(text.clone());
        }
        if self.nodes.contains_key(path) {
            return Err(errno(libc::EISDIR));
        }
        let (dir, name) = split(path)?;
        let node = self.node(dir)?;
        let lines = |v: Vec<String>| -> String { v.into_iter().map(|s| s + "\n").collect() };
        if !node.files.contains_key(name) {
            return Err(errno(libc::ENOENT));
        }
        Ok(match name {
            "cgroup.procs" => lines(node.procs.iter().map(u32::to_string).collect()),
            "cgroup.events" => {
                let populated = self.subtree(dir).any(|(_, n)| !n.procs.is_empty());
                let frozen = node.files.get("cgroup.freeze").map(|s| s.trim()) == Some("1");
                format!("populated {}\nfrozen {}\n", u8::from(populated), u8::from(frozen))
            }
            "cgroup.controllers" => self.available_v2(dir).join(" ") + "\n",
            "cgroup.subtree_control" => node.subtree_control.iter().cloned().collect::<Vec<_>>().join(" ") + "\n",
            _ => node.files.get(name).cloned().unwrap_or_default(),
        })
    }

    pub(super) fn write_file(&mut self, path: &Path, value: &str) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let node = self.node(dir)?;
        if !node.files.contains_key(name) {
            return Err(errno(libc::ENOENT));
        }
        if READ_ONLY.contains(&name) {
            return Err(errno(libc::EACCES));
        }
        match name {
            "cgroup.procs" => self.write_procs(dir, value),
            "cgroup.subtree_control" => self.write_subtree_control(dir, value),
            "cgroup.kill" => {
                if value.trim() != "1" {
                    return Err(errno(libc::EINVAL));
                }
                let victims: Vec<u32> = self.subtree(dir).flat_map(|(_, n)| n.procs.iter().copied()).collect();
                for pid in victims {
                    self.die(pid);
                }
                Ok(())
            }
            _ => {
                let normalised = normalise(name, value, &node.files).map_err(errno)?;
                let thaw = name == "freezer.state" && normalised.trim() == "THAWED";
                let doomed: Vec<u32> = self.nodes.get_mut(dir).map_or_else(Vec::new, |n| {
                    n.files.insert(name.to_owned(), normalised);
                    if thaw { std::mem::take(&mut n.doomed).into_iter().collect() } else { Vec::new() }
                });
                for pid in doomed {
                    self.die(pid);
                }
                Ok(())
            }
        }
    }

    pub(super) fn remove(&mut self, path: &Path) -> io::Result<()> {
        let node = self.node(path)?;
        if self.is_root(path) || !node.procs.is_empty() || !self.children(path).is_empty() {
            return Err(errno(libc::EBUSY));
        }
        self.nodes.remove(path);
        // The lock stays with the removed directory; one made again is unlocked.
        self.locks.remove(path);
        Ok(())
    }

    pub(super) fn exists(&self, path: &Path) -> bool {
        self.nodes.contains_key(path)
            || self.plain.contains_key(path)
            || split(path)
                .ok()
                .and_then(|(dir, name)| self.nodes.get(dir).map(|n| n.files.contains_key(name)))
                .unwrap_or(false)
    }

    /// SIGKILL: immediate death, except that a v1-frozen task dies when thawed.
    pub(super) fn sigkill(&mut self, pid: u32) {
        if let Some(dir) = self.v1_frozen(pid) {
            if let Some(n) = self.nodes.get_mut(&dir) {
                n.doomed.insert(pid);
            }
            return;
        }
        self.die(pid);
    }
}

pub(super) fn add_controller_files(files: &mut BTreeMap<String, String>, version: Version, controller: &str) {
    for (k, v) in controller_files(version, controller) {
        files.insert(k.to_owned(), v);
    }
    if version == Version::V2
        && controller == "cpu"
        && let Some(stat) = files.get_mut("cpu.stat")
    {
        stat.push_str(V2_CPU_THROTTLE_KEYS);
    }
}
