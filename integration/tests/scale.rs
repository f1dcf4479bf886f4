//! Many instances in one daemon, in a test binary of its own (the figures are the
//! daemon's memory, which another test's plugins would not change, but its start-up time
//! they would): 200 echo instances, each in its cgroup under its tier, all start, and
//! each costs the daemon little memory. The 1,000-instance figures and the idle CPU are
//! the benchmark's (`bench --only scale`).

use std::time::Duration;

use plugin_integration::daemon::timeout_factor;
use plugin_integration::scale::{Layout, measure, per_instance, stop};

const INSTANCES: usize = 200;

/// What one more instance may add to the daemon's resident memory. Each added about
/// 335 KiB (release build, 100 instances) while every replica verified its own copy of the
/// binary and each pipe reader held 64 KiB; about 220 KiB since.
const MOST_PER_INSTANCE: f64 = 280.0 * 1024.0;

#[test]
fn two_hundred_instances_all_start_and_each_costs_the_daemon_little_memory() {
    let up = Duration::from_secs(60) * timeout_factor();
    let (settle, idle) = (Duration::from_secs(3), Duration::from_secs(2));
    let (one, daemon) = measure(1, Layout::Replicas, up, settle, idle).expect("one instance");
    stop(daemon);
    let (many, daemon) = measure(INSTANCES, Layout::Replicas, up, settle, idle).expect("all instances running");
    let (rss, _) = per_instance(&one, &many);
    // Stopped before judging: a failed assertion would drop it, and a dropped daemon is
    // killed before 200 instances have drained, leaving their cgroups behind.
    let tail = daemon.log_tail(10);
    stop(daemon);
    eprintln!("{INSTANCES} instances: ready in {:?}, {:.1} KiB each", many.ready, rss / 1024.0);
    assert!(
        rss <= MOST_PER_INSTANCE,
        "each instance costs the daemon {:.1} KiB (at most {:.0}): {} MiB with one instance, {} MiB with {INSTANCES}\nlog:\n{tail}",
        rss / 1024.0,
        MOST_PER_INSTANCE / 1024.0,
        one.rss >> 20,
        many.rss >> 20,
    );
}

#[test]
fn plugins_configured_from_one_binary_verify_it_and_hold_its_sealed_copy_once() {
    // Before, each plugin verified its own copy into a memfd: 1,000 plugins of one 28 MB
    // binary held 28 GB.
    const PLUGINS: usize = 5;
    let d = plugin_integration::Daemon::start(&plugin_integration::scale::config_for(PLUGINS, Layout::Named));
    for id in plugin_integration::scale::instance_ids(PLUGINS, Layout::Named) {
        d.wait_state(&id, "running", Duration::from_secs(30) * timeout_factor());
    }
    let images: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .filter_map(|f| std::fs::read_link(f.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .filter(|l| l.starts_with("/memfd:echo-"))
        .collect();
    assert_eq!(images.len(), 1, "the daemon holds {images:?}");
}
