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

/// Names end to end in one string, each with a value, found by hash: an
/// append-only map for keys the replay meets on most events (subjects,
/// tokens, call kinds). Its names sit together in memory, so a lookup reads
/// a slot and bytes near the other names, where a `String` key is a heap
/// allocation of its own that `perf` showed missing the cache on most
/// lookups.
#[derive(Debug, Clone)]
pub struct NameTable<V> {
    names: String,
    slots: hashbrown::HashTable<NameSlot<V>>,
}

#[derive(Debug, Clone)]
struct NameSlot<V> {
    at: usize,
    len: usize,
    value: V,
}

impl<V> Default for NameTable<V> {
    fn default() -> Self {
        Self {
            names: String::new(),
            slots: hashbrown::HashTable::new(),
        }
    }
}

impl<V> NameTable<V> {
    /// The value of `name`.
    #[inline]
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&V> {
        let names = &self.names;
        self.slots
            .find(hash_name(name), |s| {
                same(slot_bytes(names, s), name.as_bytes())
            })
            .map(|s| &s.value)
    }

    /// The value of `name`, to change.
    #[inline]
    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        let names = &self.names;
        self.slots
            .find_mut(hash_name(name), |s| {
                same(slot_bytes(names, s), name.as_bytes())
            })
            .map(|s| &mut s.value)
    }

    /// The value of `name`, made with `value` when `name` is new (one
    /// probe of the table either way).
    pub fn get_or_insert_with(&mut self, name: &str, value: impl FnOnce() -> V) -> &mut V {
        let names = &self.names;
        let entry = self.slots.entry(
            hash_name(name),
            |s| same(slot_bytes(names, s), name.as_bytes()),
            |s| hash_name(slot_name(names, s)),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(slot) => &mut slot.into_mut().value,
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let slot = NameSlot {
                    at: self.names.len(),
                    len: name.len(),
                    value: value(),
                };
                self.names.push_str(name);
                &mut vacant.insert(slot).into_mut().value
            }
        }
    }

    /// How many names.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every name and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.slots
            .iter()
            .map(|s| (slot_name(&self.names, s), &s.value))
    }

    /// The values, in no particular order.
    pub fn into_values(self) -> impl Iterator<Item = V> {
        self.slots.into_iter().map(|s| s.value)
    }
}

fn slot_name<'n, V>(names: &'n str, s: &NameSlot<V>) -> &'n str {
    names.get(s.at..s.at + s.len).unwrap_or_default()
}

/// [`slot_name`]'s bytes, for comparing: no character-boundary checks.
#[inline(always)]
fn slot_bytes<'n, V>(names: &'n str, s: &NameSlot<V>) -> &'n [u8] {
    names.as_bytes().get(s.at..s.at + s.len).unwrap_or_default()
}

/// A string of at most `N` bytes kept inline (in the struct that holds
/// it, not in a heap allocation of its own), or nothing: for the replay's
/// per-call state, which must sit in a cache line or two.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct InlineStr<const N: usize> {
    /// The length; 0 when empty.
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Default for InlineStr<N> {
    fn default() -> Self {
        Self {
            len: 0,
            bytes: [0; N],
        }
    }
}

impl<const N: usize> InlineStr<N> {
    /// Holds `s` when it is not empty and fits; otherwise holds nothing
    /// and returns false.
    pub fn set(&mut self, s: &str) -> bool {
        match (u8::try_from(s.len()), self.bytes.get_mut(..s.len())) {
            (Ok(n), Some(slot)) if n > 0 => {
                slot.copy_from_slice(s.as_bytes());
                self.len = n;
                true
            }
            _ => {
                self.len = 0;
                false
            }
        }
    }

    /// Holds nothing.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The string held, if any.
    #[must_use]
    pub fn get(&self) -> Option<&str> {
        let held = self.bytes.get(..usize::from(self.len))?;
        // Whole `&str`s are copied in, so this is always UTF-8.
        std::str::from_utf8(held).ok().filter(|s| !s.is_empty())
    }

    /// Whether it holds `s` (never when it holds nothing).
    #[inline]
    #[must_use]
    pub fn is(&self, s: &str) -> bool {
        let n = usize::from(self.len);
        n != 0
            && self
                .bytes
                .get(..n)
                .is_some_and(|held| same(held, s.as_bytes()))
    }
}

/// The hash [`NameTable`] files names under.
#[inline]
#[must_use]
pub fn hash_name(name: &str) -> u64 {
    use std::hash::BuildHasher as _;
    rustc_hash::FxBuildHasher.hash_one(name)
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
    fn an_inline_string_holds_what_fits_and_nothing_else() {
        let mut s = InlineStr::<4>::default();
        assert_eq!(s.get(), None);
        assert!(!s.is(""));
        assert!(s.set("10.0"));
        assert_eq!(s.get(), Some("10.0"));
        assert!(s.is("10.0") && !s.is("10.1") && !s.is("10."));
        assert!(!s.set("10.0.0"), "too long");
        assert_eq!(s.get(), None);
        assert!(!s.is("10.0"));
        assert!(s.set("é"));
        assert_eq!(s.get(), Some("é"));
        assert!(!s.set(""));
        assert_eq!(s.get(), None);
        assert!(s.set("ab"));
        s.clear();
        assert!(!s.is("ab"));
    }

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
    fn a_name_table_keeps_every_name_apart() {
        let mut t: NameTable<usize> = NameTable::default();
        assert!(t.is_empty());
        let names: Vec<String> = (0..2_000)
            .map(|i| match i % 4 {
                0 => format!("system:serviceaccount:ns-{i}:sa"),
                1 => format!("é{i}"),
                2 => "x".repeat(i % 70),
                _ => i.to_string(),
            })
            .collect();
        let mut distinct = std::collections::HashMap::new();
        for name in &names {
            let next = distinct.len();
            let want = *distinct.entry(name.clone()).or_insert(next);
            let got = *t.get_or_insert_with(name, || next);
            assert_eq!(got, want, "{name:?}");
        }
        assert_eq!(t.len(), distinct.len());
        for (name, want) in &distinct {
            assert_eq!(t.get(name), Some(want), "{name:?}");
            *t.get_mut(name).unwrap() += 1;
        }
        for (name, v) in t.iter() {
            assert_eq!(*v, distinct[name] + 1, "{name:?}");
        }
        assert_eq!(t.get("absent"), None);
        let mut values: Vec<usize> = t.into_values().collect();
        values.sort_unstable();
        assert_eq!(values, (1..=distinct.len()).collect::<Vec<_>>());
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
