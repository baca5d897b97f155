//! HTTP request -> authorization attributes, as kube-apiserver's
//! `RequestInfoFactory.NewRequestInfo` (apiserver `endpoints/request/requestinfo.go`)
//! computes them with the API prefixes `api` and `apis` (`api` groupless).
//!
//! - Paths with fewer than three segments, or whose first segment is not
//!   `api`/`apis`, or `apis/<group>/<version>` without a fourth segment, are
//!   non-resource requests: the verb is the lower-cased HTTP method.
//! - `watch` and `proxy` as the segment after the version are verbs (the
//!   deprecated verb-in-path form); `proxy` takes no subresource. A bare
//!   `/api/v1/watch` is the one input the API server's parser rejects:
//!   `unable to determine kind and namespace from url, ...`.
//! - `/namespaces/{ns}/{resource}/...` sets the namespace unless the third
//!   segment is `status` or `finalize` (namespace subresources).
//! - `GET`/`HEAD` without a name is `list`, or `watch` when the first `watch`
//!   query value is anything but `false`/`0` (any case); `fieldSelector`
//!   `metadata.name=X` (also `==`) then names the object when `X` is a valid
//!   path segment and every list option decodes; `DELETE` without a name is
//!   `deletecollection`.
//!
//! The URL may be a request URI (`/api/v1/pods?watch=1`) or an absolute URL;
//! the path is percent-decoded as Go's `net/url` does.
//!
//! Any text parses without a panic: `clippy::string_slice` is denied here
//! (positions are found on bytes and taken with `get`).

#![deny(clippy::string_slice)]

use serde::{Deserialize, Serialize};

/// Errors of request parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestInfoError {
    /// The URL has an invalid percent escape (Go's `net/url` refuses it
    /// before the API server sees the request).
    #[error("parse {url:?}: invalid URL escape {escape:?}")]
    ParseUrlEscape {
        /// The URL given.
        url: String,
        /// The offending escape, e.g. `%zz`.
        escape: String,
    },
    /// The API server's own parse error for a verb segment with nothing after it.
    #[error("unable to determine kind and namespace from url, {url}")]
    DetermineKindAndNamespace {
        /// The URL given.
        url: String,
    },
}

/// The attributes the API server derives from a request, with its field names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestInfo {
    /// Whether the request is for an API resource or subresource.
    pub is_resource_request: bool,
    /// URL path (percent-decoded).
    pub path: String,
    /// Kubernetes verb for resource requests, lower-cased method otherwise.
    pub verb: String,
    /// `api` or `apis`.
    pub api_prefix: String,
    /// API group; empty for the core group.
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Namespace; empty for cluster-scoped or all-namespace requests.
    pub namespace: String,
    /// Resource, e.g. `pods`.
    pub resource: String,
    /// Subresource, e.g. `log`.
    pub subresource: String,
    /// Object name.
    pub name: String,
    /// Path parts from the resource on.
    pub parts: Vec<String>,
}

