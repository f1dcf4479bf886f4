//! A classic-BPF interpreter for seccomp programs, so what a filter does
//! can be computed without installing it: the tier ordering proof, the
//! required-call checks and the tests all ask it.
//!
//! It accepts the instruction set the kernel accepts for seccomp
//! (`seccomp_check_filter`) with the kernel's run-time meaning, and refuses
//! anything else with an error rather than guessing.

use std::fmt;

/// The input of a seccomp program (`struct seccomp_data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SeccompData {
    /// The syscall number, with the x32 bit when entered through x32.
    pub nr: i32,
    /// The audit architecture token of the entry point.
    pub arch: u32,
    /// The calling instruction's address.
    pub instruction_pointer: u64,
    /// The six argument registers, unmodified.
    pub args: [u64; 6],
}

impl SeccompData {
    /// The call `nr(args)` entered through `arch`.
    pub fn new(arch: u32, nr: i32, args: [u64; 6]) -> Self {
        Self { nr, arch, instruction_pointer: 0, args }
    }

    /// The 32-bit word at byte `offset` of the structure, as `BPF_LD|BPF_W|
    /// BPF_ABS` reads it on a little-endian machine.
    fn word(&self, offset: u32) -> Option<u32> {
        if !offset.is_multiple_of(4) {
            return None;
        }
        let low = |v: u64| v as u32;
        let high = |v: u64| (v >> 32) as u32;
        match offset {
            0 => Some(self.nr as u32),
            4 => Some(self.arch),
            8 => Some(low(self.instruction_pointer)),
            12 => Some(high(self.instruction_pointer)),
            16..=60 => {
                let arg = self.args[((offset - 16) / 8) as usize];
                Some(if offset.is_multiple_of(8) { low(arg) } else { high(arg) })
            }
            _ => None,
        }
    }
}

impl From<&libc::seccomp_data> for SeccompData {
    fn from(data: &libc::seccomp_data) -> Self {
        Self { nr: data.nr, arch: data.arch, instruction_pointer: data.instruction_pointer, args: data.args }
    }
}

/// Why a program could not be run to a return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// Execution ran past the last instruction.
    FellOffEnd,
    /// A jump from `pc` leaves the program.
    JumpOutOfRange {
        /// The jumping instruction.
        pc: usize,
    },
    /// A load at `pc` reads outside `seccomp_data` or unaligned.
    BadLoad {
        /// The loading instruction.
        pc: usize,
        /// The byte offset it asked for.
        offset: u32,
    },
    /// Scratch memory slot out of range at `pc`.
    BadScratch {
        /// The instruction.
        pc: usize,
    },
    /// An instruction seccomp does not accept.
    Unsupported {
        /// The instruction.
        pc: usize,
        /// Its opcode.
        code: u16,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FellOffEnd => write!(f, "execution ran past the last instruction"),
            Self::JumpOutOfRange { pc } => write!(f, "the jump at {pc} leaves the program"),
            Self::BadLoad { pc, offset } => {
                write!(f, "the load at {pc} reads offset {offset}, outside seccomp_data")
            }
            Self::BadScratch { pc } => write!(f, "scratch slot out of range at {pc}"),
            Self::Unsupported { pc, code } => {
                write!(f, "opcode {code:#06x} at {pc} is not accepted by seccomp")
            }
        }
    }
}

impl std::error::Error for SimError {}

/// The action part of a seccomp return value (`SECCOMP_RET_ACTION_FULL`).
pub fn action(ret: u32) -> u32 {
    ret & libc::SECCOMP_RET_ACTION_FULL
}

/// Whether `program` lets the call through.
pub fn allows(program: &[libc::sock_filter], data: &SeccompData) -> Result<bool, SimError> {
    run(program, data).map(|ret| action(ret) == libc::SECCOMP_RET_ALLOW)
}

