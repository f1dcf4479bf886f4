//! A compiled seccomp program, held in the form the kernel takes, so the
//! child between fork and exec only passes a pointer.

use std::fmt;
use std::marker::PhantomData;

/// A compiled, rewritten seccomp program for one tier.
#[derive(Clone)]
pub struct CompiledFilter {
    instructions: Box<[libc::sock_filter]>,
}

impl CompiledFilter {
    /// The kernel takes at most this many instructions (`BPF_MAXINSNS`).
    pub const MAX_LEN: usize = 4096;

    /// Wraps a finished program; the compiler checked its length.
    pub(super) fn new(instructions: Vec<libc::sock_filter>) -> Self {
        Self { instructions: instructions.into_boxed_slice() }
    }

    /// The instructions, for inspection and simulation.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.instructions
    }

    /// The number of instructions.
    pub fn len(&self) -> usize {
        self.instructions.len()
    }

    /// Always false: a compiled tier has at least its architecture check.
    pub fn is_empty(&self) -> bool {
        self.instructions.is_empty()
    }

    /// The `struct sock_fprog` for `seccomp(SECCOMP_SET_MODE_FILTER, ...)`.
    /// Build it before fork; the child then only needs `as_ptr`.
    pub fn as_sock_fprog(&self) -> SockFprog<'_> {
        SockFprog {
            raw: libc::sock_fprog {
                // The compiler refuses programs longer than MAX_LEN, which
                // fits in the kernel's u16 length.
                len: u16::try_from(self.instructions.len()).unwrap_or(u16::MAX),
                // The kernel only reads the program (copy_from_user); the
                // mutable pointer is the C declaration's, not a licence.
                filter: self.instructions.as_ptr().cast_mut(),
            },
            _program: PhantomData,
        }
    }
}

impl fmt::Debug for CompiledFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledFilter").field("instructions", &self.instructions.len()).finish()
    }
}

impl PartialEq for CompiledFilter {
    fn eq(&self, other: &Self) -> bool {
        self.instructions.len() == other.instructions.len()
            && self.instructions.iter().zip(other.instructions.iter()).all(|(a, b)| super::bpf::same(a, b))
    }
}

impl Eq for CompiledFilter {}

/// A `struct sock_fprog` borrowing a [`CompiledFilter`]; the borrow keeps
/// the program alive for as long as the pointer may be used.
pub struct SockFprog<'a> {
    raw: libc::sock_fprog,
    _program: PhantomData<&'a [libc::sock_filter]>,
}

impl SockFprog<'_> {
    /// The pointer to pass to `seccomp(2)`; valid while `self` is neither
    /// moved nor dropped.
    pub fn as_ptr(&self) -> *const libc::sock_fprog {
        &self.raw
    }
}

impl fmt::Debug for SockFprog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SockFprog").field("len", &self.raw.len).field("filter", &self.raw.filter).finish()
    }
}
