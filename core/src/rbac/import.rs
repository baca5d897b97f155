//! Reads Role, ClusterRole, RoleBinding and ClusterRoleBinding objects from
//! YAML (multi-document) or JSON, as files, directories or text.
//!
//! Accepted shapes: single objects, `kind: List` (what `kubectl get ... -o
//! yaml` prints), typed lists such as `RoleList` whose items carry no `kind`
//! (what the API server returns), a top-level JSON array, and concatenated
//! JSON values. Objects of any other kind are skipped and counted by kind.
//! Namespaced objects without `metadata.namespace` get the import's default
//! namespace, as `kubectl apply` without `-n` would.
//!
//! Import is all or nothing: the first malformed field stops it with an
//! error naming the file, the 1-based document and the field path, and no
//! object is returned. Two objects with the same kind, namespace and name
//! are an error unless they are identical (then one is kept).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::{Map, Value};

use super::model::{
    AggregationRule, Binding, KIND_CLUSTER_ROLE, KIND_CLUSTER_ROLE_BINDING, KIND_ROLE,
    KIND_ROLE_BINDING, LabelSelector, LabelSelectorRequirement, PolicyRule, RBAC_GROUP,
    RbacObjects, Role, RoleRef, Subject,
};

/// The namespace given to namespaced objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Where an object came from: file, 1-based document, and path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File path, or `<stdin>` / a caller-chosen label.
    pub file: String,
    /// 1-based document number within the file.
    pub document: usize,
    /// Path to the object inside the document (`items[3]`), empty for the
    /// document itself.
    pub path: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.file, self.document)?;
        if !self.path.is_empty() {
            write!(f, ", {}", self.path)?;
        }
        Ok(())
    }
}

/// Errors of the importer.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    ReadPath {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A YAML document is not valid YAML.
    #[error("{file}, document {document}: invalid YAML")]
    ParseYaml {
        /// The file.
        file: String,
        /// 1-based document number.
        document: usize,
        /// The parser's error.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A JSON value is not valid JSON.
    #[error("{file}, document {document}: invalid JSON")]
    ParseJson {
        /// The file.
        file: String,
        /// 1-based document number.
        document: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A field is missing or has the wrong shape.
    #[error("{location}: field `{field}`: {problem}")]
    InvalidField {
        /// Where the object is.
        location: Box<Location>,
        /// Dotted path of the field inside the object.
        field: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Two different objects share kind, namespace and name.
    #[error("duplicate {kind} {name:?}: {first} and {second} differ")]
    DuplicateObject {
        /// Object kind.
        kind: &'static str,
        /// `namespace/name` or `name`.
        name: String,
        /// Where the first one was read.
        first: Box<Location>,
        /// Where the second one was read.
        second: Box<Location>,
    },
}

/// What an import produced.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// The RBAC objects, in the order read.
    pub objects: RbacObjects,
    /// Objects of other kinds that were skipped, counted by kind.
    pub skipped: BTreeMap<String, usize>,
    /// Files read.
    pub files: usize,
    /// Documents read (empty documents included).
    pub documents: usize,
    /// Identical duplicates that were dropped.
    pub identical_duplicates: usize,
}

impl ImportReport {
    /// Total number of skipped objects.
    #[must_use]
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }
}

/// Accumulates objects from several sources; [`Importer::finish`] hands
/// them over.
#[derive(Debug)]
pub struct Importer {
    default_namespace: String,
    report: ImportReport,
    seen: HashMap<(&'static str, String), (Location, usize)>,
}

impl Default for Importer {
    fn default() -> Self {
        Self::new(DEFAULT_NAMESPACE)
    }
}

impl Importer {
    /// An importer that puts namespaced objects without a namespace into
    /// `default_namespace`.
    #[must_use]
    pub fn new(default_namespace: &str) -> Self {
        Self {
            default_namespace: default_namespace.to_owned(),
            report: ImportReport::default(),
            seen: HashMap::new(),
        }
    }

