//! Batch decisions over JSON lines (`tokenwatch can-i --batch`).
//!
//! Each input line is an object
//! `{user, groups, verb, apiGroup, resource, subresource, name, namespace,
//! isResourceRequest, path}` (missing fields are empty; groups are used
//! exactly as given; `isResourceRequest` defaults to true unless only
//! `path` is set). Each output line is `{"allowed": bool, "reason": "..."}`,
//! in input order, written as soon as it is decided. A line that is not
//! such an object gets `{"error": "line N: ..."}` in its place, so output
//! lines stay aligned with input lines; blank lines are skipped.

use std::fmt;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize, Serializer};

use super::authorizer::{Attributes, UserInfo, decide};
use super::snapshot::Snapshot;

/// Errors of a batch run (malformed lines are reported in the output, not here).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Reading the input failed.
    #[error("cannot read batch input")]
    ReadInput {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write batch output")]
    WriteOutput {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// One request of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BatchRequest {
    /// User name.
    pub user: String,
    /// Groups, exactly.
    pub groups: Vec<String>,
    /// Verb.
    pub verb: String,
    /// API group.
    pub api_group: String,
    /// Resource.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Resource request or not; inferred when absent.
    pub is_resource_request: Option<bool>,
    /// URL path of a non-resource request.
    pub path: String,
}

impl BatchRequest {
    /// The attributes of this request.
    #[must_use]
    pub fn attributes(&self) -> Attributes<'_> {
        let is_resource_request = self
            .is_resource_request
            .unwrap_or(!self.resource.is_empty() || self.path.is_empty());
        Attributes {
            verb: &self.verb,
            is_resource_request,
            namespace: &self.namespace,
            api_group: &self.api_group,
            resource: &self.resource,
            subresource: &self.subresource,
            name: &self.name,
            path: &self.path,
        }
    }
}

/// Counts of a batch run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Requests decided.
    pub decided: usize,
    /// Of which allowed.
    pub allowed: usize,
    /// Lines that could not be read as a request.
    pub malformed: usize,
}

struct AsStr<T>(T);

impl<T: fmt::Display> Serialize for AsStr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[derive(Serialize)]
#[serde(bound = "R: fmt::Display")]
struct Answer<R> {
    allowed: bool,
    reason: AsStr<R>,
}

#[derive(Serialize)]
struct LineError {
    error: String,
}

/// Decides every line of `input` against `snapshot`, writing one line to
/// `output` per request; flushes after each line when `flush_each_line`.
///
/// # Errors
/// Only I/O errors; malformed lines are answered in the output.
pub fn run<R: BufRead, W: Write>(
    snapshot: &Snapshot,
    input: R,
    mut output: W,
    flush_each_line: bool,
) -> Result<BatchStats, BatchError> {
    let mut stats = BatchStats::default();
    let write_err = |source| BatchError::WriteOutput { source };
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|source| BatchError::ReadInput { source })?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<BatchRequest>(&line) {
            Ok(req) => {
                let user = UserInfo {
                    name: req.user.clone(),
                    groups: req.groups.clone(),
                };
                let attrs = req.attributes();
                let d = decide(snapshot, &attrs, &user);
                stats.decided += 1;
                stats.allowed += usize::from(d.allowed);
                serde_json::to_writer(
                    &mut output,
                    &Answer {
                        allowed: d.allowed,
                        reason: AsStr(d.reason()),
                    },
                )
                .map_err(|e| write_err(std::io::Error::from(e)))?;
            }
            Err(e) => {
                stats.malformed += 1;
                serde_json::to_writer(
                    &mut output,
                    &LineError {
                        error: format!("line {}: {e}", i + 1),
                    },
                )
                .map_err(|e| write_err(std::io::Error::from(e)))?;
            }
        }
        output.write_all(b"\n").map_err(write_err)?;
        if flush_each_line {
            output.flush().map_err(write_err)?;
        }
    }
    output.flush().map_err(write_err)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::import::import_str;

    #[test]
    fn answers_in_order_and_reports_bad_lines() {
        let objects = import_str(
            "p.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules:\n- {apiGroups: [\"\"], resources: [pods], verbs: [get]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {kind: ClusterRole, name: r}\nsubjects: [{kind: Group, name: g}]\n",
        )
        .unwrap()
        .objects;
        let snapshot = Snapshot::build(objects);
        let input = concat!(
            "{\"user\":\"u\",\"groups\":[\"g\"],\"verb\":\"get\",\"resource\":\"pods\",\"namespace\":\"x\"}\n",
            "\n",
            "not json\n",
            "{\"user\":\"u\",\"verb\":\"get\",\"resource\":\"pods\"}\n",
            "{\"user\":\"u\",\"groups\":[\"g\"],\"verb\":\"get\",\"path\":\"/healthz\"}\n",
        );
        let mut out = Vec::new();
        let stats = run(&snapshot, input.as_bytes(), &mut out, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            r#"{"allowed":true,"reason":"RBAC: allowed by ClusterRoleBinding \"b\" of ClusterRole \"r\" to Group \"g\""}"#
        );
        assert!(
            lines[1].starts_with(r#"{"error":"line 3: "#),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], r#"{"allowed":false,"reason":""}"#);
        assert_eq!(
            lines[3], r#"{"allowed":false,"reason":""}"#,
            "non-resource, no rule"
        );
        assert_eq!(
            stats,
            BatchStats {
                decided: 3,
                allowed: 1,
                malformed: 1
            }
        );
    }
}
