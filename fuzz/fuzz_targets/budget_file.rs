//! The budget file parser (`brisk_budget::Budgets`, YAML / TOML / JSON). The
//! input is given to each of the three parsers. No panic; an error names a
//! line inside the text (when it names one); a file that is read keeps the
//! documented invariants (percentiles do not decrease, latencies are not
//! zero, only the `db_queries` counter) and, written back out in each of the
//! three formats, reads back to the same budgets.
#![no_main]

use std::fmt::Write as _;
use std::time::Duration;

use brisk_budget::{Budgets, DB_QUERIES, FileFormat, Percentile};
use libfuzzer_sys::fuzz_target;

const FORMATS: [FileFormat; 3] = [FileFormat::Yaml, FileFormat::Toml, FileFormat::Json];
const PERCENTILES: [(Percentile, &str); 3] =
    [(Percentile::P50, "p50"), (Percentile::P95, "p95"), (Percentile::P99, "p99")];

/// A string literal every format reads the same: JSON's, or a double-quoted
/// YAML / basic TOML string with everything but printable ASCII escaped.
fn quoted(s: &str, format: FileFormat) -> String {
    if format == FileFormat::Json {
        return serde_json::to_string(s).expect("a string serialises");
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => write!(out, "\\u{:04X}", u32::from(c)).expect("write to String"),
            c => write!(out, "\\U{:08X}", u32::from(c)).expect("write to String"),
        }
    }
    out.push('"');
    out
}

fn duration(d: Duration) -> String {
    match (d.as_secs(), d.subsec_nanos()) {
        (0, nanos) => format!("{nanos}ns"),
        (secs, 0) => format!("{secs}s"),
        (secs, nanos) => format!("{secs}s {nanos}ns"),
    }
}

/// `budgets` written in `format`; `None` when the format cannot hold them
/// (TOML integers stop at `i64::MAX`).
fn write(budgets: &Budgets, format: FileFormat) -> Option<String> {
    let (sep, colon) = match format {
        FileFormat::Toml => ("\n", " = "),
        _ => (", ", ": "),
    };
    let mut routes = Vec::new();
    for (key, budget) in budgets.iter() {
        let mut fields = Vec::new();
        for (percentile, name) in PERCENTILES {
            if let Some(limit) = budget.latency_limit(percentile) {
                fields.push(format!("{}{colon}{}", field(name, format), quoted(&duration(limit), format)));
            }
        }
        if let Some(bytes) = budget.max_payload_limit() {
            fields.push(format!("{}{colon}{}", field("max_payload", format), quoted(&format!("{bytes}B"), format)));
        }
        for (name, max) in budget.counter_limits() {
            assert_eq!(name, DB_QUERIES, "a file declares no other counter");
            if format == FileFormat::Toml && i64::try_from(max).is_err() {
                return None;
            }
            fields.push(format!("{}{colon}{max}", field("db_queries", format)));
        }
        if budget.is_cache_required() {
            fields.push(format!("{}{colon}true", field("cache_required", format)));
        }
        let route = quoted(&format!("{} {}", key.method(), key.template()), format);
        routes.push(format!("{route}{colon}{{{}}}", fields.join(", ")));
    }
    Some(match format {
        FileFormat::Json => format!("{{\"api_endpoints\": {{{}}}}}", routes.join(sep)),
        FileFormat::Toml => format!("[api_endpoints]\n{}\n", routes.join(sep)),
        _ => format!("api_endpoints: {{{}}}\n", routes.join(sep)),
    })
}

fn field(name: &str, format: FileFormat) -> String {
    if format == FileFormat::Json { format!("\"{name}\"") } else { name.to_owned() }
}

fn check(budgets: &Budgets) {
    for (key, budget) in budgets.iter() {
        assert!(key.template().starts_with('/') && !key.template().contains(char::is_whitespace));
        assert_eq!(key.method(), key.method().to_ascii_uppercase());
        let limits: Vec<Duration> = PERCENTILES.iter().filter_map(|(p, _)| budget.latency_limit(*p)).collect();
        assert!(limits.iter().all(|d| !d.is_zero()), "a zero latency budget");
        assert!(limits.windows(2).all(|w| w[0] <= w[1]), "percentiles decrease in {key}");
    }
    for format in FORMATS {
        let Some(text) = write(budgets, format) else { continue };
        let again = Budgets::from_str_as(&text, format).unwrap_or_else(|e| panic!("{format} write-back {text:?}: {e}"));
        assert_eq!(&again, budgets, "{format} write-back {text:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // YAML counts `\r\n`, `\r` and `\n` as line breaks: a text has that many
    // lines plus one; an error at the very end may name the line after.
    let lines = text.replace("\r\n", "\n").bytes().filter(|b| matches!(b, b'\n' | b'\r')).count() as u64 + 1;
    for format in FORMATS {
        match Budgets::from_str_as(text, format) {
            Ok(budgets) => check(&budgets),
            Err(error) => {
                let message = error.to_string();
                assert!(message.starts_with("invalid performance budgets"), "{message}");
                if let Some(line) = error.line() {
                    assert!((1..=lines + 1).contains(&line), "line {line} of a {lines}-line text: {message}");
                }
            }
        }
    }
});
