//! Live sync against a loopback API server that speaks the real wire
//! format: lists with `metadata.resourceVersion` (items without kind, as
//! kube-apiserver sends them), chunked watch streams of
//! `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}`, resume
//! from a resourceVersion, an in-stream `410 Gone` for a compacted one,
//! dropped connections, 503s while "down", and the `spec.nodeName` field
//! selector on pods. Every RBAC change must show in the published snapshot
//! and be stored as one more snapshot.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokenwatch_core::rbac::{Attributes, Authorizer, UserInfo};
use tokenwatch_host::{
    kubesync::{self, RbacUpdate, SyncConfig, SyncHandles},
    snapshot_store,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::broadcast,
};

const RBAC: &str = "rbac.authorization.k8s.io/v1";

/// One collection the fake server serves.
struct Collection {
    api_version: &'static str,
    kind: &'static str,
    objects: BTreeMap<String, Value>,
    /// (resourceVersion, type, object) of every change.
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    /// Answer 503 to every request (the API server is "down" for it).
    down: bool,
}

#[derive(Default)]
struct State {
    rv: u64,
    collections: HashMap<&'static str, Collection>,
    /// (path, query) of every request, in order.
    requests: Vec<(String, String)>,
    gone_sent: usize,
}

#[derive(Clone, Debug)]
enum Cmd {
    Event(&'static str, Value),
    Bookmark(u64),
    Drop,
}

/// What a request gets.
enum Answer {
    /// A whole response (list, error).
    Raw(String),
    /// A watch: the live feed (`None` after a 410) and the events to send first.
    Watch(Option<broadcast::Receiver<(&'static str, Cmd)>>, Vec<Value>),
}

#[derive(Clone)]
struct FakeApi {
    state: Arc<Mutex<State>>,
    cmds: broadcast::Sender<(&'static str, Cmd)>,
}

const PATHS: [(&str, &str, &str); 5] = [
    ("/apis/rbac.authorization.k8s.io/v1/roles", RBAC, "Role"),
    (
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        RBAC,
        "ClusterRole",
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/rolebindings",
        RBAC,
        "RoleBinding",
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        RBAC,
        "ClusterRoleBinding",
    ),
    ("/api/v1/pods", "v1", "Pod"),
];

fn path_of(kind: &str) -> &'static str {
    PATHS.iter().find(|p| p.2 == kind).unwrap().0
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn key_of(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("")
    )
}

/// Whether a pod passes the request's field selector.
fn selected(obj: &Value, selector: Option<&str>) -> bool {
    match selector.and_then(|s| s.strip_prefix("spec.nodeName=")) {
        Some(node) => obj["spec"]["nodeName"].as_str() == Some(node),
        None => true,
    }
}

impl FakeApi {
    fn new() -> Self {
        let mut state = State {
            rv: 100,
            ..State::default()
        };
        for (path, api_version, kind) in PATHS {
            state.collections.insert(
                path,
                Collection {
                    api_version,
                    kind,
                    objects: BTreeMap::new(),
                    history: Vec::new(),
                    compacted: 0,
                    down: false,
                },
            );
        }
        let (cmds, _) = broadcast::channel(1024);
        Self {
            state: Arc::new(Mutex::new(state)),
            cmds,
        }
    }

    /// Adds or replaces an object, as a write through the API would.
    fn apply(&self, mut obj: Value) {
        let kind = obj["kind"].as_str().unwrap().to_owned();
        let path = path_of(&kind);
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj["metadata"]["uid"].as_str().is_none() {
            obj["metadata"]["uid"] = json!(format!("uid-{}", key_of(&obj)));
        }
        let c = state.collections.get_mut(path).unwrap();
        let key = key_of(&obj);
        let kind = if c.objects.insert(key, obj.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        c.history.push((rv, kind, obj.clone()));
        let _ = self.cmds.send((path, Cmd::Event(kind, obj)));
    }

    fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let path = path_of(kind);
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv;
        let c = state.collections.get_mut(path).unwrap();
        let mut obj = c.objects.remove(&format!("{namespace}/{name}")).unwrap();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        c.history.push((rv, "DELETED", obj.clone()));
        let _ = self.cmds.send((path, Cmd::Event("DELETED", obj)));
    }

    /// Bumps the global resourceVersion and sends a bookmark at it.
    fn bookmark(&self, kind: &str) -> u64 {
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv;
        let _ = self.cmds.send((path_of(kind), Cmd::Bookmark(rv)));
        rv
    }

    fn drop_watches(&self, kind: &str) {
        let _ = self.cmds.send((path_of(kind), Cmd::Drop));
    }

    fn set_down(&self, kind: &str, down: bool) {
        let mut state = self.state.lock().unwrap();
        state.collections.get_mut(path_of(kind)).unwrap().down = down;
    }

    /// Forgets history: watches from before now get 410 Gone.
    fn compact(&self, kind: &str) {
        let mut state = self.state.lock().unwrap();
        let rv = state.rv;
        state.collections.get_mut(path_of(kind)).unwrap().compacted = rv;
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }

    async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(self.clone().handle(stream));
        }
    }

