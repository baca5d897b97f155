//! `kubectl auth can-i`'s `RESOURCE[.GROUP][/NAME]` argument, resolved
//! without a cluster.
//!
//! kubectl lower-cases the argument, splits `TYPE/NAME`, parses
//! `resource.group` at the first dot, and asks discovery to complete a bare
//! or short name (`po` -> `pods`, `deploy` -> `deployments.apps`). We have no
//! discovery, so a table of the built-in resources of a current Kubernetes
//! stands in for it; a resource that is not in the table is used as typed
//! (kubectl warns and does the same when discovery does not know it).

/// A built-in resource: plural, group, short names, namespaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownResource {
    /// Plural resource name.
    pub resource: &'static str,
    /// API group (`""` = core).
    pub group: &'static str,
    /// Short names and the singular, as discovery lists them.
    pub aliases: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

const fn r(
    resource: &'static str,
    group: &'static str,
    aliases: &'static [&'static str],
    namespaced: bool,
) -> KnownResource {
    KnownResource {
        resource,
        group,
        aliases,
        namespaced,
    }
}

/// Built-in resources of Kubernetes 1.32 (discovery of a vanilla cluster).
pub const KNOWN_RESOURCES: &[KnownResource] = &[
    r("bindings", "", &["binding"], true),
    r("componentstatuses", "", &["cs", "componentstatus"], false),
    r("configmaps", "", &["cm", "configmap"], true),
    r("endpoints", "", &["ep"], true),
    r("events", "", &["ev", "event"], true),
    r("limitranges", "", &["limits", "limitrange"], true),
    r("namespaces", "", &["ns", "namespace"], false),
    r("nodes", "", &["no", "node"], false),
    r(
        "persistentvolumeclaims",
        "",
        &["pvc", "persistentvolumeclaim"],
        true,
    ),
    r("persistentvolumes", "", &["pv", "persistentvolume"], false),
    r("pods", "", &["po", "pod"], true),
    r("podtemplates", "", &["podtemplate"], true),
    r(
        "replicationcontrollers",
        "",
        &["rc", "replicationcontroller"],
        true,
    ),
    r("resourcequotas", "", &["quota", "resourcequota"], true),
    r("secrets", "", &["secret"], true),
    r("serviceaccounts", "", &["sa", "serviceaccount"], true),
    r("services", "", &["svc", "service"], true),
    r(
        "mutatingwebhookconfigurations",
        "admissionregistration.k8s.io",
        &["mutatingwebhookconfiguration"],
        false,
    ),
    r(
        "validatingwebhookconfigurations",
        "admissionregistration.k8s.io",
        &["validatingwebhookconfiguration"],
        false,
    ),
    r(
        "validatingadmissionpolicies",
        "admissionregistration.k8s.io",
        &["validatingadmissionpolicy"],
        false,
    ),
    r(
        "validatingadmissionpolicybindings",
        "admissionregistration.k8s.io",
        &["validatingadmissionpolicybinding"],
        false,
    ),
    r(
        "customresourcedefinitions",
        "apiextensions.k8s.io",
        &["crd", "crds", "customresourcedefinition"],
        false,
    ),
    r(
        "apiservices",
        "apiregistration.k8s.io",
        &["apiservice"],
        false,
    ),
    r("controllerrevisions", "apps", &["controllerrevision"], true),
    r("daemonsets", "apps", &["ds", "daemonset"], true),
    r("deployments", "apps", &["deploy", "deployment"], true),
    r("replicasets", "apps", &["rs", "replicaset"], true),
    r("statefulsets", "apps", &["sts", "statefulset"], true),
    r(
        "selfsubjectreviews",
        "authentication.k8s.io",
        &["selfsubjectreview"],
        false,
    ),
    r(
        "tokenreviews",
        "authentication.k8s.io",
        &["tokenreview"],
        false,
    ),
    r(
        "localsubjectaccessreviews",
        "authorization.k8s.io",
        &["localsubjectaccessreview"],
        true,
    ),
    r(
        "selfsubjectaccessreviews",
        "authorization.k8s.io",
        &["selfsubjectaccessreview"],
        false,
    ),
    r(
        "selfsubjectrulesreviews",
        "authorization.k8s.io",
        &["selfsubjectrulesreview"],
        false,
    ),
    r(
        "subjectaccessreviews",
        "authorization.k8s.io",
        &["subjectaccessreview"],
        false,
    ),
    r(
        "horizontalpodautoscalers",
        "autoscaling",
        &["hpa", "horizontalpodautoscaler"],
        true,
    ),
    r("cronjobs", "batch", &["cj", "cronjob"], true),
    r("jobs", "batch", &["job"], true),
    r(
        "certificatesigningrequests",
        "certificates.k8s.io",
        &["csr", "certificatesigningrequest"],
        false,
    ),
    r("leases", "coordination.k8s.io", &["lease"], true),
    r(
        "endpointslices",
        "discovery.k8s.io",
        &["endpointslice"],
        true,
    ),
    r(
        "flowschemas",
        "flowcontrol.apiserver.k8s.io",
        &["flowschema"],
        false,
    ),
    r(
        "prioritylevelconfigurations",
        "flowcontrol.apiserver.k8s.io",
        &["prioritylevelconfiguration"],
        false,
    ),
    r(
        "ingressclasses",
        "networking.k8s.io",
        &["ingressclass"],
        false,
    ),
    r("ingresses", "networking.k8s.io", &["ing", "ingress"], true),
    r(
        "networkpolicies",
        "networking.k8s.io",
        &["netpol", "networkpolicy"],
        true,
    ),
    r("runtimeclasses", "node.k8s.io", &["runtimeclass"], false),
    r(
        "poddisruptionbudgets",
        "policy",
        &["pdb", "poddisruptionbudget"],
        true,
    ),
    r(
        "clusterrolebindings",
        "rbac.authorization.k8s.io",
        &["clusterrolebinding"],
        false,
    ),
    r(
        "clusterroles",
        "rbac.authorization.k8s.io",
        &["clusterrole"],
        false,
    ),
    r(
        "rolebindings",
        "rbac.authorization.k8s.io",
        &["rolebinding"],
        true,
    ),
    r("roles", "rbac.authorization.k8s.io", &["role"], true),
    r(
        "priorityclasses",
        "scheduling.k8s.io",
        &["pc", "priorityclass"],
        false,
    ),
    r("csidrivers", "storage.k8s.io", &["csidriver"], false),
    r("csinodes", "storage.k8s.io", &["csinode"], false),
    r(
        "csistoragecapacities",
        "storage.k8s.io",
        &["csistoragecapacity"],
        true,
    ),
    r(
        "storageclasses",
        "storage.k8s.io",
        &["sc", "storageclass"],
        false,
    ),
    r(
        "volumeattachments",
        "storage.k8s.io",
        &["volumeattachment"],
        false,
    ),
];

