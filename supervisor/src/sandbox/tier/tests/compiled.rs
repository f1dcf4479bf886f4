//! The shape of compiled programs: seccompiler's architecture check kept,
//! every mismatch rewritten, and the kernel-ready form.

use super::super::sim::{self, SeccompData};
use super::super::{AUDIT_ARCH_X86_64, CompiledFilter, Delivery, ViolationAction};
use super::{shipped, tier};

const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn returns(program: &CompiledFilter) -> Vec<u32> {
    program.instructions().iter().filter(|i| i.code == RET_K).map(|i| i.k).collect()
}

#[test]
fn programs_start_with_seccompilers_architecture_check() {
    for t in shipped().iter() {
        let head: Vec<(u16, u8, u8, u32)> =
            t.program.instructions()[..3].iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        assert_eq!(
            head,
            [(0x20, 0, 0, 4), (0x15, 1, 0, AUDIT_ARCH_X86_64), (RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),],
            "tier {}",
            t.name
        );
    }
}

#[test]
fn notify_programs_return_only_allow_kill_at_the_door_notify_and_enosys() {
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    for t in shipped().iter() {
        let rets = returns(&t.program);
        assert_eq!(rets[0], libc::SECCOMP_RET_KILL_PROCESS);
        assert!(
            rets[1..].iter().all(|&k| [libc::SECCOMP_RET_ALLOW, libc::SECCOMP_RET_USER_NOTIF, enosys].contains(&k)),
            "tier {}: {rets:x?}",
            t.name
        );
        assert_eq!(rets.iter().filter(|&&k| k == enosys).count(), 1, "only clone3 gets ENOSYS");
        assert!(rets.contains(&libc::SECCOMP_RET_USER_NOTIF));
    }
}

#[test]
fn direct_programs_carry_the_policys_own_action() {
    for t in shipped().iter() {
        let direct = t.compile(Delivery::Direct).expect("compiles");
        assert_eq!(direct.len(), t.program.len(), "same shape, other returns");
        let wanted = t.violation.seccomp_ret();
        let data = SeccompData::new(AUDIT_ARCH_X86_64, libc::SYS_mount as i32, [0; 6]);
        assert_eq!(sim::run(direct.instructions(), &data), Ok(wanted), "tier {}", t.name);
        assert!(!returns(&direct).contains(&libc::SECCOMP_RET_USER_NOTIF));
    }
    assert_eq!(ViolationAction::Errno(1).seccomp_ret(), libc::SECCOMP_RET_ERRNO | 1);
    assert_eq!(ViolationAction::KillProcess.seccomp_ret(), libc::SECCOMP_RET_KILL_PROCESS);
}

#[test]
fn sock_fprog_points_at_the_program() {
    let program = &tier("L3").program;
    let fprog = program.as_sock_fprog();
    let ptr = fprog.as_ptr();
    // SAFETY: `ptr` points into `fprog`, alive and unmoved for this block.
    let (len, filter) = unsafe { ((*ptr).len, (*ptr).filter) };
    assert_eq!(usize::from(len), program.len());
    assert_eq!(filter.cast_const(), program.instructions().as_ptr());
    assert!(program.len() <= CompiledFilter::MAX_LEN);
    assert!(!program.is_empty());
}