    fn answer(&self, path: &str, query: &str, watch: bool, selector: Option<&str>) -> Answer {
        let mut state = self.state.lock().unwrap();
        state.requests.push((path.to_owned(), query.to_owned()));
        let rv_now = state.rv;
        let Some(c) = state.collections.get(path) else {
            return Answer::Raw(
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned(),
            );
        };
        if c.down {
            let body = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                "message":"the server is currently unable to handle the request","reason":"ServiceUnavailable","code":503})
            .to_string();
            return Answer::Raw(format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ));
        }
        if !watch {
            let items: Vec<Value> = c
                .objects
                .values()
                .filter(|o| selected(o, selector))
                .map(|o| {
                    // Items of a list carry no kind or apiVersion.
                    let mut o = o.clone();
                    let m = o.as_object_mut().unwrap();
                    m.remove("kind");
                    m.remove("apiVersion");
                    o
                })
                .collect();
            let body = json!({
                "kind": format!("{}List", c.kind),
                "apiVersion": c.api_version,
                "metadata": {"resourceVersion": rv_now.to_string()},
                "items": items,
            })
            .to_string();
            return Answer::Raw(format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ));
        }
        let from: u64 = query_param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if from < c.compacted {
            let gone = json!({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},
                "status":"Failure","message":format!("too old resource version: {from} ({})", c.compacted),
                "reason":"Expired","code":410}});
            state.gone_sent += 1;
            return Answer::Watch(None, vec![gone]);
        }
        let backlog = c
            .history
            .iter()
            .filter(|(rv, _, obj)| *rv > from && selected(obj, selector))
            .map(|(_, t, obj)| json!({"type": t, "object": obj}))
            .collect();
        Answer::Watch(Some(self.cmds.subscribe()), backlog)
    }

    async fn handle(self, mut stream: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 65_536 {
                return;
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let target = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let (path, query) = (path.to_owned(), query.to_owned());
        let watch = query_param(&query, "watch").as_deref() == Some("true");
        let selector = query_param(&query, "fieldSelector");

        // Answer under the lock; subscribe before unlocking so no event is missed.
        let answer = self.answer(&path, &query, watch, selector.as_deref());
        let (mut live, backlog) = match answer {
            Answer::Raw(reply) => {
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
                return;
            }
            Answer::Watch(live, backlog) => (live, backlog),
        };
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let send = |v: &Value| {
            let line = format!("{v}\n");
            format!("{:x}\r\n{line}\r\n", line.len())
        };
        for event in &backlog {
            if stream.write_all(send(event).as_bytes()).await.is_err() {
                return;
            }
        }
        let Some(rx) = live.as_mut() else {
            // 410: the stream ends cleanly after the error event.
            let _ = stream.write_all(b"0\r\n\r\n").await;
            let _ = stream.shutdown().await;
            return;
        };
        let (api_version, kind) = {
            let state = self.state.lock().unwrap();
            let c = &state.collections[path.as_str()];
            (c.api_version, c.kind)
        };
        // Live events, bounded in time like a real watch's timeoutSeconds.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let Ok(Ok((p, cmd))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                let _ = stream.write_all(b"0\r\n\r\n").await;
                return;
            };
            if p != path {
                continue;
            }
            let event = match cmd {
                Cmd::Event(t, obj) => {
                    if !selected(&obj, selector.as_deref()) {
                        continue;
                    }
                    json!({"type": t, "object": obj})
                }
                Cmd::Bookmark(rv) => json!({"type":"BOOKMARK","object":{
                    "kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": rv.to_string()}}}),
                // Abrupt: no terminating chunk, the socket just closes.
                Cmd::Drop => return,
            };
            if stream.write_all(send(&event).as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

fn cluster_role(name: &str, verbs: &[&str]) -> Value {
    json!({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": verbs}]})
}

fn role(ns: &str, name: &str, resource: &str, verbs: &[&str]) -> Value {
    json!({"apiVersion": RBAC, "kind": "Role", "metadata": {"name": name, "namespace": ns},
        "rules": [{"apiGroups": [""], "resources": [resource], "verbs": verbs}]})
}

fn binding(kind: &str, ns: Option<&str>, name: &str, role_kind: &str, role: &str) -> Value {
    let mut meta = json!({"name": name});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({"apiVersion": RBAC, "kind": kind, "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]})
}

fn pod(name: &str, node: &str, uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid,
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5d",
                "uid": "rs-1", "controller": true}]},
        "spec": {"nodeName": node, "serviceAccountName": "web", "containers": [{"name": "app", "image": "web"}]},
        "status": {"containerStatuses": [{"name": "app", "image": "web", "imageID": "", "ready": true,
            "restartCount": 0, "containerID": format!("containerd://{uid}-c")}]}})
}

