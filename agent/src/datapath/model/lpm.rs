//! A longest-prefix-match table over raw key bytes, answering as `BPF_MAP_TYPE_LPM_TRIE`
//! does: prefixes count bits from the first key byte, most significant bit first.
use std::collections::{BTreeMap, HashMap};

/// Entries grouped by prefix length: a lookup tries each length once, longest first.
#[derive(Debug, Clone)]
pub(super) struct Lpm<V> {
    by_len: BTreeMap<u32, HashMap<Vec<u8>, V>>,
}

impl<V> Default for Lpm<V> {
    fn default() -> Self {
        Self {
            by_len: BTreeMap::new(),
        }
    }
}

impl<V: Copy> Lpm<V> {
    pub(super) fn insert(&mut self, prefix_len: u32, key: Vec<u8>, value: V) {
        let key = masked(&key, prefix_len);
        self.by_len
            .entry(prefix_len)
            .or_default()
            .insert(key, value);
    }

    pub(super) fn lookup(&self, key: &[u8]) -> Option<V> {
        self.by_len
            .iter()
            .rev()
            .filter(|(&len, _)| len as usize <= 8 * key.len())
            .find_map(|(&len, entries)| entries.get(&masked(key, len)).copied())
    }
}

/// `key` with every bit after the first `prefix_len` cleared.
pub(super) fn masked(key: &[u8], prefix_len: u32) -> Vec<u8> {
    key.iter()
        .enumerate()
        .map(|(i, &byte)| {
            let kept = (prefix_len as usize).saturating_sub(8 * i).min(8);
            if kept == 0 {
                0
            } else {
                byte & (0xffu8 << (8 - kept))
            }
        })
        .collect()
}

/// Whether the first `prefix_len` bits of `a` and `b` are equal (a brute-force reference).
#[cfg(test)]
pub(super) fn prefix_matches(a: &[u8], b: &[u8], prefix_len: u32) -> bool {
    let (whole, rest) = ((prefix_len / 8) as usize, prefix_len % 8);
    a[..whole] == b[..whole] && (rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_matching_prefix_wins() {
        let mut lpm = Lpm::default();
        lpm.insert(8, vec![10, 0, 0, 0], 'a');
        lpm.insert(24, vec![10, 1, 2, 99], 'b');
        lpm.insert(0, vec![0, 0, 0, 0], 'z');
        assert_eq!(lpm.lookup(&[10, 1, 2, 3]), Some('b'));
        assert_eq!(lpm.lookup(&[10, 1, 3, 3]), Some('a'));
        assert_eq!(lpm.lookup(&[11, 1, 2, 3]), Some('z'));
        lpm.insert(24, vec![10, 1, 2, 0], 'c');
        assert_eq!(lpm.lookup(&[10, 1, 2, 3]), Some('c'));
    }

    #[test]
    fn masking_keeps_the_prefix_bits_only() {
        assert_eq!(masked(&[0xff, 0xff, 0xff], 12), vec![0xff, 0xf0, 0]);
        assert_eq!(masked(&[0xff, 0xff], 16), vec![0xff, 0xff]);
        assert_eq!(masked(&[0xff], 0), vec![0]);
        assert!(prefix_matches(&[0xab, 0xc0], &[0xab, 0xff], 10));
        assert!(!prefix_matches(&[0xab, 0xc0], &[0xab, 0x80], 10));
    }
}
