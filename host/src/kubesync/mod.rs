//! Live sync with the API server (kube-rs): RBAC snapshots and this node's
//! pods, kept current by reflectors instead of files.
//!
//! - RBAC: one reflector per kind (Role, ClusterRole, RoleBinding,
//!   ClusterRoleBinding). When any of them changes, and the change has
//!   settled for [`SyncConfig::debounce`], the four stores become one
//!   [`RbacObjects`]; if it differs from the last one it is saved as a
//!   stored snapshot (the history `replay` and `can-i --at` use) and
//!   published as an [`RbacUpdate`].
//! - Pods: a reflector with the field selector `spec.nodeName=<node>`,
//!   published as a map pod UID -> [`PodInfo`] (name, namespace, owner,
//!   workload, labels, ServiceAccount, container IDs).
//! - Reconnects: the watchers relist after `410 Gone`, rewatch from the last
//!   resourceVersion after a dropped connection, and back off exponentially
//!   ([`SyncConfig::backoff_initial`] doubling up to
//!   [`SyncConfig::backoff_max`], each delay with a random jitter of up to
//!   its length) while the API server is unreachable. What
//!   was published stays valid meanwhile; the agent keeps its files as the
//!   fallback until the first snapshot arrives.
//! - [`pull`]: one paginated list of the four kinds (`tokenwatch rbac pull`).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::Pod,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    api::ListParams,
    runtime::{
        WatchStreamExt as _, reflector,
        reflector::Store,
        watcher::{self, Event},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use crate::rbac::{
    RbacObjects, Snapshot,
    import::{DEFAULT_NAMESPACE, ImportReport, Importer},
};
use crate::snapshot_store;

/// Errors of live sync and of `rbac pull`.
#[derive(Debug, thiserror::Error)]
pub enum KubeSyncError {
    /// The kubeconfig file could not be read or used.
    #[error("cannot load the kubeconfig {path}")]
    LoadKubeconfig {
        /// The file.
        path: PathBuf,
        /// kube's error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The in-cluster configuration (service env, token, CA) is missing.
    #[error("cannot load the in-cluster configuration")]
    LoadInCluster {
        /// kube's error.
        #[source]
        source: kube::config::InClusterError,
    },
    /// No configuration was asked for (neither a kubeconfig nor in-cluster).
    #[error("no API-server configuration: pass --kubeconfig or --in-cluster")]
    FindConfig,
    /// The HTTP client could not be built from the configuration.
    #[error("cannot build the API client")]
    BuildClient {
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// Listing one kind of RBAC object failed.
    #[error("cannot list {kind} from the API server")]
    ListObjects {
        /// The kind.
        kind: &'static str,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// An object from the API server could not be re-encoded for the importer.
    #[error("cannot encode {kind} {name}")]
    EncodeObject {
        /// The kind.
        kind: &'static str,
        /// `namespace/name` or `name`.
        name: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// The importer rejected an object from the API server.
    #[error("cannot import the RBAC objects from the API server")]
    ImportObjects {
        /// The importer's error.
        #[source]
        source: crate::rbac::import::ImportError,
    },
    /// The snapshot could not be stored.
    #[error("cannot store the RBAC snapshot")]
    SaveSnapshot {
        /// The store's error.
        #[source]
        source: snapshot_store::SnapshotStoreError,
    },
}

/// Builds a client from a kubeconfig file, or from the in-cluster
/// configuration (the pod's token, CA and `KUBERNETES_SERVICE_*`).
///
/// # Errors
/// The configuration is missing or unusable.
pub async fn client(kubeconfig: Option<&Path>, in_cluster: bool) -> Result<Client, KubeSyncError> {
    let config = match kubeconfig {
        Some(path) => {
            let load = |source| KubeSyncError::LoadKubeconfig {
                path: path.to_owned(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(load)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(load)?
        }
        None if in_cluster => {
            kube::Config::incluster().map_err(|source| KubeSyncError::LoadInCluster { source })?
        }
        None => return Err(KubeSyncError::FindConfig),
    };
    Client::try_from(config).map_err(|source| KubeSyncError::BuildClient { source })
}

/// A pod of this node as the API server describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The controller owner's kind (`ReplicaSet`, `StatefulSet`, ...).
    pub owner_kind: Option<String>,
    /// The controller owner's name.
    pub owner_name: Option<String>,
    /// `Kind/name` of the workload: the owner, with a Deployment's
    /// ReplicaSet resolved to the Deployment through `pod-template-hash`.
    pub workload: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.serviceAccountName`.
    pub service_account: Option<String>,
    /// Container IDs of every container status, without the `runtime://` prefix.
    pub container_ids: Vec<String>,
    /// The image of each of those containers (its status's `image`), by ID.
    pub container_images: BTreeMap<String, String>,
}

impl PodInfo {
    /// The facts the agent uses, taken from a Pod object.
    #[must_use]
    pub fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let labels = meta.labels.clone().unwrap_or_default();
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let workload = owner.map(|o| {
            let hash = labels.get("pod-template-hash");
            match (o.kind.as_str(), hash) {
                ("ReplicaSet", Some(hash)) => match o.name.strip_suffix(&format!("-{hash}")) {
                    Some(deployment) if !deployment.is_empty() => {
                        format!("Deployment/{deployment}")
                    }
                    _ => format!("ReplicaSet/{}", o.name),
                },
                (kind, _) => format!("{kind}/{}", o.name),
            }
        });
        let mut container_ids = Vec::new();
        let mut container_images = BTreeMap::new();
        if let Some(status) = &pod.status {
            for list in [
                &status.init_container_statuses,
                &status.container_statuses,
                &status.ephemeral_container_statuses,
            ] {
                for c in list.iter().flatten() {
                    if let Some(id) = c.container_id.as_deref().filter(|id| !id.is_empty()) {
                        let bare = id.split_once("://").map_or(id, |(_, rest)| rest);
                        container_ids.push(bare.to_owned());
                        if !c.image.is_empty() {
                            container_images.insert(bare.to_owned(), c.image.clone());
                        }
                    }
                }
            }
        }
        Self {
            uid: meta.uid.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            owner_kind: owner.map(|o| o.kind.clone()),
            owner_name: owner.map(|o| o.name.clone()),
            workload,
            labels,
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .filter(|s| !s.is_empty()),
            container_ids,
            container_images,
        }
    }
}

/// This node's pods by UID.
pub type PodMap = Arc<HashMap<String, PodInfo>>;

/// A new RBAC snapshot from the API server.
#[derive(Debug, Clone)]
pub struct RbacUpdate {
    /// The indexed snapshot.
    pub snapshot: Arc<Snapshot>,
    /// `api@<time>`: names the stored snapshot.
    pub label: String,
    /// The objects it was built from.
    pub objects: Arc<RbacObjects>,
}

/// Settings of [`start`].
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Watch the pods of this node (`spec.nodeName`); `None` watches no pods.
    pub node_name: Option<String>,
    /// How long RBAC changes must settle before a snapshot is taken.
    pub debounce: Duration,
    /// First delay after a failed list or watch.
    pub backoff_initial: Duration,
    /// Longest delay between retries.
    pub backoff_max: Duration,
    /// Source recorded with every stored snapshot (e.g. the server URL).
    pub source: String,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            node_name: None,
            // Several objects change together on a `kubectl apply`: one snapshot for all.
            debounce: Duration::from_secs(2),
            // client-go's reflector starts at 800 ms and stops at 30 s.
            backoff_initial: Duration::from_millis(800),
            backoff_max: Duration::from_secs(30),
            source: "api-server".to_owned(),
        }
    }
}

/// Exponential delays from `initial`, doubling up to `max`, each with a
/// random jitter of up to its own length (so that the agents of a whole
/// DaemonSet do not reconnect in step after an API-server outage); reset
/// after a success. kube-runtime's backoff over backon, as its
/// `DefaultBackoff` is, with our bounds.
fn backoff(initial: Duration, max: Duration) -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(initial)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// What [`start`] hands the agent.
#[derive(Debug)]
pub struct SyncHandles {
    /// The newest RBAC snapshot (`None` until the first full list).
    pub rbac: watch::Receiver<Option<RbacUpdate>>,
    /// This node's pods by UID.
    pub pods: watch::Receiver<PodMap>,
    tasks: Vec<JoinHandle<()>>,
    // Keep the channels open when no task owns the senders (disabled sync).
    _senders: Option<(watch::Sender<Option<RbacUpdate>>, watch::Sender<PodMap>)>,
}

impl SyncHandles {
    /// Handles whose channels never change: live sync is off.
    #[must_use]
    pub fn disabled() -> Self {
        let (rbac_tx, rbac) = watch::channel(None);
        let (pods_tx, pods) = watch::channel(Arc::new(HashMap::new()));
        Self {
            rbac,
            pods,
            tasks: Vec::new(),
            _senders: Some((rbac_tx, pods_tx)),
        }
    }

    /// Stops every sync task.
    pub fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for SyncHandles {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Runs a reflector for `K` into a store, waking `changed` on every change.
fn reflect<K>(
    api: Api<K>,
    wc: watcher::Config,
    config: &SyncConfig,
    changed: Arc<Notify>,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let backoff = backoff(config.backoff_initial, config.backoff_max);
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let task = tokio::spawn(async move {
        let stream = reflector(writer, watcher::watcher(api, wc)).backoff(backoff);
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => changed.notify_one(),
                Ok(Event::Init | Event::InitApply(_)) => {}
                Err(err) => {
                    tracing::warn!(kind = %kind, error = %crate::error::error_chain(&err), "API watch failed; retrying with backoff");
                }
            }
        }
    });
    (store, task)
}

/// Encodes API objects for the importer, so that API objects and files
/// become the same [`RbacObjects`].
fn add_objects<K: Serialize + Resource<DynamicType = ()> + k8s_openapi::Resource>(
    importer: &mut Importer,
    objects: impl IntoIterator<Item = Arc<K>>,
) -> Result<(), KubeSyncError> {
    let kind = <K as k8s_openapi::Resource>::KIND;
    let mut sorted: Vec<Arc<K>> = objects.into_iter().collect();
    sorted.sort_by_key(|o| (o.namespace(), o.name_any()));
    for object in sorted {
        let name = match object.namespace() {
            Some(ns) => format!("{ns}/{}", object.name_any()),
            None => object.name_any(),
        };
        let text =
            serde_json::to_string(&*object).map_err(|source| KubeSyncError::EncodeObject {
                kind,
                name: name.clone(),
                source,
            })?;
        importer
            .add_text(&format!("api:{kind}/{name}"), &text)
            .map_err(|source| KubeSyncError::ImportObjects { source })?;
    }
    Ok(())
}

/// The four kinds as one import.
fn import_objects(
    roles: Vec<Arc<Role>>,
    cluster_roles: Vec<Arc<ClusterRole>>,
    role_bindings: Vec<Arc<RoleBinding>>,
    cluster_role_bindings: Vec<Arc<ClusterRoleBinding>>,
) -> Result<ImportReport, KubeSyncError> {
    let mut importer = Importer::new(DEFAULT_NAMESPACE);
    add_objects(&mut importer, roles)?;
    add_objects(&mut importer, cluster_roles)?;
    add_objects(&mut importer, role_bindings)?;
    add_objects(&mut importer, cluster_role_bindings)?;
    Ok(importer.finish())
}

/// Saves (when a store is given) and returns the update for `report`.
fn save_update(
    db: Option<&sled::Db>,
    source: &str,
    report: &ImportReport,
) -> Result<RbacUpdate, KubeSyncError> {
    let now = SystemTime::now();
    let label = match db {
        Some(db) => {
            let meta = snapshot_store::save(db, now, vec![source.to_owned()], report)
                .map_err(|source| KubeSyncError::SaveSnapshot { source })?;
            format!("api@{}", meta.imported_at)
        }
        None => format!("api@{}", snapshot_store::format_time(now)),
    };
    Ok(RbacUpdate {
        snapshot: Arc::new(Snapshot::build(report.objects.clone())),
        label,
        objects: Arc::new(report.objects.clone()),
    })
}

/// Starts live sync: RBAC reflectors (snapshots saved into `db` when given)
/// and, with a node name, the pod reflector. Call inside a tokio runtime;
/// the tasks run until the handles are dropped or aborted.
#[must_use]
pub fn start(client: &Client, db: Option<sled::Db>, config: SyncConfig) -> SyncHandles {
    let (rbac_tx, rbac) = watch::channel(None);
    let (pods_tx, pods) = watch::channel(Arc::new(HashMap::new()));
    let mut tasks = Vec::new();

    let changed = Arc::new(Notify::new());
    let wc = watcher::Config::default();
    let (roles, t) = reflect(
        Api::<Role>::all(client.clone()),
        wc.clone(),
        &config,
        Arc::clone(&changed),
    );
    tasks.push(t);
    let (cluster_roles, t) = reflect(
        Api::<ClusterRole>::all(client.clone()),
        wc.clone(),
        &config,
        Arc::clone(&changed),
    );
    tasks.push(t);
    let (role_bindings, t) = reflect(
        Api::<RoleBinding>::all(client.clone()),
        wc.clone(),
        &config,
        Arc::clone(&changed),
    );
    tasks.push(t);
    let (cluster_role_bindings, t) = reflect(
        Api::<ClusterRoleBinding>::all(client.clone()),
        wc,
        &config,
        Arc::clone(&changed),
    );
    tasks.push(t);

    let debounce = config.debounce;
    let source = config.source.clone();
    tasks.push(tokio::spawn(async move {
        // The first snapshot needs every kind listed once.
        for ready in [
            roles.wait_until_ready().await,
            cluster_roles.wait_until_ready().await,
            role_bindings.wait_until_ready().await,
            cluster_role_bindings.wait_until_ready().await,
        ] {
            if ready.is_err() {
                return;
            }
        }
        let mut last: Option<RbacObjects> = None;
        loop {
            // Let a burst of changes settle into one snapshot.
            tokio::time::sleep(debounce).await;
            let report = match import_objects(
                roles.state(),
                cluster_roles.state(),
                role_bindings.state(),
                cluster_role_bindings.state(),
            ) {
                Ok(report) => report,
                Err(err) => {
                    tracing::error!(error = %crate::error::error_chain(&err), "RBAC objects from the API server do not import; keeping the previous snapshot");
                    changed.notified().await;
                    continue;
                }
            };
            if last.as_ref() != Some(&report.objects) {
                let db = db.clone();
                let src = source.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    save_update(db.as_ref(), &src, &report).map(|u| (u, report.objects))
                })
                .await;
                match saved {
                    Ok(Ok((update, objects))) => {
                        tracing::info!(label = %update.label, objects = objects.len(), "new RBAC snapshot from the API server");
                        last = Some(objects);
                        if rbac_tx.send(Some(update)).is_err() {
                            return;
                        }
                    }
                    Ok(Err(err)) => {
                        tracing::error!(error = %crate::error::error_chain(&err), "storing the RBAC snapshot failed");
                    }
                    Err(err) => tracing::error!(error = %err, "RBAC snapshot task failed"),
                }
            }
            changed.notified().await;
        }
    }));

    if let Some(node) = &config.node_name {
        let pod_changed = Arc::new(Notify::new());
        let wc = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let (store, t) = reflect(
            Api::<Pod>::all(client.clone()),
            wc,
            &config,
            Arc::clone(&pod_changed),
        );
        tasks.push(t);
        tasks.push(tokio::spawn(async move {
            if store.wait_until_ready().await.is_err() {
                return;
            }
            loop {
                let map: HashMap<String, PodInfo> = store
                    .state()
                    .iter()
                    .map(|pod| PodInfo::from_pod(pod))
                    .filter(|p| !p.uid.is_empty())
                    .map(|p| (p.uid.clone(), p))
                    .collect();
                if pods_tx.send(Arc::new(map)).is_err() {
                    return;
                }
                pod_changed.notified().await;
            }
        }));
    }

    SyncHandles {
        rbac,
        pods,
        tasks,
        _senders: None,
    }
}

