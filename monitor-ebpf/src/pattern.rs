//! Path-suffix matching, written for the verifier: every loop has a
//! constant bound, and positions computed from the path are kept in the
//! per-CPU scratch map and read back, so the verifier treats them as
//! unknown-but-bounded values instead of exploring each one separately.
//!
//! A pattern is `tail` alone (a plain suffix), or `head` `*` `tail` where
//! `*` is exactly one non-empty path component. One backward pass records
//! where the path's last slashes are; a `*` pattern then finds its
//! component from the slash count of its tail, without another scan.

use monitor_common::{
    MAX_PATTERNS, MAX_SLASHES, NAME_LEN, PATH_LEN, PATTERN_PART_LEN, PathPattern, PathScratch,
};

use crate::maps::PATTERNS;

const PATH_MASK: usize = PATH_LEN - 1;
const PART_MASK: usize = PATTERN_PART_LEN - 1;

/// Whether `path[end - len .. end]` equals `part[..len]`.
#[inline(always)]
fn ends_with(path: &[u8; PATH_LEN], end: usize, part: &[u8; PATTERN_PART_LEN], len: usize) -> bool {
    if len > PATTERN_PART_LEN || len > end || end > PATH_LEN {
        return false;
    }
    let start = end - len;
    let mut i = 0;
    while i < PATTERN_PART_LEN {
        if i >= len {
            return true;
        }
        if path[(start + i) & PATH_MASK] != part[i & PART_MASK] {
            return false;
        }
        i += 1;
    }
    true
}

/// Records in `scratch.slashes` where the last [`MAX_SLASHES`] slashes of
/// the path are, counting from the end.
#[inline(always)]
fn index_slashes(scratch: *mut PathScratch) {
    // SAFETY (all accesses): `scratch` is this CPU's map slot, valid for the
    // program run. The counters go through memory with volatile accesses on
    // purpose: kept in a register they would be a distinct constant on every
    // path out of the loop, and the verifier would explore each one.
    unsafe {
        let count_ptr = &raw mut (*scratch).slash_count;
        core::ptr::write_volatile(count_ptr, 0);
        let len = core::ptr::read_volatile(&raw const (*scratch).len) as usize;
        let mut k = 0;
        while k < PATH_LEN {
            if k >= len {
                break;
            }
            let index = (len - 1 - k) & PATH_MASK;
            if (*scratch).path[index] == b'/' {
                let count = core::ptr::read_volatile(count_ptr) as usize;
                if count >= MAX_SLASHES {
                    break;
                }
                core::ptr::write_volatile(
                    &raw mut (*scratch).slashes[count & (MAX_SLASHES - 1)],
                    index as u32,
                );
                core::ptr::write_volatile(count_ptr, count as u32 + 1);
            }
            k += 1;
        }
    }
}

/// Whether the scratch path matches `pattern`.
#[inline(always)]
fn matches(scratch: *const PathScratch, pattern: &PathPattern) -> bool {
    // SAFETY: as in `index_slashes`; the values are re-read from the map.
    let s = unsafe { &*scratch };
    // SAFETY: as above.
    let len = unsafe { core::ptr::read_volatile(&raw const (*scratch).len) } as usize;
    let tail_len = pattern.tail_len as usize;
    if tail_len == 0 || !ends_with(&s.path, len, &pattern.tail, tail_len) {
        return false;
    }
    if pattern.has_star == 0 {
        return true;
    }
    // The tail starts with `/`, the slash numbered `tail_slashes - 1` from
    // the end; the `*` component starts after the next one (or at 0).
    let before = pattern.tail_slashes as usize;
    if before >= MAX_SLASHES {
        return false;
    }
    // SAFETY: as above.
    let count = unsafe { core::ptr::read_volatile(&raw const (*scratch).slash_count) } as usize;
    let start = if before < count {
        // SAFETY: as above.
        let slash = unsafe {
            core::ptr::read_volatile(&raw const (*scratch).slashes[before & (MAX_SLASHES - 1)])
        };
        slash as usize + 1
    } else if count < MAX_SLASHES {
        0
    } else {
        // More slashes than were indexed: the component is not known.
        return false;
    };
    start < len - tail_len && ends_with(&s.path, start, &pattern.head, pattern.head_len as usize)
}

/// Whether the scratch path (`path` and `len` filled in) matches any
/// configured pattern.
#[inline(always)]
pub fn matches_any(scratch: *mut PathScratch) -> bool {
    // SAFETY: as in `index_slashes`.
    let len = unsafe { (*scratch).len } as usize;
    if len == 0 || len >= PATH_LEN {
        // Empty, or cut short: the suffix is not there to compare.
        return false;
    }
    index_slashes(scratch);
    let mut index = 0;
    while index < MAX_PATTERNS {
        if let Some(pattern) = PATTERNS.get(index)
            && matches(scratch, pattern)
        {
            return true;
        }
        index += 1;
    }
    false
}

/// Whether the opened file's own `name` (NUL-padded) equals the last
/// component of some pattern: the cheap test that decides whether the
/// caller's path is worth reading at all.
#[inline(always)]
pub fn name_may_match(name: &[u8; NAME_LEN]) -> bool {
    let mut index = 0;
    while index < MAX_PATTERNS {
        if let Some(pattern) = PATTERNS.get(index) {
            let name_len = pattern.name_len as usize;
            let tail_len = pattern.tail_len as usize;
            if name_len > 0
                && name_len < NAME_LEN
                && name_len <= tail_len
                && tail_len <= PATTERN_PART_LEN
            {
                let start = tail_len - name_len;
                let mut same = name[name_len & (NAME_LEN - 1)] == 0;
                let mut i = 0;
                while same && i < NAME_LEN {
                    if i >= name_len {
                        break;
                    }
                    same = name[i & (NAME_LEN - 1)] == pattern.tail[(start + i) & PART_MASK];
                    i += 1;
                }
                if same {
                    return true;
                }
            }
        }
        index += 1;
    }
    false
}
