//! The immutable, indexed form of a set of RBAC objects.
//!
//! Building a [`Snapshot`] resolves aggregated ClusterRoles, resolves every
//! binding's `roleRef` once (keeping the API server's error text for a
//! missing role), orders bindings the way the authorizer visits them
//! (ClusterRoleBindings by name, then RoleBindings by namespace and name),
//! and indexes them by the user names and group names their subjects match.
//! A snapshot is `Send + Sync`; share it with `Arc`.

use std::collections::BTreeMap;
use std::ops::Range;

use rustc_hash::FxHashMap;

use crate::bytes::{NameMap, NameTable, same_str};

use super::aggregate::{AggregationOutcome, aggregate};
use super::authorizer::Wildcards;
use super::model::{
    Binding, KIND_CLUSTER_ROLE, KIND_GROUP, KIND_ROLE, KIND_USER, PolicyRule, RbacObjects, Role,
};

/// Position of a binding in visiting order; see [`Snapshot::binding`].
pub type BindingId = u32;

/// Verbs with a bit in [`RuleFilter::verbs`]; the bit is `1 << index`.
const KNOWN_VERBS: [&str; 20] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "impersonate",
    "bind",
    "escalate",
    "approve",
    "sign",
    "use",
    "attest",
    "post",
    "put",
    "head",
    "options",
];

/// Bit of a verb in [`RuleFilter::verbs`]; 0 for a verb outside the set.
#[must_use]
pub(crate) fn verb_bit(verb: &str) -> u32 {
    KNOWN_VERBS
        .iter()
        .position(|v| same_str(v, verb))
        .map_or(0, |i| 1 << i)
}

/// The id of `*` in [`Atoms`].
pub(crate) const ATOM_ALL: u32 = 0;
/// The id of a request string no rule lists (equal to no rule's id).
pub(crate) const ATOM_NONE: u32 = u32::MAX;

/// Every API group, resource (`pods`, `pods/log`, `*/scale`, `*`) and
/// resource name the snapshot's rules list, each as a small id, and each
/// rule's lists as runs of ids end to end in one vector. A decision looks
/// the request's strings up once (this table is small and read on every
/// decision, so it stays in cache) and then compares ids that sit
/// together, where matching a rule's strings read a heap allocation per
/// string: `cachegrind` put those reads at a third of the replay's cache
/// misses.
#[derive(Debug, Default)]
pub(crate) struct Atoms {
    names: NameTable<u32>,
    ids: Vec<u32>,
}

/// A run of ids in [`Atoms`]: start and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Run(u32, u32);

impl Atoms {
    fn new() -> Self {
        let mut atoms = Self::default();
        let all = atoms.intern(super::model::ALL);
        debug_assert_eq!(all, ATOM_ALL);
        atoms
    }

    fn intern(&mut self, name: &str) -> u32 {
        let next = u32::try_from(self.names.len()).unwrap_or(ATOM_NONE);
        *self.names.get_or_insert_with(name, || next)
    }

    fn run(&mut self, names: &[String]) -> Run {
        let start = u32::try_from(self.ids.len()).unwrap_or(ATOM_NONE);
        for n in names {
            let id = self.intern(n);
            self.ids.push(id);
        }
        Run(start, u32::try_from(names.len()).unwrap_or(0))
    }

    /// The id of `name`, [`ATOM_NONE`] when no rule lists it.
    #[inline]
    pub(crate) fn get(&self, name: &str) -> u32 {
        self.names.get(name).copied().unwrap_or(ATOM_NONE)
    }

    /// The id of `resource/subresource` (built without allocating when
    /// short).
    fn get_joined(&self, resource: &str, subresource: &str) -> u32 {
        let (a, b) = (resource, subresource);
        let len = a.len() + 1 + b.len();
        let mut stack = [0u8; 128];
        let mut heap;
        let buf: &mut [u8] = if let Some(buf) = stack.get_mut(..len) {
            buf
        } else {
            heap = vec![0u8; len];
            &mut heap
        };
        let (head, tail) = buf.split_at_mut(a.len());
        head.copy_from_slice(a.as_bytes());
        if let Some((s, rest)) = tail.split_first_mut() {
            *s = b'/';
            rest.copy_from_slice(b.as_bytes());
        }
        // Two strings and an ASCII byte: always UTF-8.
        std::str::from_utf8(buf).map_or(ATOM_NONE, |joined| self.get(joined))
    }