    /// Reads a file, a directory (recursively: `*.yaml`, `*.yml`, `*.json`,
    /// in name order) or `-` (standard input).
    ///
    /// # Errors
    /// Unreadable paths and malformed objects; see [`ImportError`].
    pub fn add_path(&mut self, path: &Path) -> Result<(), ImportError> {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| ImportError::ReadPath {
                    path: path.to_owned(),
                    source,
                })?;
            return self.add_text("<stdin>", &text);
        }
        let meta = std::fs::metadata(path).map_err(|source| ImportError::ReadPath {
            path: path.to_owned(),
            source,
        })?;
        if meta.is_dir() {
            let mut files = Vec::new();
            collect_files(path, &mut files)?;
            files.sort();
            for file in files {
                self.add_file(&file)?;
            }
            Ok(())
        } else {
            self.add_file(path)
        }
    }

    fn add_file(&mut self, path: &Path) -> Result<(), ImportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ImportError::ReadPath {
            path: path.to_owned(),
            source,
        })?;
        let is_json = path.extension().is_some_and(|e| e == "json");
        let name = path.display().to_string();
        if is_json {
            self.add_json(&name, &text)
        } else {
            self.add_text(&name, &text)
        }
    }

    /// Reads YAML or JSON text (JSON when it starts with `{` or `[`).
    ///
    /// # Errors
    /// Malformed text or objects; see [`ImportError`].
    pub fn add_text(&mut self, file: &str, text: &str) -> Result<(), ImportError> {
        if text.trim_start().starts_with(['{', '[']) {
            return self.add_json(file, text);
        }
        self.report.files += 1;
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let document = i + 1;
            self.report.documents += 1;
            let value = Value::deserialize(doc).map_err(|source| ImportError::ParseYaml {
                file: file.to_owned(),
                document,
                source,
            })?;
            self.add_document(file, document, &value)?;
        }
        Ok(())
    }

    fn add_json(&mut self, file: &str, text: &str) -> Result<(), ImportError> {
        self.report.files += 1;
        for (i, value) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            let document = i + 1;
            self.report.documents += 1;
            let value = value.map_err(|source| ImportError::ParseJson {
                file: file.to_owned(),
                document,
                source,
            })?;
            self.add_document(file, document, &value)?;
        }
        Ok(())
    }

    fn add_document(
        &mut self,
        file: &str,
        document: usize,
        value: &Value,
    ) -> Result<(), ImportError> {
        let loc = Location {
            file: file.to_owned(),
            document,
            path: String::new(),
        };
        match value {
            Value::Null => Ok(()),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let loc = Location {
                        path: format!("[{i}]"),
                        ..loc.clone()
                    };
                    self.add_object(&loc, item, None)?;
                }
                Ok(())
            }
            _ => self.add_object(&loc, value, None),
        }
    }

    /// One object; `list_kind` is the item kind implied by a typed list.
    fn add_object(
        &mut self,
        loc: &Location,
        value: &Value,
        implied: Option<(&str, &str)>,
    ) -> Result<(), ImportError> {
        let obj = Fields::new(loc, value, "")?;
        let kind = match (obj.opt_str("kind")?, implied) {
            (Some(k), _) => k,
            (None, Some((k, _))) => k,
            (None, None) => return Err(obj.invalid("kind", "missing")),
        };
        let api_version = match (obj.opt_str("apiVersion")?, implied) {
            (Some(v), _) => Some(v),
            (None, Some((_, v))) => Some(v),
            (None, None) => None,
        };
        if kind == "List" || kind.ends_with("List") {
            let item_kind = kind.strip_suffix("List").unwrap_or_default();
            let items = obj.opt_array("items")?.unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                let item_loc = Location {
                    path: join_path(&loc.path, &format!("items[{i}]")),
                    ..loc.clone()
                };
                let implied =
                    (!item_kind.is_empty()).then(|| (item_kind, api_version.unwrap_or_default()));
                self.add_object(&item_loc, item, implied)?;
            }
            return Ok(());
        }
        let rbac_kind = match kind {
            "Role" => Some(KIND_ROLE),
            "ClusterRole" => Some(KIND_CLUSTER_ROLE),
            "RoleBinding" => Some(KIND_ROLE_BINDING),
            "ClusterRoleBinding" => Some(KIND_CLUSTER_ROLE_BINDING),
            _ => None,
        };
        let Some(rbac_kind) = rbac_kind else {
            *self.report.skipped.entry(kind.to_owned()).or_default() += 1;
            return Ok(());
        };
        let Some(api_version) = api_version else {
            return Err(obj.invalid("apiVersion", "missing"));
        };
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        if group != RBAC_GROUP {
            // Same kind name in another API group (a CRD): not RBAC.
            *self
                .report
                .skipped
                .entry(format!("{kind} ({api_version})"))
                .or_default() += 1;
            return Ok(());
        }
        let meta = obj.child("metadata")?;
        let name = meta.req_str("name")?.to_owned();
        if name.is_empty() {
            return Err(meta.invalid("name", "must not be empty"));
        }
        let namespaced = rbac_kind == KIND_ROLE || rbac_kind == KIND_ROLE_BINDING;
        let namespace = if namespaced {
            Some(match meta.opt_str("namespace")? {
                Some(ns) if !ns.is_empty() => ns.to_owned(),
                _ => self.default_namespace.clone(),
            })
        } else {
            None
        };
        let key_name = match &namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.clone(),
        };
        match rbac_kind {
            KIND_ROLE | KIND_CLUSTER_ROLE => {
                let labels = meta.string_map("labels")?;
                let rules = parse_rules(&obj)?;
                let aggregation_rule = if rbac_kind == KIND_CLUSTER_ROLE {
                    parse_aggregation(&obj)?
                } else {
                    None
                };
                let role = Role {
                    name,
                    namespace,
                    labels,
                    rules,
                    aggregation_rule,
                };
                let list = if rbac_kind == KIND_ROLE {
                    &mut self.report.objects.roles
                } else {
                    &mut self.report.objects.cluster_roles
                };
                insert_unique(
                    &mut self.seen,
                    &mut self.report.identical_duplicates,
                    list,
                    rbac_kind,
                    key_name,
                    loc,
                    role,
                )
            }
            _ => {
                let rr = obj.child("roleRef")?;
                let role_ref = RoleRef {
                    api_group: rr.opt_str("apiGroup")?.unwrap_or_default().to_owned(),
                    kind: rr.req_str("kind")?.to_owned(),
                    name: rr.req_str("name")?.to_owned(),
                };
                let mut subjects = Vec::new();
                for (i, s) in obj
                    .opt_array("subjects")?
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    let f = Fields::new(loc, s, &format!("subjects[{i}]"))?;
                    subjects.push(Subject {
                        kind: f.req_str("kind")?.to_owned(),
                        api_group: f.opt_str("apiGroup")?.unwrap_or_default().to_owned(),
                        name: f.req_str("name")?.to_owned(),
                        namespace: f.opt_str("namespace")?.unwrap_or_default().to_owned(),
                    });
                }
                let binding = Binding {
                    name,
                    namespace,
                    role_ref,
                    subjects,
                };
                let list = if rbac_kind == KIND_ROLE_BINDING {
                    &mut self.report.objects.role_bindings
                } else {
                    &mut self.report.objects.cluster_role_bindings
                };
                insert_unique(
                    &mut self.seen,
                    &mut self.report.identical_duplicates,
                    list,
                    rbac_kind,
                    key_name,
                    loc,
                    binding,
                )
            }
        }
    }

    /// The objects read so far and what was skipped.
    #[must_use]
    pub fn finish(self) -> ImportReport {
        self.report
    }
}

