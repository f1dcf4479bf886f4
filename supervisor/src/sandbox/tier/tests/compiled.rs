//! The shape of compiled programs: seccompiler's architecture check kept,
//! every mismatch rewritten, the same answers as seccompiler's own program
//! in far fewer steps, and the kernel-ready form.

use super::super::probe::argument_vectors;
use super::super::sim::{self, SeccompData};
use super::super::{
    AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, CompiledFilter, Delivery, HIGHEST_NR, Tier, ViolationAction, X32_SYSCALL_BIT,
};
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

/// seccompiler's own program for the whole policy, one comparison after
/// another, with mismatches answered as `mismatch` and clone3 as ENOSYS:
/// the meaning the search-tree program must keep.
fn reference(t: &Tier, mismatch: u32) -> impl Fn(&SeccompData) -> u32 {
    let json = t.policy.json_with_mismatch(serde_json::json!({ "errno": 4095 }));
    let program = seccompiler::compile_from_json(json.as_slice(), seccompiler::TargetArch::x86_64)
        .expect("seccompiler compiles the shipped policies")
        .into_values()
        .next()
        .expect("one program");
    let program: Vec<libc::sock_filter> =
        program.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
    move |data: &SeccompData| match sim::run(&program, data).expect("seccompiler's program runs") {
        k if k == libc::SECCOMP_RET_ERRNO | 4095 && data.nr == libc::SYS_clone3 as i32 => {
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        }
        k if k == libc::SECCOMP_RET_ERRNO | 4095 => mismatch,
        k => k,
    }
}

#[test]
fn programs_answer_every_call_as_seccompilers_linear_program_does() {
    for t in shipped().iter() {
        for delivery in [Delivery::Notify, Delivery::Direct] {
            let program = t.compile(delivery).expect("compiles");
            let mismatch = match delivery {
                Delivery::Notify => libc::SECCOMP_RET_USER_NOTIF,
                Delivery::Direct => t.violation.seccomp_ret(),
            };
            let want = reference(t, mismatch);
            let numbers = (-2..=HIGHEST_NR + 2).chain((0..=HIGHEST_NR).map(|nr| nr | X32_SYSCALL_BIT)).chain([
                i32::MAX,
                i32::MIN,
                0x3fff_ffff,
            ]);
            for nr in numbers {
                let vectors = argument_vectors(nr, &[&t.policy]).expect("the shipped policies are comparable");
                for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386] {
                    for args in &vectors {
                        let data = SeccompData::new(arch, nr, *args);
                        assert_eq!(
                            sim::run(program.instructions(), &data),
                            Ok(want(&data)),
                            "tier {} {delivery:?}: nr {nr:#x} arch {arch:#x} args {args:x?}",
                            t.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn any_call_without_conditions_is_decided_in_a_few_comparisons() {
    // The kernel emulates the program for every syscall number when the
    // filter is installed, to cache the constant answers; seccompiler's
    // one-by-one comparisons cost up to 480 instructions per number for L1.
    for t in shipped().iter() {
        let conditional: Vec<i32> =
            t.policy.rules().iter().filter(|r| !r.conditions.is_empty()).map(|r| r.nr).collect();
        let worst = (0..=HIGHEST_NR)
            .filter(|nr| !conditional.contains(nr))
            .map(|nr| {
                let data = SeccompData::new(AUDIT_ARCH_X86_64, nr, [0; 6]);
                sim::run_counted(t.program.instructions(), &data).expect("runs").1
            })
            .max()
            .unwrap_or(0);
        assert!(worst <= 24, "tier {}: up to {worst} instructions per call", t.name);
    }
}
