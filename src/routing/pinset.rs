//! A pin's allowlisted header values as one set (sized for the cost curve): every value back to
//! back in one byte arena, their end offsets, and an open-addressing hash table over them.
//!
//! A `HashSet<Vec<u8>>` made one allocation per value (plus a `String` per value while reading):
//! 100 000 pins cost 7 MiB of a worker VM's linear memory and up to 722 ms per configuration
//! push. Here the values take three allocations whatever their number, and a lookup is still
//! O(1): one hash of the header value, then a short linear probe (the table is at most half full).
//!
//! A leaf module, free of serde: [`PinList`] collects the values as they are read (the
//! configuration's deserializer appends each string to it, see `stage::PinValues`), and
//! [`PinList::into_set`] drops the duplicates and builds the table, sized once.

/// An empty slot of the table.
const EMPTY: u32 = u32::MAX;

/// The most values a list holds: every table slot and offset fits a `u32` (with `EMPTY` left
/// free), and twice the count (the table's size) cannot overflow a wasm32 `usize`.
const MAX_VALUES: usize = 1 << 30;

/// The end offset of a value of `len` bytes appended to an arena of `arena` bytes holding
/// `count` values; `None` past [`MAX_VALUES`] values or `u32` offsets.
fn next_end(arena: usize, len: usize, count: usize) -> Option<u32> {
    let end = u32::try_from(arena.checked_add(len)?).ok()?;
    (count < MAX_VALUES).then_some(end)
}

/// Values in the order they were added, duplicates included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinList {
    /// The values, back to back.
    arena: Vec<u8>,
    /// Where each value ends in `arena`; value `i` starts where value `i - 1` ends (0 for the
    /// first).
    ends: Vec<u32>,
}

impl PinList {
    /// Appends `value`. False (and nothing appended) when the values would pass 4 GiB in all,
    /// beyond what a `u32` offset addresses, or number more than 2^30.
    pub fn push(&mut self, value: &[u8]) -> bool {
        let Some(end) = next_end(self.arena.len(), value.len(), self.ends.len()) else {
            return false;
        };
        self.arena.extend_from_slice(value);
        self.ends.push(end);
        true
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Value `i`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let start = match i.checked_sub(1) {
            Some(before) => *self.ends.get(before)? as usize,
            None => 0,
        };
        let end = *self.ends.get(i)? as usize;
        self.arena.get(start..end)
    }

    /// The bytes held: arena, offsets (capacity, not length: what the allocator gave).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + 4 * self.ends.capacity()
    }

    /// The set of these values: duplicates dropped (the first occurrence kept, the arena
    /// compacted in place) and the hash table built.
    pub fn into_set(mut self) -> PinSet {
        // The growth slack goes back before the table is allocated (a lower peak: linear memory
        // never shrinks); again at the end, when duplicates were dropped.
        self.arena.shrink_to_fit();
        self.ends.shrink_to_fit();
        let n = self.ends.len();
        // At most half full: a probe always ends at an empty slot, and is short on average.
        let size = n.saturating_mul(2).max(2).next_power_of_two();
        let mask = size - 1;
        let mut table = vec![EMPTY; size];
        // Values `..kept` (bytes `..write`) are the distinct ones so far; value `i` (bytes
        // `start..end`) the one read now. `kept <= i`, so the offsets still to read are intact.
        let mut kept = 0;
        let mut write = 0;
        let mut start = 0;
        for i in 0..n {
            let Some(&end) = self.ends.get(i) else { break };
            let end = end as usize;
            let value = self.arena.get(start..end).unwrap_or_default();
            let mut slot = hash(value) as usize & mask;
            let mut duplicate = false;
            // Bounded by the table's size; the loop ends at an empty slot well before.
            for _ in 0..size {
                match table.get(slot) {
                    Some(&EMPTY) | None => break,
                    Some(&j) => {
                        if self.get(j as usize) == Some(value) {
                            duplicate = true;
                            break;
                        }
                    }
                }
                slot = (slot + 1) & mask;
            }
            if !duplicate {
                self.arena.copy_within(start..end, write);
                write += end - start;
                if let (Some(e), Some(t)) = (self.ends.get_mut(kept), table.get_mut(slot)) {
                    // `write` ≤ `end`, which fitted a u32; `kept` < MAX_VALUES.
                    *e = write as u32;
                    *t = kept as u32;
                }
                kept += 1;
            }
            start = end;
        }
        self.arena.truncate(write);
        self.arena.shrink_to_fit();
        self.ends.truncate(kept);
        self.ends.shrink_to_fit();
        PinSet { list: self, table }
    }
}

