//! Target names -> the kernel's target indices (`TARGET_SCHED`, one byte
//! of `TGID_TARGET` per process). A name keeps its index while it lives
//! (its counters only go up); a forgotten name's index is zeroed by the
//! caller and handed to the next new name. Pure.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug)]
pub struct Indices {
    by_name: BTreeMap<String, u8>,
    free: BTreeSet<u8>,
}

impl Indices {
    /// `cap` indices, 0..cap (at most 255, what a byte names).
    pub fn new(cap: u32) -> Self {
        let cap = cap.min(255) as u8;
        Indices {
            by_name: BTreeMap::new(),
            free: (0..cap).collect(),
        }
    }

    /// The index of `name`, given one now if it has none; None when every
    /// index is taken.
    pub fn assign(&mut self, name: &str) -> Option<u8> {
        if let Some(i) = self.by_name.get(name) {
            return Some(*i);
        }
        let i = self.free.pop_first()?;
        self.by_name.insert(name.to_string(), i);
        Some(i)
    }

    /// Forget `name`: its index, to be zeroed before it is reused.
    pub fn release(&mut self, name: &str) -> Option<u8> {
        let i = self.by_name.remove(name)?;
        self.free.insert(i);
        Some(i)
    }

    /// Every name with its index.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u8)> {
        self.by_name.iter().map(|(n, i)| (n.as_str(), *i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_index_and_freed_ones_are_reused() {
        let mut ix = Indices::new(3);
        assert_eq!(ix.assign("a"), Some(0));
        assert_eq!(ix.assign("b"), Some(1));
        assert_eq!(ix.assign("a"), Some(0));
        assert_eq!(ix.assign("c"), Some(2));
        assert_eq!(ix.assign("d"), None);
        assert_eq!(ix.release("b"), Some(1));
        assert_eq!(ix.release("b"), None);
        assert_eq!(ix.assign("d"), Some(1));
        let all: Vec<(&str, u8)> = ix.iter().collect();
        assert_eq!(all, vec![("a", 0), ("c", 2), ("d", 1)]);
    }

    #[test]
    fn at_most_a_byte() {
        let mut ix = Indices::new(1000);
        for k in 0..255 {
            assert!(ix.assign(&k.to_string()).is_some());
        }
        assert_eq!(ix.assign("one more"), None);
    }
}
