//! The Linux capabilities the agent needs (docs/capabilities.md), checked
//! at start against the process's effective set, so that a DaemonSet with
//! one missing says so in one line instead of failing somewhere later:
//! without a *required* one the sensor cannot load and `/readyz` stays 503;
//! without a *degrading* one the agent runs, ready, with less attribution,
//! and `tokenwatch_capability_missing{capability=...}` says which.

/// One capability the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// `CAP_...`, as `capabilities(7)` names it.
    pub name: &'static str,
    /// Its bit in the capability sets.
    pub bit: u32,
    /// Whether the sensor cannot work without it.
    pub required: bool,
    /// What does not work without it (one line).
    pub without: &'static str,
}

/// Every capability the DaemonSet grants, in docs/capabilities.md's order.
pub const NEEDS: [Need; 4] = [
    Need {
        name: "CAP_SYS_ADMIN",
        bit: 21,
        required: true,
        without: "the sensor cannot create its fanotify group or mark the token volumes, nor load its eBPF programs",
    },
    Need {
        name: "CAP_DAC_READ_SEARCH",
        bit: 2,
        required: false,
        without: "token files readable only by their pod's runAsUser cannot be decoded: their readers are recorded without an identity",
    },
    Need {
        name: "CAP_SYS_PTRACE",
        bit: 19,
        required: false,
        without: "readers in other containers are recorded without their executable or mount namespace",
    },
    Need {
        name: "CAP_SYS_RESOURCE",
        bit: 24,
        required: false,
        without: "on a kernel before 5.11 (Amazon Linux 2's 5.10), which counts eBPF maps against RLIMIT_MEMLOCK, the sensor cannot raise that limit and does not load (5.11 and later charge the maps to the cgroup and lose nothing)",
    },
];

/// The effective capability set from a `/proc/<pid>/status` text, `None`
/// when it has no readable `CapEff:` line.
#[must_use]
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// This process's effective set (`None` when `/proc` cannot say).
#[must_use]
pub fn effective() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(parse_cap_eff)
}

/// The needs `effective` lacks.
#[must_use]
pub fn missing(effective: u64) -> Vec<Need> {
    NEEDS
        .iter()
        .filter(|need| effective & (1u64 << need.bit) == 0)
        .copied()
        .collect()
}

/// A bit set of [`NEEDS`] indexes, for the metrics.
#[must_use]
pub fn mask(needs: &[Need]) -> u64 {
    NEEDS
        .iter()
        .enumerate()
        .filter(|(_, n)| needs.contains(n))
        .fold(0, |acc, (i, _)| acc | (1 << i))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "Name:\ttokenwatch\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";

    #[test]
    fn full_set_misses_nothing() {
        assert_eq!(missing(parse_cap_eff(FULL).unwrap()), Vec::new());
    }

    #[test]
    fn the_daemonset_set_misses_nothing() {
        let set = (1u64 << 21) | (1 << 2) | (1 << 19) | (1 << 24);
        assert!(missing(set).is_empty());
    }

    #[test]
    fn each_one_dropped_is_named() {
        let set = (1u64 << 21) | (1 << 2) | (1 << 19) | (1 << 24);
        for need in NEEDS {
            let without = set & !(1u64 << need.bit);
            assert_eq!(missing(without), vec![need], "{}", need.name);
        }
        assert_eq!(mask(&missing(set & !(1 << 19))), 0b100);
    }

    #[test]
    fn bpf_and_perfmon_do_not_stand_for_sys_admin() {
        let set = (1u64 << 39) | (1 << 38) | (1 << 2) | (1 << 19) | (1 << 24);
        assert_eq!(missing(set), vec![NEEDS[0]]);
    }

    #[test]
    fn unreadable_status_is_none() {
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tä\n"), None);
    }
}