/// Distinct values, with a lookup in O(1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinSet {
    /// The distinct values, in the order first added.
    list: PinList,
    /// Power-of-two size, at least twice the number of values: the index of a value in `list`,
    /// or [`EMPTY`]. Linear probing from the value's hash.
    table: Vec<u32>,
}

impl PinSet {
    /// True when `value` is one of the values.
    pub fn contains(&self, value: &[u8]) -> bool {
        let size = self.table.len();
        let mask = size.wrapping_sub(1);
        let mut slot = hash(value) as usize & mask;
        for _ in 0..size {
            match self.table.get(slot) {
                Some(&EMPTY) | None => return false,
                Some(&j) => {
                    if self.list.get(j as usize) == Some(value) {
                        return true;
                    }
                }
            }
            slot = (slot + 1) & mask;
        }
        false
    }

    /// The number of distinct values.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Value `i` (in the order first added).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.list.get(i)
    }

    /// The values, in the order first added.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }

    /// The bytes held: arena, offsets and table.
    pub fn heap_bytes(&self) -> usize {
        self.list.heap_bytes() + 4 * self.table.capacity()
    }

    /// The longest probe any value takes (1: found at its own slot). Tests and the cost note.
    pub fn longest_probe(&self) -> usize {
        let mask = self.table.len().wrapping_sub(1);
        let mut longest = 0;
        for (slot, &j) in self.table.iter().enumerate() {
            if let Some(value) = self.list.get(j as usize) {
                let home = hash(value) as usize & mask;
                longest = longest.max((slot.wrapping_sub(home) & mask) + 1);
            }
        }
        longest
    }
}

