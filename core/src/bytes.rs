//! Byte-string equality for the replay's hot paths.
//!
//! `a == b` on slices calls libc's `memcmp` for any length the compiler
//! cannot see, and on this project's machines glibc picks an AVX-512
//! variant whose masked loads made those calls (a dozen per replayed
//! event, on member names, map keys and rule fields, mostly under 40
//! bytes) about a sixth of the replay's time in `perf`. [`same`] compares
//! 8-byte words inline instead, and [`Name`] looks string keys up in a
//! [`NameMap`] with it.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// A hash map with string keys (`String`, `Box<str>`) for the hot paths:
/// look keys up with [`Name`].
pub type NameMap<K, V> = hashbrown::HashMap<K, V, rustc_hash::FxBuildHasher>;

/// A string to look a [`NameMap`] key up by: it hashes as `str` does (so
/// as `String` and `Box<str>` keys do) and compares with [`same`].
#[derive(Debug, Clone, Copy)]
pub struct Name<'a>(pub &'a str);

impl Hash for Name<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl<K: Borrow<str>> hashbrown::Equivalent<K> for Name<'_> {
    fn equivalent(&self, key: &K) -> bool {
        same_str(self.0, key.borrow())
    }
}

/// Whether `a` and `b` hold the same bytes.
#[inline(always)]
#[must_use]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n >= 8 {
        // Whole words, then the last word again (overlapping) for the tail.
        let mut i = 0;
        while i + 8 <= n {
            if word(a, i) != word(b, i) {
                return false;
            }
            i += 8;
        }
        return i == n || word(a, n - 8) == word(b, n - 8);
    }
    if n >= 4 {
        return half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// [`same`] on strings.
#[inline(always)]
#[must_use]
pub fn same_str(a: &str, b: &str) -> bool {
    same(a.as_bytes(), b.as_bytes())
}

#[inline(always)]
fn word(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_ne_bytes(w)
}

#[inline(always)]
fn half(s: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[at..at + 4]);
    u32::from_ne_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_slice_equality_at_every_length_and_position() {
        for n in 0..48usize {
            let a: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            assert!(same(&a, &a.clone()), "length {n}");
            assert!(!same(&a, &a[..n.saturating_sub(1)]) || n == 0, "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x80;
                assert!(!same(&a, &b), "length {n}, differs at {at}");
                b[at] ^= 0x81;
                assert!(!same(&a, &b), "length {n}, differs at {at}");
            }
        }
        assert!(same_str("é", "é"));
        assert!(!same_str(
            "authentication.kubernetes.io/pod-name",
            "authentication.kubernetes.io/pod-uid"
        ));
        assert!(!same_str(
            "authentication.kubernetes.io/pod-name",
            "authentication.kubernetes.io/node-uid"
        ));
    }

    #[test]
    fn names_find_string_and_boxed_keys() {
        let mut map: NameMap<String, u32> = NameMap::default();
        let mut boxed: NameMap<Box<str>, u32> = NameMap::default();
        for (i, k) in ["", "a", "system:serviceaccount:ns-41:sa-5", "é"]
            .into_iter()
            .enumerate()
        {
            map.insert(k.to_owned(), u32::try_from(i).unwrap());
            boxed.insert(k.into(), u32::try_from(i).unwrap());
        }
        for (i, k) in ["", "a", "system:serviceaccount:ns-41:sa-5", "é"]
            .into_iter()
            .enumerate()
        {
            assert_eq!(map.get(&Name(k)), Some(&u32::try_from(i).unwrap()), "{k:?}");
            assert_eq!(
                boxed.get(&Name(k)),
                Some(&u32::try_from(i).unwrap()),
                "{k:?}"
            );
        }
        assert_eq!(map.get(&Name("system:serviceaccount:ns-41:sa-6")), None);
        assert_eq!(boxed.get(&Name("b")), None);
    }
}
