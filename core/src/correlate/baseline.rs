//! The learned baseline: which executables a workload's containers use to
//! read their own token.
//!
//! A workload is (namespace, owner, container image), the owner being the
//! controller (`Deployment/web`, from the API server) or else the pod name
//! without the suffix its controller generated (`web-7d9f8b6c5d-x2x9q` ->
//! `web`, `db-0` -> `db`), so every replica shares one baseline, while a
//! pod's sidecar and main container each have their own. The image is known
//! from the API server's container statuses; without live sync it is
//! empty and a pod's containers share one baseline. For a learning
//! period after a workload is first seen, every reader executable is
//! learned; after it, a reader that was not learned is unexpected. Some
//! executables are never learned (shells and file tools: what an intruder
//! uses after `kubectl exec`), and an allowlist is always expected.
//!
//! What was learned outlives the agent: [`Baseline::take_changed`] gives
//! the workloads that changed, with wall-clock times, for [`save`] to
//! store in sled (`tokenwatch_host::baseline_store`), and [`Baseline::restore`] brings them back
//! after a restart (a DaemonSet rollout, a crash), so a restart neither
//! forgets what was learned nor reopens a learning period that had ended.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::Duration,
};

use serde::{Deserialize, Serialize};

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
    /// Monotonic ns; negative for a workload first seen before this boot.
    first_seen_ns: i64,
    readers: HashSet<String>,
}

/// One workload's learned readers, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWorkload {
    /// Namespace.
    pub namespace: String,
    /// Owner (`Kind/name` from the API server, or the name guessed from a pod's).
    pub workload: String,
    /// The container's image, empty when unknown.
    #[serde(default)]
    pub image: String,
    /// When it was first seen, ns since the Unix epoch.
    pub first_seen_unix_nanos: u64,
    /// Executables learned, sorted.
    pub readers: Vec<String>,
}

/// Learned readers per workload.
#[derive(Debug, Default)]
pub struct Baseline {
    config: BaselineConfig,
    workloads: HashMap<Key, Workload>,
    /// Workloads added or changed since the last [`Baseline::take_changed`].
    changed: BTreeSet<Key>,
}

/// Namespace, owner, image (empty when unknown).
type Key = (String, String, String);