/// Lists every page of one kind.
async fn list_all<K>(api: Api<K>) -> Result<Vec<Arc<K>>, KubeSyncError>
where
    K: Resource<DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|source| KubeSyncError::ListObjects {
                kind: <K as k8s_openapi::Resource>::KIND,
                source,
            })?;
        out.extend(page.items.into_iter().map(Arc::new));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// One list of the four RBAC kinds, as an import report.
///
/// # Errors
/// A list fails, or an object does not import.
pub async fn pull(client: &Client) -> Result<ImportReport, KubeSyncError> {
    let (roles, cluster_roles, role_bindings, cluster_role_bindings) = futures::try_join!(
        list_all(Api::<Role>::all(client.clone())),
        list_all(Api::<ClusterRole>::all(client.clone())),
        list_all(Api::<RoleBinding>::all(client.clone())),
        list_all(Api::<ClusterRoleBinding>::all(client.clone())),
    )?;
    import_objects(roles, cluster_roles, role_bindings, cluster_role_bindings)
}

/// Saves a pulled report as a snapshot taken now.
///
/// # Errors
/// The store fails.
pub fn save_pulled(
    db: &sled::Db,
    source: &str,
    report: &ImportReport,
) -> Result<snapshot_store::SnapshotMeta, KubeSyncError> {
    snapshot_store::save(db, SystemTime::now(), vec![source.to_owned()], report)
        .map_err(|source| KubeSyncError::SaveSnapshot { source })
}