const SPECIAL_VERBS: [&str; 2] = ["proxy", "watch"];
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// Parses `method url` the way kube-apiserver does.
///
/// # Errors
/// [`RequestInfoError`] where the API server (or Go's URL parser) refuses.
pub fn parse(method: &str, url: &str) -> Result<RequestInfo, RequestInfoError> {
    let (raw_path, raw_query) = split_url(url);
    let path = unescape_path(raw_path).map_err(|escape| RequestInfoError::ParseUrlEscape {
        url: url.to_owned(),
        escape,
    })?;
    let mut info = RequestInfo {
        is_resource_request: false,
        verb: method.to_lowercase(),
        path,
        ..RequestInfo::default()
    };
    let trimmed = info.path.trim_matches('/');
    let all: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    if all.len() < 3 || !(all[0] == "api" || all[0] == "apis") {
        return Ok(info);
    }
    let mut parts: &[&str] = &all[1..];
    let api_prefix = all[0];
    // Set before the group check, as the API server does: `/apis/apps/v1`
    // is a non-resource request with apiPrefix `apis`.
    info.api_prefix = api_prefix.to_owned();
    let mut api_group = "";
    if api_prefix != "api" {
        if parts.len() < 3 {
            return Ok(info);
        }
        api_group = parts[0];
        parts = &parts[1..];
    }
    info.api_group = api_group.to_owned();
    info.is_resource_request = true;
    info.api_version = parts[0].to_owned();
    parts = &parts[1..];

    if SPECIAL_VERBS.contains(&parts[0]) {
        if parts.len() < 2 {
            return Err(RequestInfoError::DetermineKindAndNamespace {
                url: url.to_owned(),
            });
        }
        info.verb = parts[0].to_owned();
        parts = &parts[1..];
    } else {
        info.verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_owned();
    }

    if parts[0] == "namespaces" && parts.len() > 1 {
        info.namespace = parts[1].to_owned();
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts = &parts[2..];
        }
    }
    info.parts = parts.iter().map(|p| (*p).to_owned()).collect();
    if parts.len() >= 3 && info.verb != "proxy" {
        info.subresource = parts[2].to_owned();
    }
    if parts.len() >= 2 {
        info.name = parts[1].to_owned();
    }
    if !parts.is_empty() {
        info.resource = parts[0].to_owned();
    }

    if info.name.is_empty() && info.verb == "get" {
        let query = parse_query(raw_query);
        let first = |key: &str| {
            query
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let watch = first("watch").is_some_and(|v| {
            let v = v.to_lowercase();
            v != "false" && v != "0"
        });
        info.verb = if watch { "watch" } else { "list" }.to_owned();
        if list_options_decode(&first)
            && let Some(selector) = first("fieldSelector")
            && let Ok(Some(name)) = field_selector_exact_name(selector)
            && is_valid_path_segment_name(&name)
        {
            info.name = name;
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_owned();
    }
    Ok(info)
}

/// Splits an absolute URL or request URI into path and query.
fn split_url(url: &str) -> (&str, &str) {
    let mut rest = url;
    for scheme in ["http://", "https://"] {
        if let Some(after) = rest.strip_prefix(scheme) {
            rest = after.find('/').and_then(|i| after.get(i..)).unwrap_or("");
            break;
        }
    }
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    rest.split_once('?').unwrap_or((rest, ""))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes; `plus_is_space` for query components. Returns the bad
/// escape on error.
fn unescape(s: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_val);
                let lo = bytes.get(i + 2).copied().and_then(hex_val);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                    }
                    _ => {
                        let end = (i + 3).min(bytes.len());
                        return Err(String::from_utf8_lossy(&bytes[i..end]).into_owned());
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn unescape_path(s: &str) -> Result<String, String> {
    unescape(s, false)
}

/// Go's `url.ParseQuery`, keeping the pairs that parse (as `URL.Query()` does).
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((unescape(k, true).ok()?, unescape(v, true).ok()?))
        })
        .collect()
}

/// Whether the list options in the query decode (ParameterCodec into
/// `ListOptions`); when they do not, the API server ignores the field
/// selector. Only the integer fields and the two selectors can fail.
fn list_options_decode<'q>(first: &dyn Fn(&str) -> Option<&'q str>) -> bool {
    let int_ok = |key: &str| first(key).is_none_or(|v| v.parse::<i64>().is_ok());
    int_ok("limit")
        && int_ok("timeoutSeconds")
        && first("fieldSelector").is_none_or(|s| field_selector_exact_name(s).is_ok())
        && first("labelSelector").is_none_or(label_selector_is_valid)
}

/// Parses a field selector (apimachinery `fields.ParseSelector`) and returns
/// the value it requires for `metadata.name`, if any.
fn field_selector_exact_name(selector: &str) -> Result<Option<String>, ()> {
    let mut terms = split_unescaped(selector, ',');
    terms.sort_unstable();
    let mut found = None;
    for term in terms {
        if term.is_empty() {
            continue;
        }
        let (lhs, op, rhs) = split_field_term(&term).ok_or(())?;
        let value = unescape_field_value(&rhs)?;
        if found.is_none() && op != "!=" && lhs == "metadata.name" {
            found = Some(value);
        }
    }
    Ok(found)
}

