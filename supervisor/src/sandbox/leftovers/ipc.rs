//! System V IPC objects (shared memory, semaphore sets, message queues) outlive the
//! processes that made them: a teardown finds those of a plugin's uid in
//! `/proc/sysvipc/*` and removes them with `IPC_RMID`. (nix has no System V IPC; the three
//! `*ctl` calls below are the thin layer.)

use std::fmt;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpcKind {
    Shm,
    Sem,
    Msg,
}

impl IpcKind {
    pub const ALL: [IpcKind; 3] = [IpcKind::Shm, IpcKind::Sem, IpcKind::Msg];

    /// Its table under `/proc/sysvipc`.
    fn table(self) -> &'static str {
        match self {
            IpcKind::Shm => "shm",
            IpcKind::Sem => "sem",
            IpcKind::Msg => "msg",
        }
    }

    /// The name of its id column in that table.
    fn id_column(self) -> &'static str {
        match self {
            IpcKind::Shm => "shmid",
            IpcKind::Sem => "semid",
            IpcKind::Msg => "msqid",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IpcKind::Shm => "shared memory",
            IpcKind::Sem => "semaphore set",
            IpcKind::Msg => "message queue",
        }
    }
}

/// One IPC object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpcObject {
    pub kind: IpcKind,
    pub id: i32,
    pub key: i32,
}

impl fmt::Display for IpcObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (key {:#010x})", self.kind.as_str(), self.id, self.key as u32)
    }
}

/// The objects of `table` (the text of one `/proc/sysvipc` file) that `uid` owns or
/// created. Columns are found by the header's names, so a kernel that adds columns is read
/// right; a line that does not parse is skipped.
pub fn parse(kind: IpcKind, table: &str, uid: u32) -> Vec<IpcObject> {
    let mut lines = table.lines();
    let Some(header) = lines.next() else { return Vec::new() };
    let names: Vec<&str> = header.split_whitespace().collect();
    let col = |name: &str| names.iter().position(|n| *n == name);
    let (Some(key), Some(id), Some(owner), Some(creator)) =
        (col("key"), col(kind.id_column()), col("uid"), col("cuid"))
    else {
        return Vec::new();
    };
    lines
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| cells.get(i).and_then(|c| c.parse::<i64>().ok());
            let (k, i, o, c) = (num(key)?, num(id)?, num(owner)?, num(creator)?);
            (o == i64::from(uid) || c == i64::from(uid)).then_some(IpcObject { kind, id: i as i32, key: k as i32 })
        })
        .collect()
}

/// Every IPC object of `uid` in the supervisor's IPC namespace.
pub fn of_uid(sysvipc: &Path, uid: u32) -> Vec<IpcObject> {
    IpcKind::ALL
        .into_iter()
        .flat_map(|kind| {
            let text = std::fs::read_to_string(sysvipc.join(kind.table())).unwrap_or_default();
            parse(kind, &text, uid)
        })
        .collect()
}

/// Removes `obj`; one already gone counts as removed.
pub fn remove(obj: IpcObject) -> std::io::Result<()> {
    // SAFETY: IPC_RMID takes no buffer (a null pointer is what the man pages give); the
    // ids are plain integers, and a wrong one fails with EINVAL or EIDRM.
    let rc = unsafe {
        match obj.kind {
            IpcKind::Shm => libc::shmctl(obj.id, libc::IPC_RMID, std::ptr::null_mut()),
            IpcKind::Sem => libc::semctl(obj.id, 0, libc::IPC_RMID),
            IpcKind::Msg => libc::msgctl(obj.id, libc::IPC_RMID, std::ptr::null_mut()),
        }
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::EIDRM) => Ok(()),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHM: &str = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
      4660          3   600                  4096  1001  1001      0 61234 61234 61234 61234          0          0 1764750000                     0                     0
         0          4   600                  4096  1002  1002      0     0     0     0     0          0          0 1764750000                     0                     0
        17          5   666                  4096  1003  1003      0     0     0 61234 61234          0          0 1764750000                     0                     0
";
    const SEM: &str = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime
        -1          9   600          1 61234 61234 61234 61234          0 1764750000
";

    #[test]
    fn objects_the_uid_owns_or_created_are_found_by_the_tables_own_column_names() {
        let found = parse(IpcKind::Shm, SHM, 61234);
        assert_eq!(
            found,
            [IpcObject { kind: IpcKind::Shm, id: 3, key: 4660 }, IpcObject { kind: IpcKind::Shm, id: 5, key: 17 }],
            "owned (id 3) and created then given away (id 5); root's (id 4) is not the plugin's"
        );
        assert_eq!(parse(IpcKind::Sem, SEM, 61234), [IpcObject { kind: IpcKind::Sem, id: 9, key: -1 }]);
        assert!(parse(IpcKind::Shm, SHM, 1000).is_empty());
        assert!(parse(IpcKind::Msg, "", 61234).is_empty());
        assert!(parse(IpcKind::Shm, "key shmid\n1 2\n", 61234).is_empty(), "a table without owner columns");
        assert_eq!(IpcObject { kind: IpcKind::Sem, id: 9, key: -1 }.to_string(), "semaphore set 9 (key 0xffffffff)");
    }

    #[test]
    fn a_real_segment_is_found_removed_and_removing_it_again_is_not_an_error() {
        // A segment made by this test (as root here, by the test's own uid elsewhere).
        // SAFETY: IPC_PRIVATE with a small size and owner-only permissions; no attach.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        let obj = IpcObject { kind: IpcKind::Shm, id, key: 0 };
        let listed = of_uid(Path::new("/proc/sysvipc"), me);
        let removed = remove(obj);
        assert!(listed.contains(&obj), "{listed:?}");
        removed.unwrap();
        assert!(!of_uid(Path::new("/proc/sysvipc"), me).contains(&obj));
        remove(obj).unwrap();
    }
}