    #[inline]
    fn slice(&self, run: Run) -> &[u32] {
        let start = run.0 as usize;
        self.ids
            .get(start..start + run.1 as usize)
            .unwrap_or_default()
    }
}

/// A request's strings as [`Atoms`] ids, looked up once per decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestAtoms {
    group: u32,
    /// `resource`, or `resource/subresource`.
    combined: u32,
    /// `*/subresource`; [`ATOM_NONE`] without a subresource.
    any_with_subresource: u32,
}

impl RequestAtoms {
    pub(crate) fn new(atoms: &Atoms, group: &str, resource: &str, subresource: &str) -> Self {
        let (combined, any_with_subresource) = if subresource.is_empty() {
            (atoms.get(resource), ATOM_NONE)
        } else {
            (
                atoms.get_joined(resource, subresource),
                atoms.get_joined(super::model::ALL, subresource),
            )
        };
        Self {
            group: atoms.get(group),
            combined,
            any_with_subresource,
        }
    }
}

/// A cheap pre-check computed once per rule: when it says no, the rule
/// cannot allow the request; when it says maybe, the full match decides.
/// It reads only this compact struct, where the full match reads the
/// rule's strings, which sit apart in the heap and miss the cache. It
/// also holds the rule's groups, resources and resource names as runs of
/// [`Atoms`] ids, for [`RuleFilter::allows_resource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuleFilter {
    /// Bits of the known verbs the rule lists.
    verbs: u32,
    /// The rule's `*` verb and `*` resource.
    wildcards: Wildcards,
    /// The rule lists a verb outside the known set.
    other_verbs: bool,
    /// The rule has resources (can allow resource requests).
    resources: bool,
    /// The rule has non-resource URLs.
    urls: bool,
    /// [`name_bit`] of every API group the rule lists (all bits for `*`).
    groups: u64,
    /// [`name_bit`] of every resource the rule lists, of the part before
    /// the `/` for `resource/subresource` (all bits for `*` and `*/sub`).
    resource_names: u64,
    group_ids: Run,
    resource_ids: Run,
    name_ids: Run,
}

/// One of 64 bits for a name (a one-word Bloom filter): a rule that lists
/// the name has the bit, so a request whose name's bit a rule lacks
/// cannot match that rule.
#[inline]
pub(crate) fn name_bit(name: &str) -> u64 {
    1 << (crate::bytes::hash_name(name) >> 58)
}

/// What [`RuleFilter::may_allow`] needs of a request, computed once per
/// decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestBits {
    pub(crate) verb: u32,
    pub(crate) is_resource_request: bool,
    pub(crate) group: u64,
    pub(crate) resource: u64,
}

impl RequestBits {
    pub(crate) fn new(verb: &str, is_resource_request: bool, group: &str, resource: &str) -> Self {
        Self {
            verb: verb_bit(verb),
            is_resource_request,
            group: name_bit(group),
            resource: name_bit(resource),
        }
    }
}

impl RuleFilter {
    fn new(rule: &PolicyRule, atoms: &mut Atoms) -> Self {
        let bits = |names: &[String], all: &dyn Fn(&str) -> bool, key: &dyn Fn(&str) -> &str| {
            names.iter().fold(0u64, |acc, n| {
                if all(n) {
                    u64::MAX
                } else {
                    acc | name_bit(key(n))
                }
            })
        };
        let mut f = Self {
            verbs: 0,
            wildcards: Wildcards::of(rule),
            other_verbs: false,
            resources: !rule.resources.is_empty(),
            urls: !rule.non_resource_urls.is_empty(),
            groups: bits(&rule.api_groups, &|g| g == super::model::ALL, &|g| g),
            resource_names: bits(
                &rule.resources,
                &|r| r == super::model::ALL || r.starts_with("*/"),
                &|r| r.split_once('/').map_or(r, |(resource, _)| resource),
            ),
            group_ids: atoms.run(&rule.api_groups),
            resource_ids: atoms.run(&rule.resources),
            name_ids: atoms.run(&rule.resource_names),
        };
        for v in &rule.verbs {
            match verb_bit(v) {
                0 => f.other_verbs = true,
                bit => f.verbs |= bit,
            }
        }
        f
    }

