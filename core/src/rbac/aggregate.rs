//! ClusterRole aggregation, as `pkg/controller/clusterroleaggregation` does it.
//!
//! For a ClusterRole with an `aggregationRule`, the controller walks the
//! selectors in order; for each, it lists the ClusterRoles whose labels
//! match, sorted by name, skips the role itself, and appends every rule not
//! already present (semantic equality: a missing list equals an empty one).
//! The result *replaces* the role's rules. The controller re-syncs every
//! aggregated role whenever any ClusterRole changes, so roles that select
//! other aggregated roles see their aggregated rules; we repeat passes until
//! nothing changes, which is the state the cluster settles in.

use super::model::{PolicyRule, Role};

/// How aggregation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AggregationOutcome {
    /// ClusterRoles that carry an `aggregationRule`.
    pub aggregated_roles: usize,
    /// Passes made until nothing changed.
    pub passes: usize,
    /// False when the pass limit was hit before a fixed point (only possible
    /// with cycles between aggregated roles); rules are then those of the
    /// last pass.
    pub converged: bool,
}

/// Replaces the rules of every aggregated ClusterRole in `cluster_roles`
/// with the rules the aggregation controller would compute.
pub fn aggregate(cluster_roles: &mut [Role]) -> AggregationOutcome {
    let mut order: Vec<usize> = (0..cluster_roles.len())
        .filter(|&i| cluster_roles[i].aggregation_rule.is_some())
        .collect();
    order.sort_by(|&a, &b| cluster_roles[a].name.cmp(&cluster_roles[b].name));
    let mut by_name: Vec<usize> = (0..cluster_roles.len()).collect();
    by_name.sort_by(|&a, &b| cluster_roles[a].name.cmp(&cluster_roles[b].name));

    let mut outcome = AggregationOutcome {
        aggregated_roles: order.len(),
        passes: 0,
        converged: true,
    };
    if order.is_empty() {
        return outcome;
    }
    let limit = order.len() + 2;
    loop {
        outcome.passes += 1;
        let mut changed = false;
        for &target in &order {
            let new_rules = rules_for(cluster_roles, &by_name, target);
            if !rules_equal(&new_rules, &cluster_roles[target].rules) {
                cluster_roles[target].rules = new_rules;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        if outcome.passes >= limit {
            outcome.converged = false;
            break;
        }
    }
    outcome
}

fn rules_for(roles: &[Role], by_name: &[usize], target: usize) -> Vec<PolicyRule> {
    let mut rules: Vec<PolicyRule> = Vec::new();
    let Some(agg) = &roles[target].aggregation_rule else {
        return rules;
    };
    for selector in &agg.cluster_role_selectors {
        for &i in by_name {
            if i == target || roles[i].name == roles[target].name {
                continue;
            }
            if !selector.matches(&roles[i].labels) {
                continue;
            }
            for rule in &roles[i].rules {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    rules
}

/// Semantic equality of rule lists (our lists have no nil/empty
/// distinction, so plain equality is the semantic one).
fn rules_equal(a: &[PolicyRule], b: &[PolicyRule]) -> bool {
    a == b
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::rbac::model::{AggregationRule, LabelSelector};

    fn rule(verb: &str, resource: &str) -> PolicyRule {
        PolicyRule {
            verbs: vec![verb.into()],
            api_groups: vec![String::new()],
            resources: vec![resource.into()],
            ..PolicyRule::default()
        }
    }

    fn role(name: &str, labels: &[(&str, &str)], rules: Vec<PolicyRule>) -> Role {
        Role {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            rules,
            ..Role::default()
        }
    }

    fn selecting(name: &str, labels: &[(&str, &str)], selectors: &[&[(&str, &str)]]) -> Role {
        let mut r = role(name, labels, vec![rule("stale", "stale")]);
        r.aggregation_rule = Some(AggregationRule {
            cluster_role_selectors: selectors
                .iter()
                .map(|s| LabelSelector {
                    match_labels: s
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect::<BTreeMap<_, _>>(),
                    match_expressions: vec![],
                })
                .collect(),
        });
        r
    }

    // Cases after the controller's own table (clusterroleaggregation_controller_test.go).
    #[test]
    fn no_matching_roles_gives_empty_rules() {
        let mut roles = vec![
            selecting("aggregate", &[], &[&[("foo", "bar")]]),
            role("other", &[("foo", "baz")], vec![rule("get", "pods")]),
        ];
        aggregate(&mut roles);
        assert!(roles[0].rules.is_empty(), "stale rules are replaced");
    }

    #[test]
    fn selectors_in_order_roles_by_name_deduplicated() {
        let mut roles = vec![
            selecting("aggregate", &[], &[&[("a", "1")], &[("b", "1")]]),
            role(
                "zz",
                &[("a", "1")],
                vec![rule("get", "pods"), rule("list", "pods")],
            ),
            role("aa", &[("a", "1")], vec![rule("watch", "pods")]),
            role(
                "bb",
                &[("b", "1"), ("a", "1")],
                vec![rule("get", "pods"), rule("delete", "pods")],
            ),
        ];
        aggregate(&mut roles);
        let got: Vec<&str> = roles[0].rules.iter().map(|r| r.verbs[0].as_str()).collect();
        // selector 1 matches aa, bb, zz (by name); selector 2 adds nothing new.
        assert_eq!(got, ["watch", "get", "delete", "list"]);
    }

    #[test]
    fn does_not_select_itself_and_chains_settle() {
        let mut roles = vec![
            selecting("admin", &[], &[&[("to-admin", "true")]]),
            selecting("edit", &[("to-admin", "true")], &[&[("to-edit", "true")]]),
            role(
                "extra",
                &[("to-edit", "true")],
                vec![rule("create", "pods")],
            ),
        ];
        let outcome = aggregate(&mut roles);
        assert!(outcome.converged);
        assert_eq!(roles[1].rules, [rule("create", "pods")]);
        assert_eq!(roles[0].rules, [rule("create", "pods")]);
        let mut self_selecting = vec![selecting("x", &[("s", "1")], &[&[("s", "1")]])];
        aggregate(&mut self_selecting);
        assert!(self_selecting[0].rules.is_empty());
    }
}
