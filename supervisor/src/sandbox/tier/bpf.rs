//! Classic-BPF instructions as the compiler and the search-tree layout
//! write them: the opcodes they use and one way to build and compare an
//! instruction (`libc::sock_filter` has no constructor or `PartialEq`).

pub(super) const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
pub(super) const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
pub(super) const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
pub(super) const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
pub(super) const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
pub(super) const BPF_CLASS_MASK: u16 = 0x07;

pub(super) const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

pub(super) fn same(a: &libc::sock_filter, b: &libc::sock_filter) -> bool {
    (a.code, a.jt, a.jf, a.k) == (b.code, b.jt, b.jf, b.k)
}