/// FNV-1a over the bytes, then a multiply-xorshift finish (FNV-1a alone leaves the low bits, the
/// table index, weakly mixed for keys that differ only in their last bytes). Not keyed: the
/// values come from the configuration, and requests can only probe, never insert.
fn hash(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn set(values: &[&[u8]]) -> PinSet {
        let mut list = PinList::default();
        for v in values {
            assert!(list.push(v));
        }
        list.into_set()
    }

    #[test]
    fn membership_table() {
        // (values, present, absent)
        type Case<'a> = (&'a [&'a [u8]], &'a [&'a [u8]], &'a [&'a [u8]]);
        let cases: &[Case] = &[
            (&[], &[], &[b"", b"a"]),
            (&[b"m1"], &[b"m1"], &[b"", b"m", b"m10", b"M1", b"m1 "]),
            (
                &[b"a", b"ab", b"abc"],
                &[b"a", b"ab", b"abc"],
                &[b"", b"b", b"abcd", b"bc", b"c"],
            ),
            (&[b"abc", b"ab", b"a"], &[b"a", b"ab", b"abc"], &[b"abcd"]),
            (
                &[b"\0", b"\0\0", b"\xff\xfe", b"a\0b"],
                &[b"\0", b"\0\0", b"\xff\xfe", b"a\0b"],
                &[b"", b"\0\0\0", b"\xff", b"a", b"a\0"],
            ),
            (&[b""], &[b""], &[b"\0"]),
            (
                &[b"x", b"y", b"x", b"x", b"y", b"z"],
                &[b"x", b"y", b"z"],
                &[b"xx", b"xy"],
            ),
        ];
        for (values, present, absent) in cases {
            let s = set(values);
            for v in *present {
                assert!(s.contains(v), "{values:?} should contain {v:?}");
            }
            for v in *absent {
                assert!(!s.contains(v), "{values:?} should not contain {v:?}");
            }
            let distinct: HashSet<&[u8]> = values.iter().copied().collect();
            assert_eq!(s.len(), distinct.len(), "{values:?}");
            assert_eq!(s.iter().count(), s.len());
        }
    }

    #[test]
    fn the_table_is_never_empty_nor_more_than_half_full() {
        for n in [0usize, 1, 2, 3, 4, 5, 7, 8, 9, 1000, 1024, 1025] {
            let mut list = PinList::default();
            for i in 0..n {
                assert!(list.push(format!("v{i}").as_bytes()));
            }
            let s = list.into_set();
            assert!(s.table.len().is_power_of_two() && s.table.len() >= 2, "{n}");
            assert!(2 * s.len() <= s.table.len(), "{n}: {}", s.table.len());
            assert!(s.table.contains(&EMPTY));
            assert!(!s.contains(b"absent"));
        }
        // A default (never built) set holds nothing and looks up without a table.
        let s = PinSet::default();
        assert!(s.is_empty() && !s.contains(b"") && !s.contains(b"a"));
        assert_eq!(s.longest_probe(), 0);
    }

    #[test]
    fn duplicates_are_kept_once_first_order() {
        let s = set(&[b"b", b"a", b"b", b"c", b"a", b"b"]);
        let got: Vec<&[u8]> = s.iter().collect();
        assert_eq!(got, [&b"b"[..], b"a", b"c"]);
        assert_eq!(s.list.arena, b"bac");
        assert_eq!(s.list.ends, [1, 2, 3]);
    }

    #[test]
    fn colliding_values_probe_past_each_other() {
        // Values sharing a home slot in a table of 64: found, and so are the values they push
        // along, whatever the order; absent values with that home are not.
        let size = 64;
        let mut home0: Vec<Vec<u8>> = (0u32..)
            .map(|i| i.to_string().into_bytes())
            .filter(|v| (hash(v) as usize).is_multiple_of(size))
            .take(12)
            .collect();
        let absent = home0.split_off(8);
        let others: Vec<Vec<u8>> = (0..24).map(|i| format!("o{i}").into_bytes()).collect();
        let mut all: Vec<&[u8]> = home0.iter().map(Vec::as_slice).collect();
        all.extend(others.iter().map(Vec::as_slice));
        for order in [all.clone(), all.iter().rev().copied().collect()] {
            let s = set(&order);
            assert_eq!(s.table.len(), size);
            assert!(s.longest_probe() >= home0.len(), "the home-0 values chain");
            for v in &order {
                assert!(s.contains(v), "{v:?}");
            }
            for v in &absent {
                assert!(!s.contains(v), "{v:?}");
            }
        }
        // The probe wraps around the end of the table.
        let mut wrap: Vec<Vec<u8>> = (0u32..)
            .map(|i| format!("w{i}").into_bytes())
            .filter(|v| hash(v) as usize % 4 == 3)
            .take(3)
            .collect();
        let missing = wrap.pop().unwrap();
        let s = set(&[&wrap[0], &wrap[1]]);
        assert_eq!(s.table.len(), 4);
        assert!(s.contains(&wrap[0]) && s.contains(&wrap[1]) && !s.contains(&missing));
    }

    #[test]
    fn past_u32_offsets_is_refused() {
        let max = u32::MAX as usize;
        for (arena, len, count, want) in [
            (0, 0, 0, Some(0)),
            (0, 3, 0, Some(3)),
            (10, 5, 2, Some(15)),
            (max - 5, 5, 7, Some(u32::MAX)),
            (max - 5, 6, 7, None),
            (max, 1, 1, None),
            (usize::MAX, 1, 1, None),
            (10, 5, MAX_VALUES - 1, Some(15)),
            (10, 5, MAX_VALUES, None),
        ] {
            assert_eq!(
                next_end(arena, len, count),
                want,
                "{arena} + {len}, {count} values"
            );
        }
    }

    /// The cost curve's largest allowlist: 100 000 values like `merchant-000123`.
    #[test]
    fn cost_of_100_000_merchants() {
        let mut list = PinList::default();
        for i in 0..100_000 {
            assert!(list.push(format!("merchant-{i:06}").as_bytes()));
        }
        let s = list.into_set();
        assert_eq!(s.len(), 100_000);
        let (arena, ends, table) = (
            s.list.arena.capacity(),
            4 * s.list.ends.capacity(),
            4 * s.table.capacity(),
        );
        assert_eq!((arena, ends, table), (1_500_000, 400_000, 1 << 20));
        assert_eq!(s.heap_bytes(), 2_948_576);
        assert!(s.longest_probe() <= 32, "{}", s.longest_probe());
        assert!(s.contains(b"merchant-099999") && !s.contains(b"merchant-100000"));
    }

    proptest! {
        #[test]
        fn contains_is_a_hash_set(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..200),
            queries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..100),
        ) {
            let mut list = PinList::default();
            for v in &values {
                prop_assert!(list.push(v));
            }
            prop_assert_eq!(list.len(), values.len());
            let s = list.into_set();
            let model: HashSet<Vec<u8>> = values.iter().cloned().collect();
            prop_assert_eq!(s.len(), model.len());
            for q in values.iter().chain(&queries) {
                prop_assert_eq!(s.contains(q), model.contains(q), "{:?}", q);
            }
            let back: HashSet<Vec<u8>> = s.iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(back, model);
        }
    }
}