    /// False when the rule certainly does not allow the request.
    #[inline]
    pub(crate) fn may_allow(self, request: &RequestBits) -> bool {
        let kind_ok = if request.is_resource_request {
            self.resources
                && self.groups & request.group != 0
                && self.resource_names & request.resource != 0
        } else {
            self.urls
        };
        let verb_ok = self.wildcards.verbs
            || if request.verb == 0 {
                self.other_verbs
            } else {
                self.verbs & request.verb != 0
            };
        kind_ok && verb_ok
    }

    /// The rule's `*`s.
    pub(crate) fn wildcards(&self) -> Wildcards {
        self.wildcards
    }

    /// `APIGroupMatches`, `ResourceMatches` and `ResourceNameMatches` of
    /// the API server's rule resolver, on ids: a group is `*` or the
    /// request's; a resource is `*`, the request's `resource` (or
    /// `resource/subresource`), or `*/subresource`; resource names, when
    /// listed, hold the request's `name` (compared as a plain string, as
    /// the API server does; `name` looks it up, only for rules that list
    /// names).
    #[inline]
    pub(crate) fn allows_resource(
        &self,
        atoms: &Atoms,
        request: &RequestAtoms,
        name: &mut dyn FnMut() -> u32,
    ) -> bool {
        atoms
            .slice(self.group_ids)
            .iter()
            .any(|&g| g == ATOM_ALL || g == request.group)
            && atoms.slice(self.resource_ids).iter().any(|&r| {
                r == ATOM_ALL || r == request.combined || r == request.any_with_subresource
            })
            && (self.name_ids.1 == 0 || {
                let name = name();
                atoms.slice(self.name_ids).contains(&name)
            })
    }
}

/// What a binding's `roleRef` resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleResolution {
    /// Index into [`RbacObjects::cluster_roles`].
    ClusterRole(usize),
    /// Index into [`RbacObjects::roles`].
    Role(usize),
    /// The role does not exist (or the kind is unsupported); the text is the
    /// error the API server's rule resolver reports.
    Missing(Box<str>),
}

/// One binding with its resolved role.
#[derive(Debug, Clone)]
pub struct BindingEntry {
    /// The binding object.
    pub binding: Binding,
    /// Its role.
    pub role: RoleResolution,
}

/// Binding ids by the user and group names their subjects match.
#[derive(Debug, Default)]
pub(crate) struct SubjectIndex {
    /// Ids of bindings with a `User` subject of this name, or a
    /// `ServiceAccount` subject whose user name this is; ascending.
    pub(crate) users: NameIndex,
    /// Ids of bindings with a `Group` subject of this name; ascending.
    pub(crate) groups: NameIndex,
}

/// [`SubjectIndex`] while bindings are added.
#[derive(Debug, Default)]
struct SubjectIndexBuilder {
    users: NameMap<Box<str>, Vec<BindingId>>,
    groups: NameMap<Box<str>, Vec<BindingId>>,
}

impl SubjectIndexBuilder {
    fn add(&mut self, binding: &Binding, id: BindingId) {
        let ns = binding.namespace.as_deref().unwrap_or("");
        for subject in &binding.subjects {
            let (map, key) = match subject.kind.as_str() {
                KIND_USER => (&mut self.users, subject.name.clone()),
                KIND_GROUP => (&mut self.groups, subject.name.clone()),
                _ => match subject.service_account_user(ns) {
                    Some(user) => (&mut self.users, user),
                    None => continue,
                },
            };
            let ids = map.entry(key.into_boxed_str()).or_default();
            if ids.last() != Some(&id) {
                ids.push(id);
            }
        }
    }

    fn build(self) -> SubjectIndex {
        SubjectIndex {
            users: NameIndex::new(self.users),
            groups: NameIndex::new(self.groups),
        }
    }
}

