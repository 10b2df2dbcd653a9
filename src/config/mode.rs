//! The two enumerated settings of the cache config, [`CacheMode`] and [`EvictionPolicy`].
//!
//! They are spelled the same way in the JSON file, in environment variables and in the printed
//! effective config (`read-write`, `size-based`), so parsing and printing live next to each other
//! here, with one error type whose message lists the valid spellings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value that is not one of the spellings of an enumerated setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`; valid values: {}", valid.join(", "))]
pub struct UnknownValueError {
    /// What was being parsed, e.g. `cache mode`.
    pub kind: &'static str,
    /// The text that was given.
    pub value: String,
    /// Every accepted spelling.
    pub valid: &'static [&'static str],
}

/// Finds `text` among `table`'s spellings: surrounding whitespace and ASCII case are ignored and
/// `_` is accepted for `-` (`READ_WRITE` reads as `read-write`).
fn lookup<T: Copy>(
    kind: &'static str,
    text: &str,
    table: &[(&'static str, T)],
    valid: &'static [&'static str],
) -> Result<T, UnknownValueError> {
    let wanted = text.trim().replace('_', "-");
    table
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&wanted))
        .map(|(_, value)| *value)
        .ok_or_else(|| UnknownValueError { kind, value: text.to_owned(), valid })
}

/// Whether the cache is consulted before running a task and/or filled after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// The cache is neither read nor written.
    Off,
    /// Cached results are replayed, but new results are not stored.
    Read,
    /// Tasks always run and their results are stored.
    Write,
    /// Cached results are replayed and new results are stored.
    #[default]
    ReadWrite,
}

impl CacheMode {
    /// Every spelling, in declaration order.
    pub const NAMES: &'static [&'static str] = &["off", "read", "write", "read-write"];
    const TABLE: [(&'static str, CacheMode); 4] = [
        ("off", CacheMode::Off),
        ("read", CacheMode::Read),
        ("write", CacheMode::Write),
        ("read-write", CacheMode::ReadWrite),
    ];

    /// Whether cached results may be replayed (`read` or `read-write`).
    pub fn reads(self) -> bool {
        matches!(self, CacheMode::Read | CacheMode::ReadWrite)
    }

    /// Whether new results are stored (`write` or `read-write`).
    pub fn writes(self) -> bool {
        matches!(self, CacheMode::Write | CacheMode::ReadWrite)
    }

    /// The spelling used in files and environment variables.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Off => "off",
            CacheMode::Read => "read",
            CacheMode::Write => "write",
            CacheMode::ReadWrite => "read-write",
        }
    }
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CacheMode {
    type Err = UnknownValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        lookup("cache mode", text, &Self::TABLE, Self::NAMES)
    }
}

/// Which entries the local cache drops first when it exceeds `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPolicy {
    /// Least recently used first.
    #[default]
    Lru,
    /// Least frequently used first.
    Lfu,
    /// Oldest first, regardless of use.
    Fifo,
    /// Largest first.
    SizeBased,
}

impl EvictionPolicy {
    /// Every spelling, in declaration order.
    pub const NAMES: &'static [&'static str] = &["lru", "lfu", "fifo", "size-based"];
    const TABLE: [(&'static str, EvictionPolicy); 4] = [
        ("lru", EvictionPolicy::Lru),
        ("lfu", EvictionPolicy::Lfu),
        ("fifo", EvictionPolicy::Fifo),
        ("size-based", EvictionPolicy::SizeBased),
    ];

    /// The spelling used in files and environment variables.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionPolicy::Lru => "lru",
            EvictionPolicy::Lfu => "lfu",
            EvictionPolicy::Fifo => "fifo",
            EvictionPolicy::SizeBased => "size-based",
        }
    }
}

impl fmt::Display for EvictionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EvictionPolicy {
    type Err = UnknownValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        lookup("eviction policy", text, &Self::TABLE, Self::NAMES)
    }
}

impl From<EvictionPolicy> for cuenv_actors::disk::EvictionPolicy {
    fn from(policy: EvictionPolicy) -> Self {
        use cuenv_actors::disk::EvictionPolicy as Disk;
        match policy {
            EvictionPolicy::Lru => Disk::Lru,
            EvictionPolicy::Lfu => Disk::Lfu,
            EvictionPolicy::Fifo => Disk::Fifo,
            EvictionPolicy::SizeBased => Disk::SizeBased,
        }
    }
}
