//! Path-suffix patterns: parsing the user's text into the kernel's
//! [`PathPattern`] and matching in userspace the same way the kernel does
//! (used by tests, and to explain a match).
//!
//! A pattern is a path suffix, optionally with one `*` that stands for
//! exactly one whole, non-empty path component:
//! `/serviceaccount/token`, `volumes/kubernetes.io~projected/*/token`.

use monitor_common::{MAX_PATTERNS, MAX_SLASHES, NAME_LEN, PATTERN_PART_LEN, PathPattern};

/// The suffixes watched when none are configured: the in-container mount
/// path and the kubelet's host layout for projected and secret volumes.
pub const DEFAULT_SUFFIXES: [&str; 3] = [
    "/serviceaccount/token",
    "volumes/kubernetes.io~projected/*/token",
    "kubernetes.io~secret/*/token",
];

/// Why a pattern cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    /// Empty pattern, or nothing after the `*`.
    #[error("path pattern {0:?} is empty or ends with `*`; it must end with a file name")]
    EmptyPattern(String),
    /// More than one `*`.
    #[error("path pattern {0:?} has more than one `*`")]
    CountStars(String),
    /// A `*` that is not a whole path component.
    #[error("path pattern {0:?}: `*` must be a whole path component (`.../*/...`)")]
    PlaceStar(String),
    /// A part longer than the kernel compares.
    #[error("path pattern {pattern:?}: the part {part:?} is longer than {max} bytes")]
    MeasurePart {
        /// The pattern.
        pattern: String,
        /// The part that is too long.
        part: String,
        /// The limit.
        max: usize,
    },
    /// A `*` followed by more components than the kernel indexes.
    #[error("path pattern {pattern:?}: at most {max} components may follow the `*`")]
    CountComponents {
        /// The pattern.
        pattern: String,
        /// The limit.
        max: usize,
    },
    /// More patterns than the kernel map holds.
    #[error("{given} path patterns given; at most {max} are supported")]
    CountPatterns {
        /// How many were given.
        given: usize,
        /// The limit.
        max: u32,
    },
}

fn part(pattern: &str, text: &str) -> Result<([u8; PATTERN_PART_LEN], u32), PatternError> {
    if text.len() > PATTERN_PART_LEN {
        return Err(PatternError::MeasurePart {
            pattern: pattern.to_owned(),
            part: text.to_owned(),
            max: PATTERN_PART_LEN,
        });
    }
    let mut bytes = [0; PATTERN_PART_LEN];
    bytes[..text.len()].copy_from_slice(text.as_bytes());
    Ok((bytes, text.len() as u32))
}

/// Parses one pattern.
///
/// # Errors
/// A [`PatternError`] naming the pattern and what is wrong with it.
pub fn compile(pattern: &str) -> Result<PathPattern, PatternError> {
    let stars = pattern.matches('*').count();
    if stars > 1 {
        return Err(PatternError::CountStars(pattern.to_owned()));
    }
    let (head, tail, has_star) = match pattern.split_once('*') {
        None => ("", pattern, 0),
        Some((head, tail)) => {
            if !(head.is_empty() || head.ends_with('/')) || !tail.starts_with('/') {
                return Err(PatternError::PlaceStar(pattern.to_owned()));
            }
            (head, tail, 1)
        }
    };
    if tail.is_empty() || tail == "/" || tail.ends_with('/') {
        return Err(PatternError::EmptyPattern(pattern.to_owned()));
    }
    let tail_slashes = tail.matches('/').count();
    if has_star == 1 && tail_slashes >= MAX_SLASHES {
        return Err(PatternError::CountComponents {
            pattern: pattern.to_owned(),
            max: MAX_SLASHES - 1,
        });
    }
    let name = tail.rsplit('/').next().unwrap_or(tail);
    if name.len() >= NAME_LEN {
        return Err(PatternError::MeasurePart {
            pattern: pattern.to_owned(),
            part: name.to_owned(),
            max: NAME_LEN - 1,
        });
    }
    let (head_bytes, head_len) = part(pattern, head)?;
    let (tail_bytes, tail_len) = part(pattern, tail)?;
    Ok(PathPattern {
        head_len,
        tail_len,
        has_star,
        tail_slashes: tail_slashes as u32,
        name_len: name.len() as u32,
        _pad: 0,
        head: head_bytes,
        tail: tail_bytes,
    })
}