fn signed(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

impl Baseline {
    /// An empty baseline.
    #[must_use]
    pub fn new(config: BaselineConfig) -> Self {
        Self {
            config,
            workloads: HashMap::new(),
            changed: BTreeSet::new(),
        }
    }

    /// The workloads added or changed since the last call, as stored: the
    /// monotonic first-seen times turned into wall-clock ones with the two
    /// clocks read now (`mono_now_ns`, `unix_now_ns`).
    pub fn take_changed(&mut self, mono_now_ns: u64, unix_now_ns: u64) -> Vec<StoredWorkload> {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .filter_map(|key| {
                let w = self.workloads.get(&key)?;
                let age = i128::from(signed(mono_now_ns)) - i128::from(w.first_seen_ns);
                let first = (i128::from(unix_now_ns) - age.max(0)).max(0);
                let mut readers: Vec<String> = w.readers.iter().cloned().collect();
                readers.sort();
                Some(StoredWorkload {
                    namespace: key.0,
                    workload: key.1,
                    image: key.2,
                    first_seen_unix_nanos: u64::try_from(first).unwrap_or(0),
                    readers,
                })
            })
            .collect()
    }

    /// Adds stored workloads (what an earlier run learned), turning their
    /// wall-clock first-seen times into this boot's monotonic clock: a
    /// workload first seen a day ago is past its learning period even
    /// when the node booted a minute ago. Readers are merged with any
    /// already learned.
    pub fn restore(
        &mut self,
        stored: impl IntoIterator<Item = StoredWorkload>,
        mono_now_ns: u64,
        unix_now_ns: u64,
    ) {
        for s in stored {
            let age = unix_now_ns.saturating_sub(s.first_seen_unix_nanos);
            let first = signed(mono_now_ns).saturating_sub(signed(age));
            let w = self
                .workloads
                .entry((s.namespace, s.workload, s.image))
                .or_insert_with(|| Workload {
                    first_seen_ns: first,
                    readers: HashSet::new(),
                });
            w.first_seen_ns = w.first_seen_ns.min(first);
            w.readers.extend(s.readers);
        }
    }

    /// Judges (and, while learning, learns) a read of a pod's own token by
    /// `exe` in a container running `image` (when known), at monotonic
    /// time `now_ns`.
    pub fn observe(
        &mut self,
        namespace: &str,
        pod_name: &str,
        image: Option<&str>,
        exe: &str,
        now_ns: u64,
    ) -> Verdict {
        self.observe_workload(namespace, workload_of(pod_name), image, exe, now_ns)
    }

    /// [`Self::observe`] for a known workload (`Kind/name` from the API
    /// server) instead of one guessed from the pod name.
    pub fn observe_workload(
        &mut self,
        namespace: &str,
        workload: &str,
        image: Option<&str>,
        exe: &str,
        now_ns: u64,
    ) -> Verdict {
        if matches_exe(&self.config.allow, exe) {
            return Verdict::Expected;
        }
        let key = || -> Key {
            (
                namespace.to_owned(),
                workload.to_owned(),
                image.unwrap_or_default().to_owned(),
            )
        };
        let workload = match self.workloads.entry(key()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                self.changed.insert(v.key().clone());
                v.insert(Workload {
                    first_seen_ns: signed(now_ns),
                    readers: HashSet::new(),
                })
            }
        };
        if workload.readers.contains(exe) {
            return Verdict::Expected;
        }
        let learning = i128::from(signed(now_ns)) - i128::from(workload.first_seen_ns)
            < i128::try_from(self.config.learning_period.as_nanos()).unwrap_or(i128::MAX);
        if matches_exe(&self.config.never_learn, exe) {
            return Verdict::Unexpected {
                after_learning: !learning,
            };
        }
        if learning {
            workload.readers.insert(exe.to_owned());
            self.changed.insert(key());
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
    fn what_was_learned_survives_a_restart_and_a_reboot() {
        let s: u64 = 1_000_000_000;
        let config = BaselineConfig {
            learning_period: Duration::from_secs(600),
            ..BaselineConfig::default()
        };
        // First run: node up 1,000 s; the workload is learned for 100 s.
        let unix0 = 1_800_000_000 * s;
        let mut first = Baseline::new(config.clone());
        assert_eq!(
            first.observe_workload("shop", "Deployment/web", None, "/app/server", 1_000 * s),
            Verdict::Expected
        );
        assert_eq!(
            first.observe_workload("shop", "Deployment/web", None, "/app/server", 1_050 * s),
            Verdict::Expected
        );
        let changed = first.take_changed(1_100 * s, unix0 + 100 * s);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].first_seen_unix_nanos, unix0);
        assert_eq!(changed[0].readers, ["/app/server"]);
        assert!(first.take_changed(1_100 * s, unix0 + 100 * s).is_empty());

        // Stored (the host's `baseline_store` keeps them in sled), loaded
        // by the next run.
        let loaded: Vec<StoredWorkload> =
            serde_json::from_slice(&serde_json::to_vec(&changed).unwrap()).unwrap();
        assert_eq!(loaded, changed);

        // The next run: the node rebooted, up only 60 s, an hour later. The
        // learning period ended long ago, though this boot is younger.
        let mut second = Baseline::new(config.clone());
        second.restore(loaded.clone(), 60 * s, unix0 + 3_600 * s);
        assert_eq!(
            second.observe_workload("shop", "Deployment/web", None, "/app/server", 61 * s),
            Verdict::Expected
        );
        assert_eq!(
            second.observe_workload("shop", "Deployment/web", None, "/app/other", 61 * s),
            Verdict::Unexpected {
                after_learning: true
            }
        );
        // Restored, not changed: nothing to store again.
        assert!(second.take_changed(62 * s, unix0 + 3_602 * s).is_empty());

        // A restart within the learning period keeps learning until it ends.
        let mut third = Baseline::new(config);
        third.restore(loaded, 5 * s, unix0 + 200 * s);
        assert_eq!(
            third.observe_workload("shop", "Deployment/web", None, "/app/helper", 6 * s),
            Verdict::Expected
        );
        let again = third.take_changed(7 * s, unix0 + 202 * s);
        assert_eq!(again[0].readers, ["/app/helper", "/app/server"]);
        assert_eq!(again[0].first_seen_unix_nanos, unix0);
        assert_eq!(
            third.observe_workload("shop", "Deployment/web", None, "/app/late", 500 * s),
            Verdict::Unexpected {
                after_learning: true
            }
        );
    }

    #[test]
    fn each_image_of_a_workload_learns_its_own_readers() {
        let s: u64 = 1_000_000_000;
        let mut b = Baseline::new(BaselineConfig {
            learning_period: Duration::from_secs(60),
            ..BaselineConfig::default()
        });
        let (app, sidecar) = (Some("shop/web:2.1"), Some("envoyproxy/envoy:v1.31"));
        assert_eq!(
            b.observe_workload("shop", "Deployment/web", app, "/app/server", 0),
            Verdict::Expected
        );
        assert_eq!(
            b.observe_workload("shop", "Deployment/web", sidecar, "/usr/local/bin/envoy", 0),
            Verdict::Expected
        );
        // After learning, each container's program is known in its own image only.
        assert_eq!(
            b.observe_workload("shop", "Deployment/web", app, "/app/server", 120 * s),
            Verdict::Expected
        );
        assert_eq!(
            b.observe_workload(
                "shop",
                "Deployment/web",
                app,
                "/usr/local/bin/envoy",
                120 * s
            ),
            Verdict::Unexpected {
                after_learning: true
            }
        );
        // Where the image is unknown (no live sync), the workload's own baseline.
        assert_eq!(
            b.observe_workload("shop", "Deployment/web", None, "/app/server", 120 * s),
            Verdict::Expected
        );
        assert_eq!(b.len(), 3);
        let stored = b.take_changed(120 * s, 1_000 * s);
        let images: Vec<&str> = stored.iter().map(|w| w.image.as_str()).collect();
        assert_eq!(images, ["", "envoyproxy/envoy:v1.31", "shop/web:2.1"]);
    }

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
            b.observe_workload("shop", "Deployment/web", None, "/app/server", 0),
            Verdict::Expected
        );
        // A later pod of the same Deployment: learned, whatever its name.
        assert_eq!(
            b.observe_workload("shop", "Deployment/web", None, "/app/server", late),
            Verdict::Expected
        );
        assert_eq!(
            b.observe_workload("shop", "Deployment/web", None, "/bin/cat", late),
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
            b.observe("shop", "web-7d9f8b6c5d-x2x9q", None, "/app/server", 0),
            Verdict::Expected
        );
        // Another replica, after learning: the same exe is known.
        assert_eq!(
            b.observe("shop", "web-7d9f8b6c5d-b7kqz", None, "/app/server", 120 * s),
            Verdict::Expected
        );
        // A new exe after learning is unexpected.
        assert_eq!(
            b.observe("shop", "web-7d9f8b6c5d-b7kqz", None, "/app/helper", 120 * s),
            Verdict::Unexpected {
                after_learning: true
            }
        );
        // A shell is never learned, even while learning.
        assert_eq!(
            b.observe("shop", "api-0", None, "/bin/sh", 0),
            Verdict::Unexpected {
                after_learning: false
            }
        );
        assert_eq!(
            b.observe("shop", "api-0", None, "/usr/bin/cat", s),
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
        assert_eq!(
            b.observe("ns", "p-0", None, "/bin/cat", 0),
            Verdict::Expected
        );
    }
}
