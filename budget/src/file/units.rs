//! Durations (`30ms`, `1.5s`) and sizes (`100KB`, `20KiB`) as written in budget files.

use std::time::Duration;

use serde::Deserialize;

/// A scalar as written in a budget file, before it is read as a duration, a size,
/// a count or a flag.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Scalar {
    Bool(bool),
    Int(u64),
    Float(f64),
    Str(String),
}

impl Scalar {
    fn describe(&self) -> String {
        match self {
            Scalar::Bool(b) => format!("the boolean `{b}`"),
            Scalar::Int(i) => format!("the number `{i}`"),
            Scalar::Float(f) => format!("the number `{f}`"),
            Scalar::Str(s) => format!("`{s}`"),
        }
    }
}

/// A latency: a string with a unit, read by `humantime` (`30ms`, `1.5s`, `250us`).
pub(crate) fn duration(value: &Scalar) -> Result<Duration, String> {
    match value {
        Scalar::Str(s) => {
            let d = humantime::parse_duration(s.trim())
                .map_err(|e| format!("invalid duration `{s}` ({e}); write e.g. `30ms` or `1.5s`"))?;
            if d.is_zero() {
                return Err(format!("a latency budget of `{s}` can never be met"));
            }
            Ok(d)
        }
        Scalar::Int(_) | Scalar::Float(_) => {
            Err(format!("{} has no unit; write a duration with its unit, e.g. `30ms` or `1.5s`", value.describe()))
        }
        Scalar::Bool(_) => Err(format!("expected a duration such as `30ms`, found {}", value.describe())),
    }
}

/// A size in bytes. A bare number is bytes; `KB`/`MB`/`GB` are decimal (1000),
/// `KiB`/`MiB`/`GiB` binary (1024), as in the SI/IEC standards. A lone lower-case
/// `b` (bits) is refused; `B` and `bytes` are bytes.
pub(crate) fn size(value: &Scalar) -> Result<u64, String> {
    match value {
        Scalar::Int(n) => Ok(*n),
        Scalar::Str(s) => parse_size(s),
        Scalar::Float(_) | Scalar::Bool(_) => {
            Err(format!("expected a size such as `100KB` or `20KiB`, found {}", value.describe()))
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit {
        "" | "B" | "bytes" | "byte" => 1,
        "KB" | "kB" | "kb" | "Kb" => 1_000,
        "MB" | "mb" => 1_000_000,
        "GB" | "gb" => 1_000_000_000,
        "KiB" | "kib" | "KIB" => 1 << 10,
        "MiB" | "mib" | "MIB" => 1 << 20,
        "GiB" | "gib" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size `{text}`: unknown unit `{unit}`; use B, KB/MB/GB (1000) or KiB/MiB/GiB (1024)"
            ));
        }
    };
    if number.is_empty() {
        return Err(format!("invalid size `{text}`: no number"));
    }
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(multiplier).ok_or_else(|| format!("size `{text}` is too large"));
    }
    let f: f64 = number.parse().map_err(|_| format!("invalid size `{text}`: `{number}` is not a number"))?;
    let bytes = f * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size `{text}` is too large"));
    }
    if bytes.fract() != 0.0 {
        return Err(format!("size `{text}` is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// A non-negative count (`db_queries: 2`).
pub(crate) fn count(value: &Scalar) -> Result<u64, String> {
    match value {
        Scalar::Int(n) => Ok(*n),
        _ => Err(format!("expected a whole number, found {}", value.describe())),
    }
}

/// `true` or `false`.
pub(crate) fn flag(value: &Scalar) -> Result<bool, String> {
    match value {
        Scalar::Bool(b) => Ok(*b),
        _ => Err(format!("expected `true` or `false`, found {}", value.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Scalar {
        Scalar::Str(v.to_owned())
    }

    #[test]
    fn durations() {
        assert_eq!(duration(&s("30ms")), Ok(Duration::from_millis(30)));
        assert_eq!(duration(&s("1.5s")), Ok(Duration::from_millis(1500)));
        assert_eq!(duration(&s("250us")), Ok(Duration::from_micros(250)));
        assert!(duration(&Scalar::Int(30)).unwrap_err().contains("no unit"));
        assert!(duration(&s("0ms")).unwrap_err().contains("never be met"));
        assert!(duration(&s("10 parsecs")).unwrap_err().contains("invalid duration `10 parsecs`"));
    }

    #[test]
    fn sizes_decimal_and_binary() {
        assert_eq!(size(&s("100KB")), Ok(100_000));
        assert_eq!(size(&s("100kB")), Ok(100_000));
        assert_eq!(size(&s("20KiB")), Ok(20_480));
        assert_eq!(size(&s("1.5MB")), Ok(1_500_000));
        assert_eq!(size(&s("2 MiB")), Ok(2 * 1024 * 1024));
        assert_eq!(size(&s("512")), Ok(512));
        assert_eq!(size(&s("512B")), Ok(512));
        assert_eq!(size(&Scalar::Int(7)), Ok(7));
        assert!(size(&s("10XB")).unwrap_err().contains("unknown unit `XB`"));
        assert!(size(&s("KB")).unwrap_err().contains("no number"));
        assert!(size(&s("0.0001KB")).unwrap_err().contains("whole number"));
        assert!(size(&s("99999999999999GB")).unwrap_err().contains("too large"));
    }

    #[test]
    fn counts_and_flags() {
        assert_eq!(count(&Scalar::Int(2)), Ok(2));
        assert!(count(&s("two")).is_err());
        assert!(count(&Scalar::Float(1.5)).is_err());
        assert_eq!(flag(&Scalar::Bool(true)), Ok(true));
        assert!(flag(&s("yes")).unwrap_err().contains("`true` or `false`"));
    }
}