/// Splits on `sep` not preceded by a backslash escape.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn split_field_term(term: &str) -> Option<(String, &'static str, String)> {
    // Byte positions, compared as bytes: the operators are ASCII, so a match
    // starts on a character boundary, and `get` never splits a character.
    let bytes = term.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        for op in ["!=", "==", "="] {
            if bytes
                .get(i..)
                .is_some_and(|rest| rest.starts_with(op.as_bytes()))
            {
                let lhs = term.get(..i)?;
                let rhs = term.get(i + op.len()..)?;
                return Some((lhs.to_owned(), op, rhs.to_owned()));
            }
        }
        i += 1;
    }
    None
}

fn unescape_field_value(s: &str) -> Result<String, ()> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => return Err(()),
            },
            ',' | '=' => return Err(()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// apimachinery `path.IsValidPathSegmentName`.
fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

/// Whether `labels.Parse` accepts a label selector.
fn label_selector_is_valid(s: &str) -> bool {
    #[derive(PartialEq, Clone)]
    enum Tok {
        Ident(String),
        Not,
        Eq,
        DoubleEq,
        NotEq,
        Gt,
        Lt,
        Open,
        Close,
        Comma,
    }
    let mut toks = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let (tok, len) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '!' if next == Some('=') => (Tok::NotEq, 2),
            '!' => (Tok::Not, 1),
            '=' if next == Some('=') => (Tok::DoubleEq, 2),
            '=' => (Tok::Eq, 1),
            '>' => (Tok::Gt, 1),
            '<' => (Tok::Lt, 1),
            '(' => (Tok::Open, 1),
            ')' => (Tok::Close, 1),
            ',' => (Tok::Comma, 1),
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"!=><(),".contains(chars[i])
                {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
                continue;
            }
        };
        toks.push(tok);
        i += len;
    }
    let mut pos = 0;
    if toks.is_empty() {
        return true;
    }
    loop {
        let negated = toks.get(pos) == Some(&Tok::Not);
        if negated {
            pos += 1;
        }
        let Some(Tok::Ident(key)) = toks.get(pos) else {
            return false;
        };
        if !is_qualified_name(key) {
            return false;
        }
        pos += 1;
        if !negated {
            match toks.get(pos) {
                None | Some(Tok::Comma) => {}
                Some(Tok::Eq | Tok::DoubleEq | Tok::NotEq) => {
                    pos += 1;
                    match toks.get(pos) {
                        Some(Tok::Ident(v)) if is_label_value(v) => pos += 1,
                        Some(Tok::Ident(_)) => return false,
                        _ => {} // empty value
                    }
                }
                Some(Tok::Gt | Tok::Lt) => {
                    pos += 1;
                    match toks.get(pos) {
                        Some(Tok::Ident(v)) if v.parse::<i64>().is_ok() => pos += 1,
                        _ => return false,
                    }
                }
                Some(Tok::Ident(op)) if op == "in" || op == "notin" => {
                    pos += 1;
                    if toks.get(pos) != Some(&Tok::Open) {
                        return false;
                    }
                    pos += 1;
                    let mut values = 0;
                    loop {
                        match toks.get(pos) {
                            Some(Tok::Ident(v)) if is_label_value(v) => {
                                values += 1;
                                pos += 1;
                            }
                            Some(Tok::Ident(_)) => return false,
                            _ => {}
                        }
                        match toks.get(pos) {
                            Some(Tok::Comma) => pos += 1,
                            Some(Tok::Close) => {
                                pos += 1;
                                break;
                            }
                            _ => return false,
                        }
                    }
                    if values == 0 {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        match toks.get(pos) {
            None => return true,
            Some(Tok::Comma) => pos += 1,
            _ => return false,
        }
    }
}

fn is_name_part(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
                && b[b.len() - 1].is_ascii_lowercase() | b[b.len() - 1].is_ascii_digit()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name, 63),
        None => is_name_part(s, 63),
    }
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_name_part(s, 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, url, verb, apiPrefix, apiGroup, apiVersion, namespace,
    /// resource, subresource, name, parts) — the success table of
    /// `TestGetAPIRequestInfo`.
    #[expect(clippy::type_complexity, reason = "a test table")]
    const SUCCESS: &[(
        &str,
        &str,
        &str,
        &str,
        &str,
        &str,
        &str,
        &str,
        &str,
        &str,
        &[&str],
    )] = &[
        (
            "GET",
            "/api/v1/namespaces",
            "list",
            "api",
            "",
            "v1",
            "",
            "namespaces",
            "",
            "",
            &["namespaces"],
        ),
        (
            "GET",
            "/api/v1/namespaces/other",
            "get",
            "api",
            "",
            "v1",
            "other",
            "namespaces",
            "",
            "other",
            &["namespaces", "other"],
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods",
            "list",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods/foo",
            "get",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
            &["pods", "foo"],
        ),
        (
            "HEAD",
            "/api/v1/namespaces/other/pods/foo",
            "get",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
            &["pods", "foo"],
        ),
        (
            "GET",
            "/api/v1/pods",
            "list",
            "api",
            "",
            "v1",
            "",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "HEAD",
            "/api/v1/pods",
            "list",
            "api",
            "",
            "v1",
            "",
            "pods",
            "",
            "",
            &["pods"],
        ),
        // An older table had namespace "" here; the code has always set it,
        // and the current table dropped the case.
        (
            "PATCH",
            "/api/v1/namespaces/new-namespace",
            "patch",
            "api",
            "",
            "v1",
            "new-namespace",
            "namespaces",
            "",
            "new-namespace",
            &["namespaces", "new-namespace"],
        ),
        (
            "GET",
            "/api/v1/proxy/namespaces/other/pods/foo",
            "proxy",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
            &["pods", "foo"],
        ),
        (
            "GET",
            "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource",
            "proxy",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
            &["pods", "foo", "subpath", "not", "a", "subresource"],
        ),
        (
            "GET",
            "/api/v1/watch/pods",
            "watch",
            "api",
            "",
            "v1",
            "",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "GET",
            "/api/v1/pods?watch=true",
            "watch",
            "api",
            "",
            "v1",
            "",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "GET",
            "/api/v1/pods?watch=false",
            "list",
            "api",
            "",
            "v1",
            "",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/other/pods",
            "watch",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods?watch=1",
            "watch",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods?watch=0",
            "list",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods/foo/status",
            "get",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "status",
            "foo",
            &["pods", "foo", "status"],
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods/foo/proxy/subpath",
            "get",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "proxy",
            "foo",
            &["pods", "foo", "proxy", "subpath"],
        ),
        (
            "PUT",
            "/api/v1/namespaces/other/finalize",
            "update",
            "api",
            "",
            "v1",
            "other",
            "namespaces",
            "finalize",
            "other",
            &["namespaces", "other", "finalize"],
        ),
        (
            "PUT",
            "/api/v1/namespaces/other/status",
            "update",
            "api",
            "",
            "v1",
            "other",
            "namespaces",
            "status",
            "other",
            &["namespaces", "other", "status"],
        ),
        (
            "PATCH",
            "/api/v1/namespaces/other/pods/foo",
            "patch",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
            &["pods", "foo"],
        ),
        (
            "DELETE",
            "/api/v1/namespaces/other/pods/foo",
            "delete",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
            &["pods", "foo"],
        ),
        (
            "POST",
            "/api/v1/namespaces/other/pods",
            "create",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "DELETE",
            "/api/v1/nodes",
            "deletecollection",
            "api",
            "",
            "v1",
            "",
            "nodes",
            "",
            "",
            &["nodes"],
        ),
        (
            "DELETE",
            "/api/v1/namespaces",
            "deletecollection",
            "api",
            "",
            "v1",
            "",
            "namespaces",
            "",
            "",
            &["namespaces"],
        ),
        (
            "DELETE",
            "/api/v1/namespaces/other/pods",
            "deletecollection",
            "api",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "DELETE",
            "/apis/extensions/v1/namespaces/other/pods",
            "deletecollection",
            "apis",
            "extensions",
            "v1",
            "other",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "POST",
            "/apis/extensions/v1/namespaces/other/pods",
            "create",
            "apis",
            "extensions",
            "v1",
            "other",
            "pods",
            "",
            "",
            &["pods"],
        ),
        (
            "POST",
            "/apis/extensions/v1beta3/namespaces/other/pods",
            "create",
            "apis",
            "extensions",
            "v1beta3",
            "other",
            "pods",
            "",
            "",
            &["pods"],
        ),
    ];

    #[test]
    fn api_request_info_table() {
        for &(method, url, verb, prefix, group, version, ns, resource, sub, name, parts) in SUCCESS
        {
            let info = parse(method, url).unwrap();
            assert!(info.is_resource_request, "{url}");
            assert_eq!(
                (
                    info.verb.as_str(),
                    info.api_prefix.as_str(),
                    info.api_group.as_str(),
                    info.api_version.as_str(),
                    info.namespace.as_str(),
                    info.resource.as_str(),
                    info.subresource.as_str(),
                    info.name.as_str()
                ),
                (verb, prefix, group, version, ns, resource, sub, name),
                "{method} {url}"
            );
            assert_eq!(info.parts, parts, "{url}");
        }
    }

    #[test]
    fn non_resource_requests() {
        let cases = [
            ("/", false),
            ("/api/version/", false),
            ("/apis/group/version/", false),
            ("/badprefix/version/resource", false),
            ("/apis/version/resource", false),
            ("/api/version/resource", true),
            ("/apis/group/version/resource/name/subresource", true),
            ("/api/version/resource/name/subresource", true),
            ("/apis/batch/v1/job", true),
            ("/apis/batch/v1/job/foo", true),
            ("/apis/batch/v1/job/foo/scale", true),
            ("/not-api/version/resource", false),
            ("/apis/extensions/v1beta1", false),
            ("/apis/extensions/v1beta1/", false),
            ("/api/version", false),
            ("/api", false),
            ("", false),
        ];
        for (url, resource) in cases {
            let info = parse("GET", url).unwrap();
            assert_eq!(info.is_resource_request, resource, "{url}");
            if !resource {
                assert_eq!(info.verb, "get");
                assert_eq!(info.path, url);
            }
        }
        assert_eq!(parse("POST", "/healthz").unwrap().verb, "post");
    }

    #[test]
    fn field_selector_table() {
        // TestFieldSelectorParsing.
        let cases = [
            ("/apis/group/version/resource", "", "list"),
            (
                "/apis/group/version/resource?fieldSelector=metadata.name=name1",
                "name1",
                "list",
            ),
            (
                "/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1",
                "name1",
                "watch",
            ),
            (
                "/apis/group/version/resource?fieldSelector=foo=bar",
                "",
                "list",
            ),
            (
                "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo",
                "",
                "list",
            ),
            (
                "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=true",
                "",
                "watch",
            ),
            (
                "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=false",
                "",
                "list",
            ),
            (
                "/apis/group/version/resource?fieldSelector=metadata.name=foo&fieldSelector=metadata.name=bar&labelSelector=foo=bar&labelSelector=foo=baz",
                "foo",
                "list",
            ),
            (
                "/apis/group/version/resource/name?fieldSelector=foo=bar&labelSelector=foo=bar",
                "name",
                "get",
            ),
            (
                "/apis/group/version/watch/resource/name?fieldSelector=metadata.name=foo",
                "name",
                "watch",
            ),
            // Ours: `==`, `!=`, invalid names, undecodable options.
            ("/api/v1/pods?fieldSelector=metadata.name==a", "a", "list"),
            ("/api/v1/pods?fieldSelector=metadata.name!=a", "", "list"),
            ("/api/v1/pods?fieldSelector=metadata.name%3D..", "", "list"),
            (
                "/api/v1/pods?fieldSelector=metadata.name%3Da%25b",
                "",
                "list",
            ),
            (
                "/api/v1/pods?fieldSelector=metadata.name%3Da&limit=x",
                "",
                "list",
            ),
            (
                "/api/v1/pods?fieldSelector=metadata.name%3Da&labelSelector=a+in+()",
                "",
                "list",
            ),
            (
                "/api/v1/pods?fieldSelector=metadata.name%3Da&labelSelector=app+in+(x,y),!b",
                "a",
                "list",
            ),
            (
                "/api/v1/pods?fieldSelector=metadata.name%3Da&watch=",
                "a",
                "watch",
            ),
            ("/api/v1/pods?watch=FALSE", "", "list"),
        ];
        for (url, name, verb) in cases {
            let info = parse("GET", url).unwrap();
            assert_eq!(
                (info.name.as_str(), info.verb.as_str()),
                (name, verb),
                "{url}"
            );
        }
        let del = parse("DELETE", "/api/v1/pods?fieldSelector=metadata.name%3Da").unwrap();
        assert_eq!(del.verb, "deletecollection", "only GET reads the selector");
    }

    #[test]
    fn api_prefix_as_new_request_info() {
        // Set once the path has three segments under a known prefix, before
        // the group check (`/apis/apps/v1` stays a non-resource request).
        for (url, prefix, resource) in [
            ("/apis/apps/v1", "apis", false),
            ("/apis/apps/v1/", "apis", false),
            ("/apis/extensions/v1beta1", "apis", false),
            ("/api/v1/pods", "api", true),
            ("/apis/apps/v1/deployments", "apis", true),
            ("/api/v1", "", false),
            ("/apis/apps", "", false),
            ("/healthz/etcd/x", "", false),
            ("/", "", false),
        ] {
            let info = parse("GET", url).unwrap();
            assert_eq!(
                (info.api_prefix.as_str(), info.is_resource_request),
                (prefix, resource),
                "{url}"
            );
        }
        let info = parse("GET", "/apis/apps/v1").unwrap();
        assert_eq!(
            (info.api_group.as_str(), info.api_version.as_str()),
            ("", "")
        );
    }

    #[test]
    fn non_ascii_never_panics() {
        // Field selectors and paths with multi-byte characters in every
        // position the parser looks at.
        for url in [
            "/api/v1/pods?fieldSelector=é",
            "/api/v1/pods?fieldSelector=%C3%A9",
            "/api/v1/pods?fieldSelector=é=é",
            "/api/v1/pods?fieldSelector=metadata.name=é",
            "/api/v1/pods?fieldSelector=\\é!=x",
            "/api/v1/pods?fieldSelector=日本=語,名前",
            "/api/v1/pods?labelSelector=é+in+(ü)",
            "/api/v1/namespaces/é/pods/ü/ß",
            "https://é/api/v1/pods",
            "https://日本",
            "/apis/日本/v1/🦀",
            "/api/v1/pods?watch=É",
            "/api/v1/pods/%FF%FE",
            "/api/v1/pods/%C3",
            "/api/v1/pods/a%é",
        ] {
            for method in ["GET", "DELETE", "É"] {
                let _ = parse(method, url);
            }
        }
        let info = parse("GET", "/api/v1/pods?fieldSelector=é").unwrap();
        assert_eq!((info.verb.as_str(), info.name.as_str()), ("list", ""));
        let info = parse("GET", "/api/v1/pods?fieldSelector=metadata.name=é").unwrap();
        assert_eq!(info.name, "é");
        assert!(matches!(
            parse("GET", "/api/v1/pods/a%é"),
            Err(RequestInfoError::ParseUrlEscape { .. })
        ));
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse("GET", "/api/v1/watch").unwrap_err().to_string(),
            "unable to determine kind and namespace from url, /api/v1/watch"
        );
        assert!(parse("GET", "/apis/apps/v1/proxy").is_err());
        assert!(matches!(
            parse("GET", "/api/v1/pods/a%zz"),
            Err(RequestInfoError::ParseUrlEscape { .. })
        ));
    }

    #[test]
    fn absolute_urls_and_escapes() {
        let info = parse("GET", "https://10.0.0.1:6443/api/v1/namespaces/a%2Fb/pods").unwrap();
        assert_eq!(info.path, "/api/v1/namespaces/a/b/pods");
        assert_eq!(info.namespace, "a");
        assert_eq!(info.resource, "b");
        let info = parse(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        )
        .unwrap();
        assert_eq!(
            (
                info.api_group.as_str(),
                info.resource.as_str(),
                info.subresource.as_str()
            ),
            ("apps", "deployments", "scale")
        );
        assert_eq!(parse("OPTIONS", "/api/v1/pods/x").unwrap().verb, "");
    }

    #[test]
    fn label_selectors() {
        for ok in [
            "",
            "a",
            "a=b",
            "a==b",
            "a!=b",
            "!a",
            "a in (b, c)",
            "a notin (b)",
            "a>1",
            "x/y=z",
            "a=",
            "a,b=c",
        ] {
            assert!(label_selector_is_valid(ok), "{ok}");
        }
        for bad in ["a in ()", "a in b", "=b", "a=b=c", "a>x", "-a", "a,", "a b"] {
            assert!(!label_selector_is_valid(bad), "{bad}");
        }
    }
}