/// A resolved `RESOURCE[.GROUP][/NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceArg {
    /// Resource (plural, or as typed when unknown).
    pub resource: String,
    /// API group.
    pub group: String,
    /// Object name, empty when none was given.
    pub name: String,
    /// The table entry, when the resource is a known built-in.
    pub known: Option<KnownResource>,
}

/// Resolves a kubectl resource argument.
#[must_use]
pub fn parse_resource_arg(arg: &str) -> ResourceArg {
    let (type_part, name) = match arg.split_once('/') {
        Some((t, n)) => (t, n.to_owned()),
        None => (arg, String::new()),
    };
    let lower = type_part.to_lowercase();
    if lower == "*" {
        return ResourceArg {
            resource: lower,
            group: String::new(),
            name,
            known: None,
        };
    }
    let (resource, group) = match lower.split_once('.') {
        Some((r, g)) => (r.to_owned(), g.to_owned()),
        None => (lower.clone(), String::new()),
    };
    let known = KNOWN_RESOURCES.iter().find(|k| {
        (k.resource == resource || k.aliases.contains(&resource.as_str()))
            && (group.is_empty() || k.group == group)
    });
    match known {
        Some(k) => ResourceArg {
            resource: k.resource.to_owned(),
            group: k.group.to_owned(),
            name,
            known: Some(*k),
        },
        None => ResourceArg {
            resource,
            group,
            name,
            known: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_kubectl() {
        let cases = [
            ("pods", "pods", "", ""),
            ("po", "pods", "", ""),
            ("Pods/foo", "pods", "", "foo"),
            ("deploy", "deployments", "apps", ""),
            ("deployments.apps/web", "deployments", "apps", "web"),
            ("widgets.example.com", "widgets", "example.com", ""),
            ("widgets", "widgets", "", ""),
            ("*", "*", "", ""),
            (
                "csr",
                "certificatesigningrequests",
                "certificates.k8s.io",
                "",
            ),
        ];
        for (arg, res, group, name) in cases {
            let p = parse_resource_arg(arg);
            assert_eq!(
                (p.resource.as_str(), p.group.as_str(), p.name.as_str()),
                (res, group, name),
                "{arg}"
            );
        }
        assert!(!parse_resource_arg("nodes").known.unwrap().namespaced);
    }
}
