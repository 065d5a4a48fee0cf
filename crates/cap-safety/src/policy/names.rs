//! Case-insensitive name comparison: [`normalize`] and [`NameSet`].
//!
//! Tenants, capabilities, risk tags, requirements, pack ids, actor ids, actor types and
//! MCP names compare ignoring case and surrounding spaces. Policy values are normalized
//! once when the policy is compiled; request values are normalized per evaluation, which
//! borrows (no allocation) when the value is already lowercase and trimmed.

use std::borrow::Cow;
use std::collections::HashSet;

/// Trimmed and lowercased. Borrows when nothing changes.
#[inline]
pub(crate) fn normalize(s: &str) -> Cow<'_, str> {
    let t = s.trim();
    if t.is_ascii() {
        if t.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(t.to_ascii_lowercase())
        } else {
            Cow::Borrowed(t)
        }
    } else if t.chars().any(char::is_uppercase) {
        Cow::Owned(t.to_lowercase())
    } else {
        Cow::Borrowed(t)
    }
}

/// Above this many entries a hash set beats a linear scan.
const SCAN_LIMIT: usize = 8;

/// A set of normalized names.
#[derive(Debug, Clone, Default)]
pub(crate) struct NameSet {
    small: Vec<Box<str>>,
    large: Option<HashSet<Box<str>>>,
}

impl NameSet {
    /// Builds a set from raw policy values (normalized here; empty values dropped).
    pub(crate) fn new<'a>(values: impl IntoIterator<Item = &'a String>) -> Self {
        let mut small: Vec<Box<str>> = Vec::new();
        for v in values {
            let n = normalize(v);
            if !n.is_empty() && !small.iter().any(|s| **s == *n) {
                small.push(n.into_owned().into_boxed_str());
            }
        }
        if small.len() > SCAN_LIMIT {
            NameSet {
                small: Vec::new(),
                large: Some(small.into_iter().collect()),
            }
        } else {
            NameSet { small, large: None }
        }
    }

    /// Whether the set holds `normalized` (which must already be normalized).
    #[inline]
    pub(crate) fn contains(&self, normalized: &str) -> bool {
        match &self.large {
            Some(set) => set.contains(normalized),
            None => self.small.iter().any(|s| **s == *normalized),
        }
    }

    /// Whether the set holds the raw value `value` (normalized here).
    #[inline]
    pub(crate) fn contains_raw(&self, value: &str) -> bool {
        !value.trim().is_empty() && self.contains(&normalize(value))
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.small.is_empty() && self.large.as_ref().is_none_or(HashSet::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_borrows_when_possible() {
        assert!(matches!(normalize("acme"), Cow::Borrowed("acme")));
        assert!(matches!(normalize(" acme "), Cow::Borrowed("acme")));
        assert_eq!(normalize(" ACme "), "acme");
        assert_eq!(normalize("ÄRGER"), "ärger");
    }

    #[test]
    fn small_and_large_sets_agree() {
        let few: Vec<String> = vec!["A".into(), " b ".into(), "".into()];
        let many: Vec<String> = (0..20).map(|i| format!("Name{i}")).collect();
        let s = NameSet::new(&few);
        assert!(
            s.contains_raw("a")
                && s.contains_raw(" B")
                && !s.contains_raw("")
                && !s.contains_raw("c")
        );
        let l = NameSet::new(&many);
        assert!(l.large.is_some());
        assert!(l.contains_raw("NAME7") && !l.contains_raw("name20"));
        assert!(NameSet::new(&Vec::<String>::new()).is_empty());
    }
}
