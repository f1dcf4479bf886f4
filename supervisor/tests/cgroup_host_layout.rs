//! Layout detection on the machine the tests run on, checked against the raw `/proc` files.

use plugin_supervisor::sandbox::cgroup::{
    Controller, Layout, LayoutKind, RealFs, Version, cgroup_mounts, parse_proc_cgroup,
};

#[test]
fn detected_layout_matches_proc() {
    let layout = Layout::detect(&RealFs, None).unwrap();
    let mounts = cgroup_mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap()).unwrap();
    let members = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap()).unwrap();

    let v2 = mounts.iter().find(|m| m.version == Version::V2);
    assert_eq!(layout.unified().map(|u| &u.mount_point), v2.map(|m| &m.mount_point));
    for c in Controller::QUOTA {
        let id = layout.source(c).unwrap_or_else(|| panic!("{c} available on the test hosts"));
        let h = layout.hierarchy(id).unwrap();
        let own = h.own_dir().unwrap();
        assert!(own.is_dir(), "{}", own.display());
        match h.version {
            Version::V1 => {
                let m = mounts.iter().find(|m| m.mount_point == h.mount_point).unwrap();
                assert!(m.options.iter().any(|o| o == c.name()), "{c} from {}", h.mount_point.display());
                let line = members.iter().find(|l| l.controllers.iter().any(|x| x == c.name())).unwrap();
                assert_eq!(h.own_cgroup, line.path);
            }
            Version::V2 => {
                let offered = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap();
                assert!(offered.split_whitespace().any(|x| x == c.name()), "{c} offered to {}", own.display());
            }
        }
    }
    let any_v1 = layout.hierarchies().any(|(_, h)| h.version == Version::V1);
    let expected = match (layout.unified().is_some(), any_v1) {
        (true, false) => LayoutKind::PureV2,
        (true, true) => LayoutKind::Hybrid,
        _ => LayoutKind::V1Only,
    };
    assert_eq!(layout.kind(), expected);
    assert!(layout.hierarchies().all(|(_, h)| !h.controllers.is_empty()), "only hierarchies we use");
}
