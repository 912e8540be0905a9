//! Sizes and ages as people write them in flags and config files (`4GiB`, `512M`, `30d`,
//! `12h`), parsed into bytes and [`Duration`]s, and sizes shown back the same way, so that a
//! limit's refusal names the value its flag was given.

use std::time::Duration;

/// Binary multiples: what `K`, `KiB`, `M`, `MiB`, ... stand for.
const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("k", 1 << 10),
    ("kib", 1 << 10),
    ("m", 1 << 20),
    ("mib", 1 << 20),
    ("g", 1 << 30),
    ("gib", 1 << 30),
    ("t", 1 << 40),
    ("tib", 1 << 40),
];

/// Parses a size: a whole number of bytes, optionally followed by a binary unit (`K`, `M`,
/// `G`, `T`, or `KiB`, `MiB`, `GiB`, `TiB`; any case, with or without a space): `4GiB`,
/// `512M`, `100000`. A clap value parser.
///
/// # Errors
/// Not a number, an unknown unit, or a size over `u64::MAX` bytes; the message shows the form.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let how = "write a size such as 4GiB, 512MiB or 100000 (bytes)";
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; {how}"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let Some((_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!("{text:?} has an unknown unit; {how}"));
    };
    number
        .checked_mul(*scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `bytes` for a person: `4 GiB`, `5.1 GiB`, `300 bytes`; whole multiples are shown without
/// a fraction so that a default reads as it was written.
pub fn format_bytes(bytes: u64) -> String {
    let scaled = UNITS
        .iter()
        .rev()
        .filter(|(name, _)| name.ends_with("ib"))
        .find(|(_, scale)| bytes >= *scale);
    match scaled {
        Some((name, scale)) => {
            let unit = match *name {
                "kib" => "KiB",
                "mib" => "MiB",
                "gib" => "GiB",
                _ => "TiB",
            };
            if bytes.is_multiple_of(*scale) {
                format!("{} {unit}", bytes / scale)
            } else {
                format!("{:.1} {unit}", bytes as f64 / *scale as f64)
            }
        }
        None if bytes == 1 => "1 byte".to_string(),
        None => format!("{bytes} bytes"),
    }
}

/// Parses an age or a timeout: a whole number followed by `s`, `m`, `h`, `d` or `w` (seconds,
/// minutes, hours, days, weeks): `30d`, `12h`, `90s`. A clap value parser.
///
/// # Errors
/// Not a number, no unit or an unknown one, or an overflow; the message shows the form.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let how = "write a duration such as 30d, 12h, 90m or 45s";
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; {how}"))?;
    let scale = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        "w" => 7 * 24 * 60 * 60,
        "" => return Err(format!("{text:?} has no unit; {how}")),
        _ => return Err(format!("{text:?} has an unknown unit; {how}")),
    };
    number
        .checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// `duration` for a person, in the largest unit that divides it: `30d`, `36h`, `90s`.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    for (unit, scale) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= scale && secs.is_multiple_of(scale) {
            return format!("{}{unit}", secs / scale);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_show_back_the_same_way() {
        for (text, bytes) in [
            ("0", 0),
            ("100000", 100_000),
            ("4GiB", 4 << 30),
            ("4 gib", 4 << 30),
            ("4G", 4 << 30),
            ("512MiB", 512 << 20),
            ("16GiB", 16 << 30),
            ("3k", 3 << 10),
            ("2TiB", 2 << 40),
            ("7b", 7),
        ] {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
        }
        for bad in ["", "GiB", "4 GB", "-1", "1.5GiB", "99999999999T"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(format_bytes(4 << 30), "4 GiB");
        assert_eq!(format_bytes((51 << 30) / 10), "5.1 GiB");
        assert_eq!(format_bytes((4 << 30) + (1 << 29)), "4.5 GiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(300), "300 bytes");
        assert_eq!(format_bytes(1), "1 byte");
    }

    #[test]
    fn durations_need_a_unit_and_show_in_the_largest_that_divides() {
        for (text, secs) in [
            ("30d", 30 * 86_400),
            ("12h", 43_200),
            ("90m", 5_400),
            ("45s", 45),
            ("2w", 1_209_600),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in ["30", "", "d", "1y", "1.5d", "-1d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(format_duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(format_duration(Duration::from_secs(14 * 86_400)), "2w");
        assert_eq!(format_duration(Duration::from_secs(36 * 3_600)), "36h");
        assert_eq!(format_duration(Duration::from_secs(61)), "61s");
    }
}
