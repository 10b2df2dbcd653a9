//! Durations (`"90s"`) as users write them in `cacheConfig`. Sizes use the global config's
//! parser ([`crate::config::parse_size`]), so `maxSize` and `max_size` accept the same spellings.

/// Seconds in `text`: a whole number with an optional unit `s`, `m` or `h` (no unit means
/// seconds).
pub(super) fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: expected whole seconds, or a number with unit s, m or h"
        )
    };
    let (number, unit) = split_number(text).ok_or_else(bad)?;
    let multiplier: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("duration {text:?} is too large"))
}

/// The leading whole number of `text` and the (trimmed) unit after it.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let number = text.get(..digits)?.parse().ok()?;
    Some((number, text.get(digits..)?.trim_start()))
}