/// Lists of binding ids by name, packed for the authorizer's nine or so
/// lookups per decision: the names end to end in a [`NameTable`] and the
/// lists end to end in one vector, so a lookup touches a slot and bytes
/// that sit together, not a heap allocation per name (which `perf` showed
/// missing the cache on most lookups, a sixth of the replay's time).
#[derive(Debug, Default)]
pub(crate) struct NameIndex {
    /// Where each name's list is in `ids`.
    lists: NameTable<Range<usize>>,
    ids: Vec<BindingId>,
}

impl NameIndex {
    fn new(lists: NameMap<Box<str>, Vec<BindingId>>) -> Self {
        let mut index = Self::default();
        let mut lists: Vec<_> = lists.into_iter().collect();
        lists.sort_unstable();
        for (name, ids) in lists {
            let at = index.ids.len();
            index.ids.extend_from_slice(&ids);
            let range = at..index.ids.len();
            index.lists.get_or_insert_with(&name, || range);
        }
        index
    }

    /// The ids listed under `name`.
    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<&[BindingId]> {
        self.ids.get(self.lists.get(name)?.clone())
    }
}

/// An immutable, indexed RBAC snapshot.
#[derive(Debug)]
pub struct Snapshot {
    objects: RbacObjects,
    aggregation: AggregationOutcome,
    bindings: Vec<BindingEntry>,
    /// Number of ClusterRoleBindings (they come first in `bindings`).
    cluster_binding_count: usize,
    cluster_roles_by_name: FxHashMap<Box<str>, usize>,
    cluster_role_filters: Vec<Box<[RuleFilter]>>,
    role_filters: Vec<Box<[RuleFilter]>>,
    /// The rules' groups, resources and resource names as ids.
    pub(crate) atoms: Atoms,
    roles_by_key: FxHashMap<(Box<str>, Box<str>), usize>,
    pub(crate) cluster_index: SubjectIndex,
    pub(crate) namespace_index: NameMap<Box<str>, SubjectIndex>,
    /// Range of binding ids per namespace.
    namespace_ranges: BTreeMap<String, (BindingId, BindingId)>,
}

impl Snapshot {
    /// Builds a snapshot: aggregation, role resolution, ordering, indexes.
    #[must_use]
    pub fn build(mut objects: RbacObjects) -> Self {
        let aggregation = aggregate(&mut objects.cluster_roles);

        let mut cluster_roles_by_name = FxHashMap::default();
        for (i, r) in objects.cluster_roles.iter().enumerate() {
            cluster_roles_by_name
                .entry(r.name.clone().into_boxed_str())
                .or_insert(i);
        }
        let mut roles_by_key = FxHashMap::default();
        for (i, r) in objects.roles.iter().enumerate() {
            let ns = r.namespace.clone().unwrap_or_default();
            roles_by_key
                .entry((ns.into_boxed_str(), r.name.clone().into_boxed_str()))
                .or_insert(i);
        }

        let mut cluster: Vec<&Binding> = objects.cluster_role_bindings.iter().collect();
        cluster.sort_by(|a, b| a.name.cmp(&b.name));
        let mut namespaced: Vec<&Binding> = objects.role_bindings.iter().collect();
        namespaced.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

        let resolve = |b: &Binding| -> RoleResolution {
            let ns = b.namespace.as_deref().unwrap_or("");
            match b.role_ref.kind.as_str() {
                KIND_CLUSTER_ROLE => match cluster_roles_by_name.get(b.role_ref.name.as_str()) {
                    Some(&i) => RoleResolution::ClusterRole(i),
                    None => RoleResolution::Missing(
                        format!(
                            "clusterrole.rbac.authorization.k8s.io {} not found",
                            super::authorizer::GoQuoted(&b.role_ref.name)
                        )
                        .into(),
                    ),
                },
                KIND_ROLE => {
                    match roles_by_key.get(&(Box::from(ns), Box::from(b.role_ref.name.as_str()))) {
                        Some(&i) => RoleResolution::Role(i),
                        None => RoleResolution::Missing(
                            format!(
                                "role.rbac.authorization.k8s.io {} not found",
                                super::authorizer::GoQuoted(&b.role_ref.name)
                            )
                            .into(),
                        ),
                    }
                }
                other => RoleResolution::Missing(
                    format!(
                        "unsupported role reference kind: {}",
                        super::authorizer::GoQuoted(other)
                    )
                    .into(),
                ),
            }
        };

        let mut bindings = Vec::with_capacity(cluster.len() + namespaced.len());
        let mut cluster_index = SubjectIndexBuilder::default();
        for b in &cluster {
            let id = to_id(bindings.len());
            cluster_index.add(b, id);
            bindings.push(BindingEntry {
                binding: (*b).clone(),
                role: resolve(b),
            });
        }
        let cluster_binding_count = bindings.len();
        let mut namespace_builders: BTreeMap<&str, SubjectIndexBuilder> = BTreeMap::new();
        let mut namespace_ranges: BTreeMap<String, (BindingId, BindingId)> = BTreeMap::new();
        for b in &namespaced {
            let id = to_id(bindings.len());
            let ns = b.namespace.clone().unwrap_or_default();
            namespace_builders
                .entry(b.namespace.as_deref().unwrap_or_default())
                .or_default()
                .add(b, id);
            namespace_ranges
                .entry(ns)
                .and_modify(|r| r.1 = id + 1)
                .or_insert((id, id + 1));
            bindings.push(BindingEntry {
                binding: (*b).clone(),
                role: resolve(b),
            });
        }
        let mut atoms = Atoms::new();
        let mut filters = |roles: &[Role]| -> Vec<Box<[RuleFilter]>> {
            roles
                .iter()
                .map(|r| {
                    r.rules
                        .iter()
                        .map(|rule| RuleFilter::new(rule, &mut atoms))
                        .collect()
                })
                .collect()
        };
        let cluster_role_filters = filters(&objects.cluster_roles);
        let role_filters = filters(&objects.roles);
        let cluster_index = cluster_index.build();
        let namespace_index = namespace_builders
            .into_iter()
            .map(|(ns, b)| (Box::<str>::from(ns), b.build()))
            .collect();
        Self {
            cluster_role_filters,
            role_filters,
            atoms,
            objects,
            aggregation,
            bindings,
            cluster_binding_count,
            cluster_roles_by_name,
            roles_by_key,
            cluster_index,
            namespace_index,
            namespace_ranges,
        }
    }