/// Parses a whole list, checking it fits the kernel map.
///
/// # Errors
/// The first bad pattern, or too many patterns.
pub fn compile_all<S: AsRef<str>>(patterns: &[S]) -> Result<Vec<PathPattern>, PatternError> {
    if patterns.len() > MAX_PATTERNS as usize {
        return Err(PatternError::CountPatterns {
            given: patterns.len(),
            max: MAX_PATTERNS,
        });
    }
    patterns.iter().map(|p| compile(p.as_ref())).collect()
}

/// Whether a file named `name` opened through `path` matches `pattern`,
/// exactly as the kernel decides: the file's own name must be the pattern's
/// last component, and the caller's path must end as the pattern says.
#[must_use]
pub fn matches_file(name: &[u8], path: &[u8], pattern: &PathPattern) -> bool {
    let tail = &pattern.tail[..pattern.tail_len as usize];
    tail.ends_with(name)
        && tail.len() > name.len()
        && tail[tail.len() - name.len() - 1] == b'/'
        && matches(path, pattern)
}

/// Whether `path` matches `pattern` (the path part of [`matches_file`]).
#[must_use]
pub fn matches(path: &[u8], pattern: &PathPattern) -> bool {
    let tail = &pattern.tail[..pattern.tail_len as usize];
    if tail.is_empty() || !path.ends_with(tail) {
        return false;
    }
    if pattern.has_star == 0 {
        return true;
    }
    let component_end = path.len() - tail.len();
    let start = path[..component_end]
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |i| i + 1);
    let head = &pattern.head[..pattern.head_len as usize];
    start < component_end && path[..start].ends_with(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_patterns_match_container_and_host_paths() {
        let patterns = compile_all(&DEFAULT_SUFFIXES).unwrap();
        let any = |p: &str| patterns.iter().any(|pat| matches(p.as_bytes(), pat));
        assert!(any("/var/run/secrets/kubernetes.io/serviceaccount/token"));
        assert!(any("/run/secrets/kubernetes.io/serviceaccount/token"));
        assert!(any(
            "/var/lib/kubelet/pods/6b3f/volumes/kubernetes.io~projected/kube-api-access-x2x/token"
        ));
        assert!(any(
            "/var/lib/kubelet/pods/6b3f/volumes/kubernetes.io~secret/default-token-abc/token"
        ));
        assert!(!any(
            "/var/lib/kubelet/pods/6b3f/volumes/kubernetes.io~projected//token"
        ));
        assert!(!any(
            "/var/lib/kubelet/pods/6b3f/volumes/kubernetes.io~projected/a/b/token"
        ));
        assert!(!any("/etc/passwd"));
        assert!(!any("token"));
        assert!(!any("/serviceaccount/token.bak"));
    }

    #[test]
    fn the_opened_file_must_carry_the_patterns_last_name() {
        let p = compile("/serviceaccount/token").unwrap();
        let path = b"/var/run/secrets/kubernetes.io/serviceaccount/token";
        assert!(matches_file(b"token", path, &p));
        assert!(
            !matches_file(b"other", path, &p),
            "a symlink to a file of another name"
        );
        assert!(!matches_file(b"oken", path, &p));
    }

    #[test]
    fn star_at_the_start() {
        let p = compile("*/token").unwrap();
        assert!(matches(b"abc/token", &p));
        assert!(matches(b"/x/abc/token", &p));
        assert!(!matches(b"/token", &p));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert_eq!(
            compile("").unwrap_err(),
            PatternError::EmptyPattern(String::new())
        );
        assert!(matches!(
            compile("a/*/b/*/c"),
            Err(PatternError::CountStars(_))
        ));
        assert!(matches!(
            compile("a/x*/token"),
            Err(PatternError::PlaceStar(_))
        ));
        assert!(matches!(compile("a/*"), Err(PatternError::PlaceStar(_))));
        assert!(matches!(
            compile("dir/"),
            Err(PatternError::EmptyPattern(_))
        ));
        let long = format!("/{}", "a".repeat(70));
        assert!(matches!(
            compile(&long),
            Err(PatternError::MeasurePart { .. })
        ));
        let many = vec!["/a"; 9];
        assert!(matches!(
            compile_all(&many),
            Err(PatternError::CountPatterns { given: 9, .. })
        ));
    }
}