/// Imports every path with [`Importer`] and the default namespace
/// `default_namespace`.
///
/// # Errors
/// The first problem met; nothing is returned then.
pub fn import_paths<P: AsRef<Path>>(
    paths: &[P],
    default_namespace: &str,
) -> Result<ImportReport, ImportError> {
    let mut importer = Importer::new(default_namespace);
    for p in paths {
        importer.add_path(p.as_ref())?;
    }
    Ok(importer.finish())
}

/// Imports one text (YAML or JSON) labelled `file` in errors.
///
/// # Errors
/// The first problem met; nothing is returned then.
pub fn import_str(file: &str, text: &str) -> Result<ImportReport, ImportError> {
    let mut importer = Importer::default();
    importer.add_text(file, text)?;
    Ok(importer.finish())
}

fn insert_unique<T: PartialEq>(
    seen: &mut HashMap<(&'static str, String), (Location, usize)>,
    identical: &mut usize,
    list: &mut Vec<T>,
    kind: &'static str,
    name: String,
    loc: &Location,
    item: T,
) -> Result<(), ImportError> {
    match seen.get(&(kind, name.clone())) {
        Some((first, index)) => {
            if list[*index] == item {
                *identical += 1;
                Ok(())
            } else {
                Err(ImportError::DuplicateObject {
                    kind,
                    name,
                    first: Box::new(first.clone()),
                    second: Box::new(loc.clone()),
                })
            }
        }
        None => {
            seen.insert((kind, name), (loc.clone(), list.len()));
            list.push(item);
            Ok(())
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImportError> {
    let read_err = |source| ImportError::ReadPath {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(read_err)?;
        if file_type.is_dir() {
            collect_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(path);
        }
    }
    Ok(())
}

fn join_path(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.starts_with('[')) {
        (true, _) => field.to_owned(),
        (false, true) => format!("{prefix}{field}"),
        (false, false) => format!("{prefix}.{field}"),
    }
}

/// A JSON object being read, with where it is for error messages.
struct Fields<'a> {
    loc: &'a Location,
    map: &'a Map<String, Value>,
    /// Path of this object inside the top-level object.
    path: String,
}

impl<'a> Fields<'a> {
    fn new(loc: &'a Location, value: &'a Value, path: &str) -> Result<Self, ImportError> {
        match value {
            Value::Object(map) => Ok(Self {
                loc,
                map,
                path: path.to_owned(),
            }),
            _ => Err(ImportError::InvalidField {
                location: Box::new(loc.clone()),
                field: if path.is_empty() {
                    "(object)".into()
                } else {
                    path.into()
                },
                problem: "expected an object",
            }),
        }
    }

    fn field_path(&self, field: &str) -> String {
        join_path(&self.path, field)
    }

    fn invalid(&self, field: &str, problem: &'static str) -> ImportError {
        ImportError::InvalidField {
            location: Box::new(self.loc.clone()),
            field: self.field_path(field),
            problem,
        }
    }

    fn child(&self, field: &str) -> Result<Fields<'a>, ImportError> {
        match self.map.get(field) {
            Some(v @ Value::Object(_)) => Fields::new(self.loc, v, &self.field_path(field)),
            None | Some(Value::Null) => Err(self.invalid(field, "missing")),
            Some(_) => Err(self.invalid(field, "expected an object")),
        }
    }

    fn opt_child(&self, field: &str) -> Result<Option<Fields<'a>>, ImportError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Object(_)) => {
                Fields::new(self.loc, v, &self.field_path(field)).map(Some)
            }
            Some(_) => Err(self.invalid(field, "expected an object")),
        }
    }

    fn opt_str(&self, field: &str) -> Result<Option<&'a str>, ImportError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.invalid(field, "expected a string")),
        }
    }

    fn req_str(&self, field: &str) -> Result<&'a str, ImportError> {
        self.opt_str(field)?
            .ok_or_else(|| self.invalid(field, "missing"))
    }

    fn opt_array(&self, field: &str) -> Result<Option<&'a [Value]>, ImportError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.invalid(field, "expected a list")),
        }
    }

    fn string_list(&self, field: &str) -> Result<Vec<String>, ImportError> {
        let Some(items) = self.opt_array(field)? else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(self.invalid(&format!("{field}[{i}]"), "expected a string")),
            })
            .collect()
    }

    fn string_map(&self, field: &str) -> Result<BTreeMap<String, String>, ImportError> {
        let Some(m) = self.opt_child(field)? else {
            return Ok(BTreeMap::new());
        };
        m.map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(m.invalid(k, "expected a string value")),
            })
            .collect()
    }
}