#[cfg(test)]
mod backoff_tests {
    use kube::runtime::utils::Backoff as _;

    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_ceiling_and_resets() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = backoff(initial, max);
        let delays: Vec<Duration> = b.by_ref().take(12).collect();
        assert_eq!(delays.len(), 12, "the backoff never gives up");
        for (i, d) in delays.iter().enumerate() {
            let base = (initial * 2u32.pow(u32::try_from(i).unwrap())).min(max);
            assert!(
                *d >= base && *d <= base * 2,
                "delay {i}: {d:?} against {base:?}"
            );
        }
        b.reset();
        let first = b.next().unwrap();
        assert!(
            first >= initial && first <= initial * 2,
            "{first:?} after reset"
        );
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn pod(owner: Option<(&str, &str)>, hash: Option<&str>) -> Pod {
        let mut labels = BTreeMap::new();
        labels.insert("app".to_owned(), "web".to_owned());
        if let Some(h) = hash {
            labels.insert("pod-template-hash".to_owned(), h.to_owned());
        }
        Pod {
            metadata: ObjectMeta {
                name: Some("web-7d9f8b6c5d-x2x9q".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                labels: Some(labels),
                owner_references: owner.map(|(kind, name)| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: kind.into(),
                        name: name.into(),
                        uid: "o-1".into(),
                        controller: Some(true),
                        block_owner_deletion: None,
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                service_account_name: Some("web".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    container_id: Some("containerd://abc123".into()),
                    image: "registry.example/web:1.4".into(),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn pod_info_resolves_deployments() {
        let info = PodInfo::from_pod(&pod(
            Some(("ReplicaSet", "web-7d9f8b6c5d")),
            Some("7d9f8b6c5d"),
        ));
        assert_eq!(info.workload.as_deref(), Some("Deployment/web"));
        assert_eq!(info.owner_kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(info.service_account.as_deref(), Some("web"));
        assert_eq!(info.container_ids, vec!["abc123".to_owned()]);
        assert_eq!(
            info.container_images.get("abc123").map(String::as_str),
            Some("registry.example/web:1.4")
        );
        assert_eq!(info.labels.get("app").map(String::as_str), Some("web"));
        let bare_rs = PodInfo::from_pod(&pod(Some(("ReplicaSet", "web-rs")), None));
        assert_eq!(bare_rs.workload.as_deref(), Some("ReplicaSet/web-rs"));
        let sts = PodInfo::from_pod(&pod(Some(("StatefulSet", "db")), None));
        assert_eq!(sts.workload.as_deref(), Some("StatefulSet/db"));
        let none = PodInfo::from_pod(&pod(None, None));
        assert_eq!(none.workload, None);
    }

    #[test]
    fn api_objects_import_like_files() {
        let role: Role = serde_json::from_str(
            r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role",
                "metadata":{"name":"r","namespace":"ns","resourceVersion":"5","managedFields":[]},
                "rules":[{"apiGroups":[""],"resources":["pods"],"verbs":["get"]}]}"#,
        )
        .unwrap();
        let report = import_objects(vec![Arc::new(role)], vec![], vec![], vec![]).unwrap();
        assert_eq!(report.objects.roles.len(), 1);
        assert_eq!(report.objects.roles[0].name, "r");
        assert_eq!(
            report.objects.roles[0].rules[0].verbs,
            vec!["get".to_owned()]
        );
    }
}
