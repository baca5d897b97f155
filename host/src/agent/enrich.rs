//! Enrichment, the stage between the sensor and the correlator: a sensor
//! event gets the reader's pod (its cgroup, then what the API server and
//! the token volumes say of that pod), and a token file event the token's
//! identity (from the discovered volumes, else read through the reader's
//! view of the file) and the pod whose volume holds it. Needs no
//! privilege: its tests run on a fake kubelet tree and cgroup hierarchy.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use crate::{
    correlate::{Enriched, PodRef},
    identity::{Identity, IdentityCache},
    kubesync,
    node::{Attribution, CgroupResolver, FileId, PodMeta, WatchHandle},
    sensor::{SensorEvent, event::Detail},
};

/// Everything the event loop consults to enrich an event.
pub struct Enricher {
    /// Cgroup id -> pod.
    pub cgroups: CgroupResolver,
    /// Token identities by file.
    pub identities: Arc<IdentityCache>,
    /// The kubelet volume watcher; `None` on a machine without a kubelet.
    pub watch: Option<WatchHandle>,
    /// This node's pods as their token volumes describe them.
    pub pods: HashMap<String, PodMeta>,
    /// This node's pods as the API server describes them (live sync).
    pub api_pods: kubesync::PodMap,
    /// Identity per (dev, ino) for files found by path (not discovered volumes).
    pub by_file: HashMap<(u64, u64), Option<Arc<Identity>>>,
}

impl Enricher {
    /// A new enricher; `watch` is the kubelet volume watcher, if any.
    #[must_use]
    pub fn new(
        cgroups: CgroupResolver,
        identities: Arc<IdentityCache>,
        watch: Option<WatchHandle>,
    ) -> Self {
        Self {
            cgroups,
            identities,
            watch,
            pods: HashMap::new(),
            api_pods: Arc::new(HashMap::new()),
            by_file: HashMap::new(),
        }
    }

    /// Reads the pods the volume watcher knows again.
    pub fn refresh_pods(&mut self) {
        if let Some(watch) = &self.watch {
            self.pods = watch.pods().into_iter().collect();
        }
    }

    /// The pod of a cgroup, with what the API server and the token volumes say of it.
    #[must_use]
    pub fn pod(&self, cgroup_id: u64) -> Option<PodRef> {
        match self.cgroups.resolve(cgroup_id) {
            Attribution::Host => None,
            Attribution::Pod {
                pod_uid,
                container_id,
                runtime,
                ..
            } => {
                let meta = self.pods.get(&pod_uid);
                // The API server's view first (every pod, legacy tokens too), then the token's.
                let api = self.api_pods.get(&pod_uid);
                let image = api.zip(container_id.as_ref()).and_then(|(p, id)| {
                    // Container IDs from the cgroup and from the status agree
                    // in full; a shortened one matches by prefix.
                    p.container_images.get(id).cloned().or_else(|| {
                        p.container_images
                            .iter()
                            .find(|(full, _)| full.starts_with(id.as_str()))
                            .map(|(_, image)| image.clone())
                    })
                });
                Some(PodRef {
                    name: api
                        .map(|p| p.name.clone())
                        .or_else(|| meta.map(|m| m.name.clone())),
                    namespace: api
                        .map(|p| p.namespace.clone())
                        .or_else(|| meta.map(|m| m.namespace.clone())),
                    uid: pod_uid,
                    container_id,
                    runtime: runtime.map(|r| format!("{r:?}").to_lowercase()),
                    image,
                    workload: api.and_then(|p| p.workload.clone()),
                    service_account: api
                        .and_then(|p| p.service_account.clone())
                        .or_else(|| meta.map(|m| m.service_account.clone())),
                    labels: api.map(|p| p.labels.clone()).unwrap_or_default(),
                })
            }
        }
    }

    /// The identity of the token file behind a file event: from the
    /// discovered volumes, else by reading it through the process's view.
    fn identity(
        &mut self,
        event: &SensorEvent,
        dev: u64,
        ino: u64,
        fd: i32,
        path: Option<&str>,
    ) -> Option<Arc<Identity>> {
        if let Some(found) = self.identities.get(FileId { dev, ino }) {
            return Some(found);
        }
        if let Some(cached) = self.by_file.get(&(dev, ino)) {
            return cached.clone();
        }
        let tgid = event.process.tgid;
        let mut candidates = Vec::new();
        if event.kind == crate::sensor::event::EventKind::TokenAccess {
            // fanotify: the path is the file as the agent sees it.
            if let Some(p) = path {
                candidates.push(PathBuf::from(p));
            }
        } else {
            candidates.push(PathBuf::from(format!("/proc/{tgid}/fd/{fd}")));
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                candidates.push(PathBuf::from(format!("/proc/{tgid}/root{p}")));
            }
        }
        let mut found = None;
        for candidate in candidates {
            if let Ok((id, identity)) = self.identities.load(&candidate)
                && id.dev == dev
                && id.ino == ino
            {
                found = Some(identity);
                break;
            }
        }
        if found.is_some() || self.by_file.len() < 65_536 {
            self.by_file.insert((dev, ino), found.clone());
        }
        found
    }

    /// The event with its pod, the token's identity and the volume's pod.
    pub fn enrich(&mut self, event: SensorEvent) -> Enriched {
        let pod = self.pod(event.process.cgroup_id);
        let (identity, volume_pod_uid) = match &event.detail {
            Detail::File(f) => {
                let id = FileId {
                    dev: f.dev,
                    ino: f.ino,
                };
                let volume = self
                    .watch
                    .as_ref()
                    .and_then(|w| w.file(id))
                    .map(|t| t.pod_uid);
                let identity = if matches!(event.kind, crate::sensor::event::EventKind::TokenClose)
                {
                    None
                } else {
                    self.identity(&event, f.dev, f.ino, f.fd, f.path.as_deref())
                };
                (identity, volume)
            }
            _ => (None, None),
        };
        Enriched {
            event,
            pod,
            identity,
            volume_pod_uid,
        }
    }
}