fn allowed(update: &RbacUpdate, verb: &str, ns: &str, resource: &str) -> bool {
    let authz = Authorizer::new(Arc::clone(&update.snapshot));
    authz
        .decide(
            &Attributes::resource(verb, "", resource, ns, ""),
            &UserInfo::service_account("shop", "web"),
        )
        .allowed
}

const WAIT: Duration = Duration::from_secs(20);

/// Waits (bounded) until the published snapshot satisfies `want`.
async fn wait_rbac(
    handles: &mut SyncHandles,
    what: &str,
    want: impl Fn(&RbacUpdate) -> bool,
) -> RbacUpdate {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(update) = handles.rbac.borrow_and_update().clone()
            && want(&update)
        {
            return update;
        }
        match tokio::time::timeout_at(deadline, handles.rbac.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("timed out waiting for: {what}"),
        }
    }
}

async fn wait_pods(
    handles: &mut SyncHandles,
    what: &str,
    want: impl Fn(&HashMap<String, kubesync::PodInfo>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if want(&handles.pods.borrow_and_update()) {
            return;
        }
        match tokio::time::timeout_at(deadline, handles.pods.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("timed out waiting for: {what}"),
        }
    }
}

fn stored(db: &sled::Db) -> usize {
    snapshot_store::list(db).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_follows_every_change_through_relists_and_drops() {
    let api = FakeApi::new();
    api.apply(cluster_role("reader", &["get"]));
    api.apply(binding(
        "ClusterRoleBinding",
        None,
        "reader-web",
        "ClusterRole",
        "reader",
    ));
    api.apply(pod("web-7d9f8b6c5d-aaaaa", "node-a", "p1"));
    api.apply(pod("web-7d9f8b6c5d-bbbbb", "node-b", "p2"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api.clone().serve(listener));

    let dir = tempfile::tempdir().unwrap();
    let db = tokenwatch_host::store::open(dir.path()).unwrap();
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let mut handles = kubesync::start(
        &client,
        Some(db.clone()),
        SyncConfig {
            node_name: Some("node-a".into()),
            debounce: Duration::from_millis(100),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            source: format!("http://{addr}"),
        },
    );

    // Initial list.
    let first = wait_rbac(&mut handles, "initial snapshot", |u| {
        allowed(u, "get", "shop", "pods")
    })
    .await;
    assert!(!allowed(&first, "list", "shop", "pods"));
    assert!(first.label.starts_with("api@"), "{}", first.label);
    assert_eq!(stored(&db), 1);
    wait_pods(&mut handles, "node-a's pod", |p| p.contains_key("p1")).await;
    {
        let pods = handles.pods.borrow();
        assert!(
            !pods.contains_key("p2"),
            "a pod of another node was published"
        );
        let p1 = &pods["p1"];
        assert_eq!(p1.workload.as_deref(), Some("Deployment/web"));
        assert_eq!(p1.service_account.as_deref(), Some("web"));
        assert_eq!(p1.container_ids, vec!["p1-c".to_owned()]);
    }

    // ADDED (two objects, one snapshot each).
    api.apply(role("shop", "secrets", "secrets", &["get"]));
    wait_rbac(&mut handles, "role added", |u| u.objects.roles.len() == 1).await;
    assert_eq!(stored(&db), 2);
    api.apply(binding(
        "RoleBinding",
        Some("shop"),
        "secrets-web",
        "Role",
        "secrets",
    ));
    wait_rbac(&mut handles, "rolebinding added", |u| {
        allowed(u, "get", "shop", "secrets")
    })
    .await;
    assert_eq!(stored(&db), 3);

    // MODIFIED.
    api.apply(cluster_role("reader", &["get", "list"]));
    wait_rbac(&mut handles, "clusterrole modified", |u| {
        allowed(u, "list", "kube-system", "pods")
    })
    .await;
    assert_eq!(stored(&db), 4);

    // BOOKMARK then a dropped connection: the rewatch resumes from the bookmark.
    let mark = api.bookmark("ClusterRole");
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.drop_watches("ClusterRole");
    api.apply(cluster_role("reader", &["get", "list", "watch"]));
    wait_rbac(&mut handles, "change after a dropped connection", |u| {
        allowed(u, "watch", "shop", "pods")
    })
    .await;
    assert_eq!(stored(&db), 5);
    let resumed = api.requests().iter().any(|(path, query)| {
        path.ends_with("/clusterroles")
            && query.contains("watch=true")
            && query_param(query, "resourceVersion") == Some(mark.to_string())
    });
    assert!(
        resumed,
        "no watch resumed from bookmark {mark}: {:?}",
        api.requests()
    );

    // DELETED.
    api.delete("RoleBinding", "shop", "secrets-web");
    wait_rbac(&mut handles, "rolebinding deleted", |u| {
        !allowed(u, "get", "shop", "secrets")
    })
    .await;
    assert_eq!(stored(&db), 6);

    // 410 Gone: the server goes down for Roles, changes and compacts while
    // the agent cannot watch, then comes back. Only a relist shows the change.
    let lists_before = api
        .requests()
        .iter()
        .filter(|(p, q)| p.ends_with("/roles") && !q.contains("watch=true"))
        .count();
    api.set_down("Role", true);
    api.drop_watches("Role");
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.apply(role("shop", "secrets", "secrets", &["get", "list"]));
    api.compact("Role");
    api.set_down("Role", false);
    let relisted = wait_rbac(&mut handles, "change seen through a relist", |u| {
        u.objects
            .roles
            .first()
            .is_some_and(|r| r.rules[0].verbs.len() == 2)
    })
    .await;
    assert_eq!(relisted.objects.role_bindings.len(), 0);
    assert_eq!(stored(&db), 7);
    assert!(api.state.lock().unwrap().gone_sent >= 1, "no 410 was sent");
    let lists_after = api
        .requests()
        .iter()
        .filter(|(p, q)| p.ends_with("/roles") && !q.contains("watch=true"))
        .count();
    assert!(lists_after > lists_before, "410 did not force a relist");

    // Pods: added on this node, added elsewhere (never sent), deleted.
    api.apply(pod("web-7d9f8b6c5d-ccccc", "node-b", "p4"));
    api.apply(pod("web-7d9f8b6c5d-ddddd", "node-a", "p3"));
    wait_pods(&mut handles, "pod added", |p| p.contains_key("p3")).await;
    api.delete("Pod", "shop", "web-7d9f8b6c5d-aaaaa");
    wait_pods(&mut handles, "pod deleted", |p| !p.contains_key("p1")).await;
    assert!(!handles.pods.borrow().contains_key("p4"));
    let selectors_ok = api
        .requests()
        .iter()
        .filter(|(p, _)| p == "/api/v1/pods")
        .all(|(_, q)| query_param(q, "fieldSelector").as_deref() == Some("spec.nodeName=node-a"));
    assert!(
        selectors_ok,
        "a pod request without the node's field selector"
    );

    // The stored history is what replay uses: the snapshot as of "now" is the last one.
    let now = snapshot_store::load_at(&db, std::time::SystemTime::now(), dir.path()).unwrap();
    assert_eq!(now.objects, *relisted.objects);
    handles.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_lists_every_kind_once() {
    let api = FakeApi::new();
    api.apply(cluster_role("reader", &["get"]));
    api.apply(binding(
        "ClusterRoleBinding",
        None,
        "reader-web",
        "ClusterRole",
        "reader",
    ));
    api.apply(role("shop", "secrets", "secrets", &["get"]));
    api.apply(binding(
        "RoleBinding",
        Some("shop"),
        "secrets-web",
        "Role",
        "secrets",
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api.clone().serve(listener));
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let report = kubesync::pull(&client).await.unwrap();
    assert_eq!(report.objects.len(), 4);
    assert_eq!(
        report.objects.role_bindings[0].namespace.as_deref(),
        Some("shop")
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(requests.iter().all(|(_, q)| !q.contains("watch")));
}

#[tokio::test]
async fn client_needs_a_configuration() {
    let err = kubesync::client(None, false).await.err();
    assert!(matches!(err, Some(kubesync::KubeSyncError::FindConfig)));
    let err = kubesync::client(Some(std::path::Path::new("/nonexistent/kubeconfig")), false)
        .await
        .err();
    assert!(matches!(
        err,
        Some(kubesync::KubeSyncError::LoadKubeconfig { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_pull_command_stores_a_snapshot() {
    let api = FakeApi::new();
    api.apply(cluster_role("reader", &["get"]));
    api.apply(binding(
        "ClusterRoleBinding",
        None,
        "reader-web",
        "ClusterRole",
        "reader",
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api.clone().serve(listener));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: 'http://{addr}'}}\n\
             users:\n- name: me\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: me}}\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let (kc, dd) = (kubeconfig.clone(), data.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
            .args(["rbac", "pull", "-o", "json", "--kubeconfig"])
            .arg(&kc)
            .arg("--data-dir")
            .arg(&dd)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(meta["clusterRoles"], 1);
    assert_eq!(meta["clusterRoleBindings"], 1);
    let db = tokenwatch_host::store::open(&data).unwrap();
    assert_eq!(stored(&db), 1);
    // An unreachable server is an error with a message, not a panic.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {server: 'http://127.0.0.1:9'}\n\
         users:\n- name: me\n  user: {}\ncontexts:\n- name: fake\n  context: {cluster: fake, user: me}\n\
         current-context: fake\n",
    )
    .unwrap();
    drop(db);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
            .args(["rbac", "pull", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot list"), "{stderr}");
}