/// Opcodes seccomp accepts, by their classic-BPF names.
mod op {
    const fn code(parts: u32) -> u16 {
        parts as u16
    }
    pub const LD_W_ABS: u16 = code(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS);
    pub const LD_W_LEN: u16 = code(libc::BPF_LD | libc::BPF_W | libc::BPF_LEN);
    pub const LDX_W_LEN: u16 = code(libc::BPF_LDX | libc::BPF_W | libc::BPF_LEN);
    pub const LD_IMM: u16 = code(libc::BPF_LD | libc::BPF_IMM);
    pub const LDX_IMM: u16 = code(libc::BPF_LDX | libc::BPF_IMM);
    pub const LD_MEM: u16 = code(libc::BPF_LD | libc::BPF_MEM);
    pub const LDX_MEM: u16 = code(libc::BPF_LDX | libc::BPF_MEM);
    pub const ST: u16 = code(libc::BPF_ST);
    pub const STX: u16 = code(libc::BPF_STX);
    pub const TAX: u16 = code(libc::BPF_MISC | libc::BPF_TAX);
    pub const TXA: u16 = code(libc::BPF_MISC | libc::BPF_TXA);
    pub const JA: u16 = code(libc::BPF_JMP | libc::BPF_JA);
    pub const RET_K: u16 = code(libc::BPF_RET | libc::BPF_K);
    pub const RET_A: u16 = code(libc::BPF_RET | libc::BPF_A);
    pub const NEG: u16 = code(libc::BPF_ALU | libc::BPF_NEG);
    pub const CLASS: u16 = 0x07;
    pub const ALU: u16 = code(libc::BPF_ALU);
    pub const JMP: u16 = code(libc::BPF_JMP);
    pub const SRC_X: u16 = code(libc::BPF_X);
    pub const OP: u16 = 0xf0;
    pub const ADD: u16 = code(libc::BPF_ADD);
    pub const SUB: u16 = code(libc::BPF_SUB);
    pub const MUL: u16 = code(libc::BPF_MUL);
    pub const DIV: u16 = code(libc::BPF_DIV);
    pub const OR: u16 = code(libc::BPF_OR);
    pub const AND: u16 = code(libc::BPF_AND);
    pub const LSH: u16 = code(libc::BPF_LSH);
    pub const RSH: u16 = code(libc::BPF_RSH);
    pub const XOR: u16 = code(libc::BPF_XOR);
    pub const JEQ: u16 = code(libc::BPF_JEQ);
    pub const JGT: u16 = code(libc::BPF_JGT);
    pub const JGE: u16 = code(libc::BPF_JGE);
    pub const JSET: u16 = code(libc::BPF_JSET);
}

/// Runs `program` on `data` and returns its seccomp return value.
pub fn run(program: &[libc::sock_filter], data: &SeccompData) -> Result<u32, SimError> {
    run_counted(program, data).map(|(ret, _)| ret)
}

/// [`run`], also counting the instructions executed: what the kernel pays
/// per uncached call, and per number when it builds its cache.
pub fn run_counted(program: &[libc::sock_filter], data: &SeccompData) -> Result<(u32, usize), SimError> {
    const SCRATCH: usize = 16;
    // What BPF_LEN loads: the size of struct seccomp_data.
    const DATA_LEN: u32 = 64;
    let mut a: u32 = 0;
    let mut x: u32 = 0;
    let mut mem = [0u32; SCRATCH];
    let mut pc = 0usize;
    let mut executed = 0usize;

    loop {
        let insn = program.get(pc).ok_or(SimError::FellOffEnd)?;
        executed += 1;
        let (code, k) = (insn.code, insn.k);
        let unsupported = SimError::Unsupported { pc, code };
        let slot = || usize::try_from(k).ok().filter(|&s| s < SCRATCH).ok_or(SimError::BadScratch { pc });
        let operand = if code & op::SRC_X != 0 { x } else { k };
        let mut next = pc + 1;
        match code {
            op::LD_W_ABS => a = data.word(k).ok_or(SimError::BadLoad { pc, offset: k })?,
            op::LD_W_LEN => a = DATA_LEN,
            op::LDX_W_LEN => x = DATA_LEN,
            op::LD_IMM => a = k,
            op::LDX_IMM => x = k,
            op::LD_MEM => a = mem[slot()?],
            op::LDX_MEM => x = mem[slot()?],
            op::ST => mem[slot()?] = a,
            op::STX => mem[slot()?] = x,
            op::TAX => x = a,
            op::TXA => a = x,
            op::NEG => a = a.wrapping_neg(),
            op::JA => next = jump(pc, next, k as usize, program.len())?,
            op::RET_K => return Ok((k, executed)),
            op::RET_A => return Ok((a, executed)),
            _ if code & op::CLASS == op::ALU => {
                a = match code & op::OP {
                    op::ADD => a.wrapping_add(operand),
                    op::SUB => a.wrapping_sub(operand),
                    op::MUL => a.wrapping_mul(operand),
                    // The kernel ends the program with 0 on division by 0.
                    op::DIV if operand == 0 => return Ok((0, executed)),
                    op::DIV => a / operand,
                    op::OR => a | operand,
                    op::AND => a & operand,
                    op::LSH => a.wrapping_shl(operand),
                    op::RSH => a.wrapping_shr(operand),
                    op::XOR => a ^ operand,
                    _ => return Err(unsupported),
                };
            }
            _ if code & op::CLASS == op::JMP => {
                let taken = match code & op::OP {
                    op::JEQ => a == operand,
                    op::JGT => a > operand,
                    op::JGE => a >= operand,
                    op::JSET => a & operand != 0,
                    _ => return Err(unsupported),
                };
                let offset = if taken { insn.jt } else { insn.jf };
                next = jump(pc, next, usize::from(offset), program.len())?;
            }
            _ => return Err(unsupported),
        }
        pc = next;
    }
}

fn jump(pc: usize, next: usize, offset: usize, len: usize) -> Result<usize, SimError> {
    next.checked_add(offset).filter(|&target| target < len).ok_or(SimError::JumpOutOfRange { pc })
}
