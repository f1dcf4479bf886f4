//! Pure parsers for the cgroup file formats this layer reads (single values, flat-keyed files,
//! `cpu.max`, pid lists). They return a static reason; callers attach the cgroup and file.

type Parsed<T> = Result<T, &'static str>;

/// What a v1 memory or soft limit reads back as when unlimited (PAGE_COUNTER_MAX pages):
/// the kernel rounds "-1" to this, so anything at or above it means "no limit".
pub(crate) const V1_UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

pub(crate) fn u64_value(text: &str) -> Parsed<u64> {
    text.trim().parse().map_err(|_| "expected an unsigned integer")
}

/// v2 limit files: a number or `max`.
pub(crate) fn max_or_u64(text: &str) -> Parsed<Option<u64>> {
    match text.trim() {
        "max" => Ok(None),
        other => other.parse().map(Some).map_err(|_| "expected an unsigned integer or \"max\""),
    }
}

/// v1 limit files: a number where `-1` or the page-counter ceiling means unlimited.
pub(crate) fn v1_limit(text: &str) -> Parsed<Option<u64>> {
    let t = text.trim();
    if t == "-1" {
        return Ok(None);
    }
    let v: u64 = t.parse().map_err(|_| "expected an integer or -1")?;
    Ok((v < V1_UNLIMITED).then_some(v))
}

/// `cpu.max`: "$MAX $PERIOD" where $MAX may be `max`.
pub(crate) fn cpu_max(text: &str) -> Parsed<Option<(u64, u64)>> {
    let mut it = text.split_whitespace();
    let (Some(quota), Some(period), None) = (it.next(), it.next(), it.next()) else {
        return Err("expected \"$MAX $PERIOD\"");
    };
    let period: u64 = period.parse().map_err(|_| "period is not an integer")?;
    match quota {
        "max" => Ok(None),
        q => {
            let q = q.parse().map_err(|_| "quota is not an integer or \"max\"")?;
            Ok(Some((q, period)))
        }
    }
}

/// A key of a flat-keyed file ("key value" lines); a missing key is `None` because kernels
/// add keys over time and older ones lack some.
pub(crate) fn keyed(text: &str, key: &str) -> Parsed<Option<u64>> {
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            let value = it.next().ok_or("key without a value")?;
            return value.parse().map(Some).map_err(|_| "value is not an unsigned integer");
        }
    }
    Ok(None)
}

/// Like `keyed`, for keys every supported kernel has.
pub(crate) fn keyed_required(text: &str, key: &str) -> Parsed<u64> {
    keyed(text, key)?.ok_or("expected key is missing")
}

/// `cgroup.procs`: one pid per line.
pub(crate) fn pids(text: &str) -> Parsed<Vec<u32>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().map_err(|_| "expected one pid per line"))
        .collect()
}

/// Controller lists (`cgroup.controllers`, `cgroup.subtree_control`): space separated names.
pub(crate) fn names(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// The pid holding a `flock` on the inode `ino` of device `major:minor`, from
/// `/proc/locks` ("1: FLOCK  ADVISORY  WRITE 1234 00:26:7321 0 EOF"; device numbers in
/// hex). Lines of waiters ("1: -> FLOCK ...") are not holders.
pub fn flock_holder(locks: &str, major: u32, minor: u32, ino: u64) -> Option<u32> {
    let wanted = format!("{major:02x}:{minor:02x}:{ino}");
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, dev, ..] if *dev == wanted => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_flock_holder_of_an_inode() {
        let locks = "1: POSIX  ADVISORY  WRITE 99 00:26:7321 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:26:7321 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 5151 00:26:7321 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 77 00:2a:7321 0 EOF\n";
        assert_eq!(flock_holder(locks, 0, 0x26, 7321), Some(4242));
        assert_eq!(flock_holder(locks, 0, 42, 7321), Some(77), "minor numbers are hex");
        assert_eq!(flock_holder(locks, 0, 0x26, 7322), None);
        assert_eq!(flock_holder("", 0, 0x26, 7321), None);
    }

    #[test]
    fn single_values() {
        assert_eq!(u64_value("42\n"), Ok(42));
        assert!(u64_value("-1").is_err());
        assert_eq!(max_or_u64("max\n"), Ok(None));
        assert_eq!(max_or_u64("1048576\n"), Ok(Some(1_048_576)));
        assert!(max_or_u64("").is_err());
    }

    #[test]
    fn v1_limits() {
        assert_eq!(v1_limit("9223372036854771712\n"), Ok(None));
        assert_eq!(v1_limit("-1"), Ok(None));
        assert_eq!(v1_limit("33554432\n"), Ok(Some(33_554_432)));
        assert!(v1_limit("x").is_err());
    }

    #[test]
    fn cpu_max_forms() {
        assert_eq!(cpu_max("max 100000\n"), Ok(None));
        assert_eq!(cpu_max("50000 100000\n"), Ok(Some((50_000, 100_000))));
        assert!(cpu_max("50000").is_err());
        assert!(cpu_max("50000 100000 1").is_err());
        assert!(cpu_max("x 100000").is_err());
    }

    #[test]
    fn flat_keyed() {
        let events = "low 0\nhigh 3\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(events, "oom_kill"), Ok(Some(1)));
        assert_eq!(keyed(events, "oom"), Ok(Some(2)));
        assert_eq!(keyed(events, "absent"), Ok(None));
        assert_eq!(keyed_required(events, "max"), Ok(7));
        assert!(keyed_required(events, "absent").is_err());
        assert!(keyed("oom_kill\n", "oom_kill").is_err());
        assert!(keyed("oom_kill x\n", "oom_kill").is_err());
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n";
        assert_eq!(keyed(oom_control, "oom_kill"), Ok(Some(4)));
    }

    #[test]
    fn pid_lists() {
        assert_eq!(pids(""), Ok(vec![]));
        assert_eq!(pids("12\n345\n"), Ok(vec![12, 345]));
        assert!(pids("12\nx\n").is_err());
        assert_eq!(names("cpu memory  pids\n"), vec!["cpu", "memory", "pids"]);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,64}") {
            let _ = u64_value(&s);
            let _ = max_or_u64(&s);
            let _ = v1_limit(&s);
            let _ = cpu_max(&s);
            let _ = keyed(&s, "oom_kill");
            let _ = pids(&s);
        }

        #[test]
        fn keyed_finds_what_was_written(vals in proptest::collection::vec(any::<u64>(), 1..8)) {
            let text: String = vals.iter().enumerate().map(|(i, v)| format!("k{i} {v}\n")).collect();
            for (i, v) in vals.iter().enumerate() {
                prop_assert_eq!(keyed(&text, &format!("k{i}")), Ok(Some(*v)));
            }
        }

        #[test]
        fn cpu_max_round_trips(q in 1u64..u64::MAX, p in 1u64..u64::MAX) {
            prop_assert_eq!(cpu_max(&format!("{q} {p}\n")), Ok(Some((q, p))));
        }
    }
}
