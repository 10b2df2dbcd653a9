//! Which environment variables reach a cache key.
//!
//! A variable is kept when it matches an include pattern and no exclude pattern (exclude wins).
//! cuenv's own settings never reach a key, whatever the lists say: two machines with different
//! cache directories or remotes must still share hits.

use std::collections::BTreeMap;

/// Patterns for cuenv's own settings, always excluded. The default include list has `CUENV_*`,
/// so without this a cache dir override would change every key.
pub const RESERVED_ENV_PATTERNS: &[&str] = &[
    "CUENV_CACHE_*",
    "CUENV_CACHE",
    "CUENV_REMOTE_CACHE*",
    "CUENV_ENHANCED_CACHE",
    "CUENV_PERSISTENT_CACHE",
];

/// An include/exclude filter over variable names. `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl EnvFilter {
    /// A filter from include and exclude patterns.
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        EnvFilter { include: include.to_vec(), exclude: exclude.to_vec() }
    }

    /// Whether `name` passes the filter.
    pub fn keeps(&self, name: &str) -> bool {
        self.include.iter().any(|pattern| wildcard_match(pattern, name))
            && !self.exclude.iter().any(|pattern| wildcard_match(pattern, name))
            && !RESERVED_ENV_PATTERNS.iter().any(|pattern| wildcard_match(pattern, name))
    }

    /// The variables of `env` that pass.
    pub fn filter(&self, env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        env.iter()
            .filter(|(name, _)| self.keeps(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }
}

/// Matches `name` against `pattern`, where `*` stands for any (possibly empty) run of characters.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: an exact match.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("PATH", "PATH"));
        assert!(!wildcard_match("PATH", "PATHS"));
        assert!(wildcard_match("SSH_*", "SSH_AUTH_SOCK"));
        assert!(wildcard_match("*_TOKEN", "GITHUB_TOKEN"));
        assert!(!wildcard_match("*_TOKEN", "GITHUB_TOKENS"));
        assert!(wildcard_match("A*B*C", "AxxBxxC"));
        assert!(!wildcard_match("A*B*C", "AxxCxxB"));
        assert!(wildcard_match("AB*B", "ABB"));
        assert!(!wildcard_match("AB*BB", "ABB"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn exclude_wins_and_reserved_names_never_pass() {
        let filter = EnvFilter::new(&strings(&["CUENV_*", "NODE_*"]), &strings(&["NODE_SECRET"]));
        assert!(filter.keeps("CUENV_PROFILE"));
        assert!(filter.keeps("NODE_ENV"));
        assert!(!filter.keeps("NODE_SECRET"));
        assert!(!filter.keeps("HOME"));
        for reserved in [
            "CUENV_CACHE_DIR",
            "CUENV_CACHE_MODE",
            "CUENV_CACHE_CONFIG",
            "CUENV_REMOTE_CACHE_URL",
            "CUENV_REMOTE_CACHE",
            "CUENV_ENHANCED_CACHE",
            "CUENV_PERSISTENT_CACHE",
        ] {
            assert!(!filter.keeps(reserved), "{reserved}");
        }
    }
}