    /// The objects, with aggregated ClusterRoles resolved.
    #[must_use]
    pub fn objects(&self) -> &RbacObjects {
        &self.objects
    }

    /// How aggregation went.
    #[must_use]
    pub fn aggregation(&self) -> AggregationOutcome {
        self.aggregation
    }

    /// All bindings in visiting order: ClusterRoleBindings by name, then
    /// RoleBindings by namespace and name. The index is the [`BindingId`].
    #[must_use]
    pub fn bindings(&self) -> &[BindingEntry] {
        &self.bindings
    }

    /// The ClusterRoleBindings, by name.
    #[must_use]
    pub fn cluster_bindings(&self) -> &[BindingEntry] {
        &self.bindings[..self.cluster_binding_count]
    }

    /// The RoleBindings of `namespace`, by name.
    #[must_use]
    pub fn namespace_bindings(&self, namespace: &str) -> &[BindingEntry] {
        match self.namespace_ranges.get(namespace) {
            Some(&(start, end)) => &self.bindings[start as usize..end as usize],
            None => &[],
        }
    }

    /// Namespaces that have RoleBindings, sorted.
    pub fn binding_namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespace_ranges.keys().map(String::as_str)
    }

    /// One binding by id.
    #[must_use]
    pub fn binding(&self, id: BindingId) -> Option<&BindingEntry> {
        self.bindings.get(id as usize)
    }

    /// The role a resolution points at.
    #[must_use]
    pub fn role(&self, resolution: &RoleResolution) -> Option<&Role> {
        match resolution {
            RoleResolution::ClusterRole(i) => self.objects.cluster_roles.get(*i),
            RoleResolution::Role(i) => self.objects.roles.get(*i),
            RoleResolution::Missing(_) => None,
        }
    }

    /// The rules a resolution grants (none when the role is missing).
    #[must_use]
    pub fn rules(&self, resolution: &RoleResolution) -> &[PolicyRule] {
        self.role(resolution).map_or(&[], |r| r.rules.as_slice())
    }

    /// The pre-check filters of the rules a resolution grants, parallel to
    /// [`Snapshot::rules`].
    pub(crate) fn rule_filters(&self, resolution: &RoleResolution) -> &[RuleFilter] {
        match resolution {
            RoleResolution::ClusterRole(i) => self.cluster_role_filters.get(*i).map_or(&[], |f| f),
            RoleResolution::Role(i) => self.role_filters.get(*i).map_or(&[], |f| f),
            RoleResolution::Missing(_) => &[],
        }
    }

    /// A ClusterRole by name.
    #[must_use]
    pub fn cluster_role(&self, name: &str) -> Option<&Role> {
        self.cluster_roles_by_name
            .get(name)
            .map(|&i| &self.objects.cluster_roles[i])
    }

    /// A Role by namespace and name.
    #[must_use]
    pub fn namespaced_role(&self, namespace: &str, name: &str) -> Option<&Role> {
        self.roles_by_key
            .get(&(Box::from(namespace), Box::from(name)))
            .map(|&i| &self.objects.roles[i])
    }
}

