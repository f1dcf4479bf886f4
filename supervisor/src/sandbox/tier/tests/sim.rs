//! The simulator itself, on small hand-written programs.

use super::super::bpf::insn;
use super::super::sim::{SeccompData, SimError, action, allows, run};

fn data(nr: i32, args: [u64; 6]) -> SeccompData {
    SeccompData::new(0xC000_003E, nr, args)
}

#[test]
fn loads_read_the_little_endian_words_of_seccomp_data() {
    let args = [0x1111_1111_2222_2222, 0x3333_3333_4444_4444, 0, 0, 0, 0x5555_5555_6666_6666];
    let cases = [
        (0, 7),
        (4, 0xC000_003E),
        (16, 0x2222_2222),
        (20, 0x1111_1111),
        (24, 0x4444_4444),
        (56, 0x6666_6666),
        (60, 0x5555_5555),
    ];
    for (offset, expected) in cases {
        let program = [insn(0x20, 0, 0, offset), insn(0x16, 0, 0, 0)];
        assert_eq!(run(&program, &data(7, args)), Ok(expected), "offset {offset}");
    }
}

#[test]
fn jumps_and_returns_follow_classic_bpf() {
    // if nr == 5 return ALLOW else if nr > 10 return ERRNO(1) else KILL
    let program = [
        insn(0x20, 0, 0, 0),
        insn(0x15, 0, 1, 5),
        insn(0x06, 0, 0, libc::SECCOMP_RET_ALLOW),
        insn(0x25, 0, 1, 10),
        insn(0x06, 0, 0, libc::SECCOMP_RET_ERRNO | 1),
        insn(0x06, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    assert_eq!(allows(&program, &data(5, [0; 6])), Ok(true));
    assert_eq!(run(&program, &data(11, [0; 6])), Ok(libc::SECCOMP_RET_ERRNO | 1));
    assert_eq!(action(libc::SECCOMP_RET_ERRNO | 1), libc::SECCOMP_RET_ERRNO);
    assert_eq!(run(&program, &data(10, [0; 6])), Ok(libc::SECCOMP_RET_KILL_PROCESS));
}

#[test]
fn alu_jset_scratch_and_index_register_work() {
    // A = arg0 low; A &= 0xf0; M[3] = A; X = A; A = 1; A += X; A <<= 1;
    // if A & 0x40 return A else return 0
    let program = [
        insn(0x20, 0, 0, 16),
        insn(0x54, 0, 0, 0xf0),
        insn(0x02, 0, 0, 3),
        insn(0x07, 0, 0, 0),
        insn(0x00, 0, 0, 1),
        insn(0x0c, 0, 0, 0),
        insn(0x64, 0, 0, 1),
        insn(0x45, 0, 1, 0x40),
        insn(0x16, 0, 0, 0),
        insn(0x06, 0, 0, 0),
    ];
    assert_eq!(run(&program, &data(0, [0x2f, 0, 0, 0, 0, 0])), Ok(0x42));
    assert_eq!(run(&program, &data(0, [0x8f, 0, 0, 0, 0, 0])), Ok(0));
    let scratch =
        [insn(0x00, 0, 0, 9), insn(0x02, 0, 0, 15), insn(0x00, 0, 0, 0), insn(0x60, 0, 0, 15), insn(0x16, 0, 0, 0)];
    assert_eq!(run(&scratch, &data(0, [0; 6])), Ok(9));
}

#[test]
fn division_by_zero_ends_the_program_with_zero() {
    let program = [insn(0x00, 0, 0, 8), insn(0x3c, 0, 0, 0), insn(0x06, 0, 0, 1)];
    assert_eq!(run(&program, &data(0, [0; 6])), Ok(0));
}

#[test]
fn malformed_programs_are_errors_not_guesses() {
    let d = data(0, [0; 6]);
    assert_eq!(run(&[insn(0x20, 0, 0, 0)], &d), Err(SimError::FellOffEnd));
    assert_eq!(run(&[insn(0x20, 0, 0, 2), insn(0x06, 0, 0, 0)], &d), Err(SimError::BadLoad { pc: 0, offset: 2 }));
    assert_eq!(run(&[insn(0x20, 0, 0, 64), insn(0x06, 0, 0, 0)], &d), Err(SimError::BadLoad { pc: 0, offset: 64 }));
    assert_eq!(run(&[insn(0x05, 0, 0, 5), insn(0x06, 0, 0, 0)], &d), Err(SimError::JumpOutOfRange { pc: 0 }));
    assert_eq!(run(&[insn(0x15, 3, 0, 0), insn(0x06, 0, 0, 0)], &d), Err(SimError::JumpOutOfRange { pc: 0 }));
    assert_eq!(run(&[insn(0x60, 0, 0, 16), insn(0x06, 0, 0, 0)], &d), Err(SimError::BadScratch { pc: 0 }));
    // BPF_LD|BPF_B|BPF_ABS: byte loads are not accepted by seccomp.
    assert_eq!(run(&[insn(0x30, 0, 0, 0), insn(0x06, 0, 0, 0)], &d), Err(SimError::Unsupported { pc: 0, code: 0x30 }));
    assert!(SimError::FellOffEnd.to_string().contains("past the last"));
}
