//! The learned baseline: which executables a workload's containers use to
//! read their own token.
//!
//! A workload is (namespace, owner), the owner being the pod name without
//! the suffix its controller generated (`web-7d9f8b6c5d-x2x9q` -> `web`,
//! `db-0` -> `db`), so every replica shares one baseline. For a learning
//! period after a workload is first seen, every reader executable is
//! learned; after it, a reader that was not learned is unexpected. Some
//! executables are never learned (shells and file tools: what an intruder
//! uses after `kubectl exec`), and an allowlist is always expected.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

/// What the baseline says about one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowlisted, learned, or being learned now.
    Expected,
    /// Not part of what the workload was seen to do.
    Unexpected {
        /// The workload's learning period had ended.
        after_learning: bool,
    },
}

/// Baseline settings.
#[derive(Debug, Clone)]
pub struct BaselineConfig {
    /// How long after a workload is first seen its readers are learned.
    pub learning_period: Duration,
    /// Executables (full path or file name) always expected.
    pub allow: Vec<String>,
    /// Executables (full path or file name) never learned.
    pub never_learn: Vec<String>,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            // Long enough for client libraries to re-read their token a few
            // times (client-go re-reads every minute).
            learning_period: Duration::from_secs(600),
            allow: Vec::new(),
            never_learn: [
                "sh", "bash", "dash", "ash", "zsh", "ksh", "busybox", "cat", "head", "tail",
                "less", "more", "cp", "dd", "base64", "xxd", "od", "hexdump", "strings", "grep",
                "awk", "sed", "curl", "wget", "nc", "ncat", "socat", "kubectl",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

/// The owner name a controller-generated pod name comes from.
#[must_use]
pub fn workload_of(pod_name: &str) -> &str {
    let parts: Vec<&str> = pod_name.rsplitn(3, '-').collect();
    // Controllers draw generated names from Kubernetes' "safe" alphabet
    // (no vowels, no 0, 1 or 3), so `node1` is a name, `x2x9q` a suffix.
    let generated = |s: &str| {
        s.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
    };
    let is_suffix = |s: &str| s.len() == 5 && generated(s);
    let is_hash = |s: &str| (6..=10).contains(&s.len()) && generated(s);
    match parts.as_slice() {
        // Deployment: <name>-<replicaset hash>-<5 chars>
        [last, hash, name] if is_suffix(last) && is_hash(hash) && !name.is_empty() => {
            &pod_name[..name.len()]
        }
        // StatefulSet: <name>-<ordinal>; DaemonSet / Job: <name>-<5 chars>
        [last, ..] if last.bytes().all(|b| b.is_ascii_digit()) || is_suffix(last) => {
            let cut = pod_name.len() - last.len() - 1;
            if cut == 0 { pod_name } else { &pod_name[..cut] }
        }
        _ => pod_name,
    }
}

fn matches_exe(list: &[String], exe: &str) -> bool {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    list.iter().any(|entry| entry == exe || entry == name)
}

#[derive(Debug, Default)]
struct Workload {
    first_seen_ns: u64,
    readers: HashSet<String>,
}

/// Learned readers per workload.
#[derive(Debug, Default)]
pub struct Baseline {
    config: BaselineConfig,
    workloads: HashMap<(String, String), Workload>,
}

impl Baseline {
    /// An empty baseline.
    #[must_use]
    pub fn new(config: BaselineConfig) -> Self {
        Self {
            config,
            workloads: HashMap::new(),
        }
    }

    /// Judges (and, while learning, learns) a read of a pod's own token by
    /// `exe`, at monotonic time `now_ns`.
    pub fn observe(&mut self, namespace: &str, pod_name: &str, exe: &str, now_ns: u64) -> Verdict {
        self.observe_workload(namespace, workload_of(pod_name), exe, now_ns)
    }

    /// [`Self::observe`] for a known workload (`Kind/name` from the API
    /// server) instead of one guessed from the pod name.
    pub fn observe_workload(
        &mut self,
        namespace: &str,
        workload: &str,
        exe: &str,
        now_ns: u64,
    ) -> Verdict {
        if matches_exe(&self.config.allow, exe) {
            return Verdict::Expected;
        }
        let key = (namespace.to_owned(), workload.to_owned());
        let workload = self.workloads.entry(key).or_insert_with(|| Workload {
            first_seen_ns: now_ns,
            readers: HashSet::new(),
        });
        if workload.readers.contains(exe) {
            return Verdict::Expected;
        }
        let learning = now_ns.saturating_sub(workload.first_seen_ns)
            < self.config.learning_period.as_nanos() as u64;
        if matches_exe(&self.config.never_learn, exe) {
            return Verdict::Unexpected {
                after_learning: !learning,
            };
        }
        if learning {
            workload.readers.insert(exe.to_owned());
            Verdict::Expected
        } else {
            Verdict::Unexpected {
                after_learning: true,
            }
        }
    }

    /// Workloads known.
    #[must_use]
    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    /// Whether no workload is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names() {
        assert_eq!(workload_of("web-7d9f8b6c5d-x2x9q"), "web");
        assert_eq!(workload_of("my-app-7d9f8b6c5d-x2x9q"), "my-app");
        assert_eq!(workload_of("db-0"), "db");
        assert_eq!(workload_of("db-12"), "db");
        assert_eq!(workload_of("fluentd-4xk2p"), "fluentd");
        assert_eq!(workload_of("standalone"), "standalone");
        assert_eq!(workload_of("kube-apiserver-node1"), "kube-apiserver-node1");
    }

    #[test]
    fn workload_keys_share_what_was_learned() {
        let mut b = Baseline::new(BaselineConfig {
            learning_period: std::time::Duration::from_secs(1),
            ..BaselineConfig::default()
        });
        let late = 2_000_000_000;
        assert_eq!(
            b.observe_workload("shop", "Deployment/web", "/app/server", 0),
            Verdict::Expected
        );
        // A later pod of the same Deployment: learned, whatever its name.
        assert_eq!(
            b.observe_workload("shop", "Deployment/web", "/app/server", late),
            Verdict::Expected
        );
        assert_eq!(
            b.observe_workload("shop", "Deployment/web", "/bin/cat", late),
            Verdict::Unexpected {
                after_learning: true
            }
        );
    }

    #[test]
    fn learns_then_flags() {
        let mut b = Baseline::new(BaselineConfig {
            learning_period: Duration::from_secs(60),
            ..BaselineConfig::default()
        });
        let s = 1_000_000_000;
        assert_eq!(
            b.observe("shop", "web-7d9f8b6c5d-x2x9q", "/app/server", 0),
            Verdict::Expected
        );
        // Another replica, after learning: the same exe is known.
        assert_eq!(
            b.observe("shop", "web-7d9f8b6c5d-b7kqz", "/app/server", 120 * s),
            Verdict::Expected
        );
        // A new exe after learning is unexpected.
        assert_eq!(
            b.observe("shop", "web-7d9f8b6c5d-b7kqz", "/app/helper", 120 * s),
            Verdict::Unexpected {
                after_learning: true
            }
        );
        // A shell is never learned, even while learning.
        assert_eq!(
            b.observe("shop", "api-0", "/bin/sh", 0),
            Verdict::Unexpected {
                after_learning: false
            }
        );
        assert_eq!(
            b.observe("shop", "api-0", "/usr/bin/cat", s),
            Verdict::Unexpected {
                after_learning: false
            }
        );
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn allowlist_wins() {
        let mut b = Baseline::new(BaselineConfig {
            allow: vec!["cat".into()],
            ..BaselineConfig::default()
        });
        assert_eq!(b.observe("ns", "p-0", "/bin/cat", 0), Verdict::Expected);
    }
}
