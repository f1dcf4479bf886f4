//! Random calls on the syscalls whose rules have conditions: the ordering
//! and the model agree with the programs beyond the chosen cases too.

use proptest::prelude::*;

use super::super::AUDIT_ARCH_X86_64;
use super::super::sim::{self, SeccompData};
use super::tier;

const CONDITIONAL: [i64; 11] = [
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_pkey_mprotect,
    libc::SYS_execveat,
    libc::SYS_clone,
    libc::SYS_ioctl,
    libc::SYS_openat,
    libc::SYS_fcntl,
    libc::SYS_prlimit64,
    libc::SYS_socket,
    libc::SYS_prctl,
];

/// Arguments that are small, flag-like or arbitrary, since conditions
/// compare against small constants and masks.
fn arg() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..2048, (0u32..32).prop_map(|b| 1u64 << b), any::<u64>(), any::<u32>().prop_map(u64::from)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn ordering_and_model_hold_for_random_arguments(
        which in 0..CONDITIONAL.len(),
        args in prop::array::uniform6(arg()),
    ) {
        let nr = CONDITIONAL[which] as i32;
        let data = SeccompData::new(AUDIT_ARCH_X86_64, nr, args);
        let mut allowed = Vec::new();
        for name in ["L1", "L2", "L3"] {
            let t = tier(name);
            let compiled = sim::allows(t.program.instructions(), &data).expect("runs");
            prop_assert_eq!(compiled, t.policy.allows(nr, &args), "tier {} nr {}", name, nr);
            allowed.push(compiled);
        }
        prop_assert!(!allowed[1] || allowed[0], "L2 allows what L1 denies: nr {} {:x?}", nr, args);
        prop_assert!(!allowed[2] || allowed[1], "L3 allows what L2 denies: nr {} {:x?}", nr, args);
    }
}
