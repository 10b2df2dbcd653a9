//! Byte sizes as people write them (`10GiB`, `500 MB`, `1.5G`) and as cuenv prints them.
//!
//! `max_size`, `storage.*` and `CUENV_CACHE_MAX_SIZE` all accept these, so a user never has to
//! count zeros. Decimal units (`KB`, `MB`, ...) are powers of 1000; binary units (`KiB`, ...) and
//! single letters (`K`, `M`, ...) are powers of 1024, matching what `du -h` and most tools mean.

/// One kibibyte (1024 bytes).
pub const KIB: u64 = 1 << 10;
/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// One gibibyte.
pub const GIB: u64 = 1 << 30;
/// One tebibyte.
pub const TIB: u64 = 1 << 40;

/// Most decimal places accepted in a size; more would overflow the exact arithmetic.
const MAX_FRACTION_DIGITS: usize = 18;

/// Units as lowercase spellings and their multipliers.
const UNITS: [(&str, u64); 21] = [
    ("b", 1),
    ("k", KIB),
    ("kib", KIB),
    ("kb", 1000),
    ("m", MIB),
    ("mib", MIB),
    ("mb", 1000 * 1000),
    ("g", GIB),
    ("gib", GIB),
    ("gb", 1000 * 1000 * 1000),
    ("t", TIB),
    ("tib", TIB),
    ("tb", 1000 * 1000 * 1000 * 1000),
    ("p", 1 << 50),
    ("pib", 1 << 50),
    ("pb", 1000 * 1000 * 1000 * 1000 * 1000),
    ("e", 1 << 60),
    ("eib", 1 << 60),
    ("eb", 1000 * 1000 * 1000 * 1000 * 1000 * 1000),
    ("byte", 1),
    ("bytes", 1),
];

/// Parses a size such as `1048576`, `500MB`, `10 GiB` or `1.5G` into bytes.
///
/// Units are case-insensitive and may be separated from the number by spaces. A fraction needs a
/// unit and is rounded down to whole bytes (`0.5K` is 512). Empty, negative, malformed and
/// overflowing sizes and unknown units are rejected with a message that quotes the input.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty size; expected a number of bytes or a size like \"10GiB\"".to_owned());
    }
    if trimmed.starts_with('-') {
        return Err(format!("negative size {trimmed:?}; sizes must be zero or more"));
    }
    let split = trimmed.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let (whole, fraction) = split_number(number).ok_or_else(|| {
        format!(
            "invalid size {trimmed:?}; expected a number followed by an optional unit like \"GiB\""
        )
    })?;
    let unit = unit.trim();
    let multiplier = unit_multiplier(unit)?;
    if !fraction.is_empty() && unit.is_empty() {
        return Err(format!(
            "invalid size {trimmed:?}; a fraction needs a unit, such as \"{number}GiB\""
        ));
    }
    scale(whole, fraction, multiplier)
        .ok_or_else(|| format!("size {trimmed:?} is too large; the maximum is {} bytes", u64::MAX))
}

/// Splits `12.5` into `("12", "5")`; `None` unless it is digits with at most one `.` followed by
/// at most [`MAX_FRACTION_DIGITS`] digits.
fn split_number(number: &str) -> Option<(&str, &str)> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
        Some(_) => return None,
        None => (number, ""),
    };
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let valid = !whole.is_empty()
        && digits_only(whole)
        && digits_only(fraction)
        && fraction.len() <= MAX_FRACTION_DIGITS;
    valid.then_some((whole, fraction))
}

/// The multiplier of a unit spelling (empty means bytes).
fn unit_multiplier(unit: &str) -> Result<u64, String> {
    if unit.is_empty() {
        return Ok(1);
    }
    let lower = unit.to_ascii_lowercase();
    UNITS.iter().find(|(name, _)| *name == lower).map(|(_, multiplier)| *multiplier).ok_or_else(
        || {
            format!(
                "unknown size unit {unit:?}; valid units: B, KB, MB, GB, TB (powers of 1000), \
             KiB, MiB, GiB, TiB or K, M, G, T (powers of 1024)"
            )
        },
    )
}

/// `whole.fraction * multiplier`, rounded down; `None` on overflow of `u64`.
fn scale(whole: &str, fraction: &str, multiplier: u64) -> Option<u64> {
    let whole: u128 = whole.parse::<u64>().ok()?.into();
    let mut bytes = whole.checked_mul(multiplier.into())?;
    if !fraction.is_empty() {
        let numerator: u128 = fraction.parse::<u64>().ok()?.into();
        let denominator = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        bytes = bytes.checked_add(numerator.checked_mul(multiplier.into())? / denominator)?;
    }
    u64::try_from(bytes).ok()
}

/// Prints a byte count with a binary unit and one decimal place: `512 B`, `1.5 KiB`, `10.0 GiB`.
pub fn format_size(bytes: u64) -> String {
    const NAMES: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < KIB {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / KIB as f64;
    let mut index = 0;
    // Move up while the value would print as 1024.0 or more, so 1 MiB - 1 byte reads `1.0 MiB`.
    while value >= 1023.95 && index + 1 < NAMES.len() {
        value /= 1024.0;
        index += 1;
    }
    format!("{value:.1} {}", NAMES[index])
}