fn to_id(n: usize) -> BindingId {
    BindingId::try_from(n).unwrap_or(BindingId::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// API groups the rule tests pick from.
    const GROUPS: [&str; 5] = ["", "apps", "*", "batch", "é.example.com"];
    /// Resources the rule tests pick from: plain, with a subresource, the
    /// `*` forms, non-ASCII; the last two only for the id test (the filter
    /// test picks from the first seven).
    const RESOURCES: [&str; 9] = [
        "pods",
        "pods/log",
        "*/log",
        "*",
        "secrets",
        "deployments/scale",
        "é",
        "*/*",
        "pods/*",
    ];

    /// (resource, subresource) of the requests the rule tests try: the
    /// first seven in the filter test, all in the id test.
    const REQUESTS: [(&str, &str); 12] = [
        ("pods", ""),
        ("pods", "log"),
        ("pods", "exec"),
        ("deployments", "scale"),
        ("secrets", ""),
        ("é", ""),
        ("", ""),
        ("*", ""),
        ("*", "log"),
        ("pods", "*"),
        ("*", "*"),
        ("x", "y/z"),
    ];

    /// The words of `vocab` whose bit is set in `bits`.
    fn pick(vocab: &[&str], bits: u32) -> Vec<String> {
        vocab
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, v)| (*v).to_owned())
            .collect()
    }

    /// The filter never refuses a rule the full match allows, for every
    /// pick of verbs, groups, resources (with subresources and `*`
    /// forms) and URLs from a vocabulary, against every request from one.
    #[test]
    fn rule_filters_never_refuse_what_the_rule_allows() {
        use crate::rbac::authorizer::{Attributes, rule_allows};
        let verbs = ["get", "list", "*", "escalate", "frobnicate"];
        let groups = GROUPS;
        let resources = &RESOURCES[..7];
        let urls = ["/healthz", "/api/*", "*"];
        let mut rules = Vec::new();
        for seed in 0u32..3_000 {
            let x = seed.wrapping_mul(2_654_435_761);
            rules.push(PolicyRule {
                verbs: pick(&verbs, x & 31),
                api_groups: pick(&groups, (x >> 5) & 31),
                resources: pick(resources, (x >> 10) & 127),
                resource_names: Vec::new(),
                non_resource_urls: pick(&urls, (x >> 17) & 7),
            });
        }
        let mut checked = 0;
        let mut atoms = Atoms::new();
        for rule in &rules {
            let filter = RuleFilter::new(rule, &mut atoms);
            for verb in verbs.iter().chain(&["watch", "delete"]) {
                for group in groups.iter().chain(&["rbac.authorization.k8s.io"]) {
                    for &(resource, sub) in &REQUESTS[..7] {
                        for (is_resource_request, path) in
                            [(true, ""), (false, "/healthz"), (false, "/api/v1")]
                        {
                            let attrs = Attributes {
                                verb,
                                is_resource_request,
                                api_group: group,
                                resource,
                                subresource: sub,
                                path,
                                ..Attributes::default()
                            };
                            let request =
                                RequestBits::new(verb, is_resource_request, group, resource);
                            if rule_allows(&attrs, rule) {
                                checked += 1;
                                assert!(filter.may_allow(&request), "{rule:?} {attrs:?}");
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000, "only {checked} allowed pairs");
    }

    /// The rule's groups, resources and names matched as ids agree with
    /// the same matched as strings (`APIGroupMatches`, `ResourceMatches`,
    /// `ResourceNameMatches`), both ways, on every pick from a vocabulary
    /// with `*` forms, subresources, empty and non-ASCII strings, and
    /// request strings no rule lists.
    #[test]
    fn rules_matched_as_ids_agree_with_rules_matched_as_strings() {
        use crate::rbac::authorizer::{api_group_matches, resource_matches, resource_name_matches};
        let groups = GROUPS;
        let resources = RESOURCES;
        let names = ["", "a", "*", "é", "pods"];
        let mut atoms = Atoms::new();
        let mut rules = Vec::new();
        for seed in 0u32..2_000 {
            let x = seed.wrapping_mul(2_654_435_761);
            let rule = PolicyRule {
                verbs: vec!["get".into()],
                api_groups: pick(&groups, x & 31),
                resources: pick(&resources, (x >> 5) & 511),
                resource_names: pick(&names, (x >> 14) & 31),
                non_resource_urls: Vec::new(),
            };
            let filter = RuleFilter::new(&rule, &mut atoms);
            assert_eq!(filter.wildcards(), Wildcards::of(&rule), "{rule:?}");
            rules.push((rule, filter));
        }
        let (mut allowed, mut refused) = (0, 0);
        for (rule, filter) in &rules {
            for group in groups.iter().chain(&["rbac.authorization.k8s.io", "*x"]) {
                for (resource, sub) in REQUESTS {
                    for name in names.iter().chain(&["b", "pod"]) {
                        let want = api_group_matches(rule, group)
                            && resource_matches(rule, resource, sub)
                            && resource_name_matches(rule, name);
                        let ids = RequestAtoms::new(&atoms, group, resource, sub);
                        let got = filter.allows_resource(&atoms, &ids, &mut || atoms.get(name));
                        assert_eq!(
                            got, want,
                            "{rule:?} {group:?} {resource:?}/{sub:?} {name:?}"
                        );
                        if want {
                            allowed += 1;
                        } else {
                            refused += 1;
                        }
                    }
                }
            }
        }
        assert!(allowed > 5_000 && refused > 5_000, "{allowed} {refused}");
    }

    #[test]
    fn a_joined_request_string_longer_than_the_stack_buffer_is_found() {
        let long = "r".repeat(300);
        let mut atoms = Atoms::new();
        let rule = PolicyRule {
            verbs: vec!["get".into()],
            api_groups: vec![String::new()],
            resources: vec![format!("{long}/status")],
            ..PolicyRule::default()
        };
        let filter = RuleFilter::new(&rule, &mut atoms);
        let ids = RequestAtoms::new(&atoms, "", &long, "status");
        assert!(filter.allows_resource(&atoms, &ids, &mut || ATOM_NONE));
        let ids = RequestAtoms::new(&atoms, "", &long, "scale");
        assert!(!filter.allows_resource(&atoms, &ids, &mut || ATOM_NONE));
    }

    #[test]
    fn a_name_index_finds_every_list_and_nothing_else() {
        let names = [
            "",
            "a",
            "system:authenticated",
            "system:serviceaccounts",
            "system:serviceaccounts:ns-41",
            "system:serviceaccount:ns-41:sa-5",
            "é",
        ];
        let mut lists: NameMap<Box<str>, Vec<BindingId>> = NameMap::default();
        for (i, name) in names.iter().enumerate() {
            let n = to_id(i);
            lists.insert((*name).into(), (0..=n).map(|k| k * 10 + n).collect());
        }
        let index = NameIndex::new(lists);
        for (i, name) in names.iter().enumerate() {
            let n = to_id(i);
            let want: Vec<BindingId> = (0..=n).map(|k| k * 10 + n).collect();
            assert_eq!(index.get(name), Some(want.as_slice()), "{name:?}");
        }
        for missing in [
            "b",
            "system:serviceaccounts:ns-4",
            "system:serviceaccount:ns-41:sa-6",
        ] {
            assert_eq!(index.get(missing), None, "{missing:?}");
        }
        assert_eq!(NameIndex::default().get(""), None);
    }
}