fn parse_rules(obj: &Fields<'_>) -> Result<Vec<PolicyRule>, ImportError> {
    let mut rules = Vec::new();
    for (i, r) in obj
        .opt_array("rules")?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let f = Fields::new(obj.loc, r, &obj.field_path(&format!("rules[{i}]")))?;
        rules.push(PolicyRule {
            verbs: f.string_list("verbs")?,
            api_groups: f.string_list("apiGroups")?,
            resources: f.string_list("resources")?,
            resource_names: f.string_list("resourceNames")?,
            non_resource_urls: f.string_list("nonResourceURLs")?,
        });
    }
    Ok(rules)
}

fn parse_aggregation(obj: &Fields<'_>) -> Result<Option<AggregationRule>, ImportError> {
    let Some(agg) = obj.opt_child("aggregationRule")? else {
        return Ok(None);
    };
    let mut selectors = Vec::new();
    let items = agg.opt_array("clusterRoleSelectors")?.unwrap_or_default();
    for (i, s) in items.iter().enumerate() {
        let f = Fields::new(
            obj.loc,
            s,
            &agg.field_path(&format!("clusterRoleSelectors[{i}]")),
        )?;
        let match_labels = f.string_map("matchLabels")?;
        let mut match_expressions = Vec::new();
        for (j, e) in f
            .opt_array("matchExpressions")?
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let ef = Fields::new(obj.loc, e, &f.field_path(&format!("matchExpressions[{j}]")))?;
            let req = LabelSelectorRequirement {
                key: ef.req_str("key")?.to_owned(),
                operator: ef.req_str("operator")?.to_owned(),
                values: ef.string_list("values")?,
            };
            // The same checks as metav1.LabelSelectorAsSelector, which the
            // aggregation controller calls (it gives up on the role otherwise).
            match req.operator.as_str() {
                "In" | "NotIn" if req.values.is_empty() => {
                    return Err(ef.invalid("values", "must be non-empty for In and NotIn"));
                }
                "Exists" | "DoesNotExist" if !req.values.is_empty() => {
                    return Err(ef.invalid("values", "must be empty for Exists and DoesNotExist"));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                _ => {
                    return Err(ef.invalid("operator", "must be In, NotIn, Exists or DoesNotExist"));
                }
            }
            match_expressions.push(req);
        }
        selectors.push(LabelSelector {
            match_labels,
            match_expressions,
        });
    }
    Ok(Some(AggregationRule {
        cluster_role_selectors: selectors,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: role-example
  namespace: default
rules:
- apiGroups: [\"\"]
  resources: [pods]
  verbs: [get, list]
";

    #[test]
    fn reads_single_role() {
        let r = import_str("t.yaml", ROLE).unwrap();
        assert_eq!(r.objects.roles.len(), 1);
        let role = &r.objects.roles[0];
        assert_eq!(role.namespace.as_deref(), Some("default"));
        assert_eq!(role.rules[0].verbs, ["get", "list"]);
        assert_eq!(role.rules[0].api_groups, [""]);
    }

    #[test]
    fn error_names_file_document_and_field() {
        let text = format!(
            "{ROLE}---\n{}",
            ROLE.replace("[get, list]", "[get, 3]")
                .replace("role-example", "other")
        );
        let err = import_str("t.yaml", &text).unwrap_err();
        let msg = err.to_string();
        assert_eq!(
            msg,
            "t.yaml, document 2: field `rules[0].verbs[1]`: expected a string"
        );
    }

    #[test]
    fn list_items_are_located() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: rbac.authorization.k8s.io/v1\n  kind: ClusterRole\n  metadata: {}\n";
        let err = import_str("l.yaml", text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "l.yaml, document 1, items[0]: field `metadata.name`: missing"
        );
    }

    #[test]
    fn typed_list_items_get_their_kind() {
        let text = r#"{"kind":"RoleBindingList","apiVersion":"rbac.authorization.k8s.io/v1","items":[{"metadata":{"name":"b","namespace":"x"},"roleRef":{"kind":"Role","name":"r"},"subjects":[{"kind":"User","name":"u"}]}]}"#;
        let r = import_str("l.json", text).unwrap();
        assert_eq!(r.objects.role_bindings.len(), 1);
        assert_eq!(r.objects.role_bindings[0].namespace.as_deref(), Some("x"));
    }

    #[test]
    fn other_kinds_and_other_groups_are_skipped_and_counted() {
        let text = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n---\napiVersion: example.com/v1\nkind: Role\nmetadata: {name: b}\n---\n# only a comment\n";
        let r = import_str("s.yaml", text).unwrap();
        assert!(r.objects.is_empty());
        assert_eq!(r.skipped.get("ServiceAccount"), Some(&1));
        assert_eq!(r.skipped.get("Role (example.com/v1)"), Some(&1));
        assert_eq!(r.documents, 3);
    }

    #[test]
    fn duplicates_identical_kept_once_different_rejected() {
        let text = format!("{ROLE}---\n{ROLE}");
        let r = import_str("d.yaml", &text).unwrap();
        assert_eq!(r.objects.roles.len(), 1);
        assert_eq!(r.identical_duplicates, 1);
        let text = format!("{ROLE}---\n{}", ROLE.replace("list]", "watch]"));
        let err = import_str("d.yaml", &text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "duplicate Role \"default/role-example\": d.yaml, document 1 and d.yaml, document 2 differ"
        );
    }

    #[test]
    fn missing_namespace_gets_default() {
        let text = ROLE.replace("  namespace: default\n", "");
        let mut imp = Importer::new("argocd");
        imp.add_text("n.yaml", &text).unwrap();
        assert_eq!(
            imp.finish().objects.roles[0].namespace.as_deref(),
            Some("argocd")
        );
    }

    #[test]
    fn malformed_yaml_is_an_error() {
        let err = import_str("m.yaml", "kind: Role\nmetadata: [unclosed\n").unwrap_err();
        assert!(
            matches!(err, ImportError::ParseYaml { document: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn bad_selector_operator() {
        let text = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: a}\naggregationRule:\n  clusterRoleSelectors:\n  - matchExpressions:\n    - {key: k, operator: Maybe}\n";
        let err = import_str("a.yaml", text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.yaml, document 1: field `aggregationRule.clusterRoleSelectors[0].matchExpressions[0].operator`: must be In, NotIn, Exists or DoesNotExist"
        );
    }
}
