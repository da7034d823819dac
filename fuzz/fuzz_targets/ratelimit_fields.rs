//! The `RateLimit-Policy` / `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers)
//! the rate-limit layer writes. For arbitrary policies (names, quotas,
//! algorithms) in arbitrary states: a policy the builder accepts always yields
//! fields that parse as structured-field Lists (RFC 9651, with the `sfv`
//! crate) holding, in order, one String item per policy whose state is known
//! with exactly the expected `q`/`w` and `r`/`t` integer parameters; the
//! legacy fields are integers, sent only when asked for. There is no reader
//! of these fields in brisk: the `sfv` parse is the read-back.
#![no_main]

use std::num::NonZeroU32;
use std::time::Duration;

use arbitrary::Arbitrary;
use brisk_ratelimit::fuzzing::{PolicyState, rate_limit_fields};
use brisk_ratelimit::{Algorithm, HeaderStyle, Policy, Quota, Source};
use libfuzzer_sys::fuzz_target;
use sfv::{BareItem, ListEntry, Parser};

#[derive(Arbitrary, Debug)]
struct Input {
    policies: Vec<Raw>,
    style: u8,
}

#[derive(Arbitrary, Debug)]
struct Raw {
    name: String,
    limit: u32,
    period_micros: u64,
    burst: Option<u32>,
    algorithm: u8,
    allowed: bool,
    remaining: u32,
    reset_after_micros: u64,
    retry_after_micros: Option<u64>,
    source: u8,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The list members of the one `name` field, as (string, params) pairs.
fn members(headers: &http::HeaderMap, name: &str) -> Vec<(String, Vec<(String, i64)>)> {
    let values: Vec<_> = headers.get_all(name).iter().collect();
    assert_eq!(values.len(), 1, "one {name} field");
    let text = values[0].to_str().expect("visible ASCII");
    let list: sfv::List = Parser::new(text).parse().unwrap_or_else(|e| panic!("{name}: {text:?} is not a List: {e}"));
    list.into_iter()
        .map(|entry| {
            let ListEntry::Item(item) = entry else { panic!("{name}: inner list in {text:?}") };
            let BareItem::String(s) = item.bare_item else { panic!("{name}: member is not a String in {text:?}") };
            let params = item
                .params
                .into_iter()
                .map(|(k, v)| {
                    let BareItem::Integer(i) = v else { panic!("{name}: parameter {k} is not an Integer in {text:?}") };
                    (k.as_str().to_owned(), i64::from(i))
                })
                .collect();
            (s.as_str().to_owned(), params)
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let style = match input.style % 3 {
        0 => HeaderStyle::Ietf,
        1 => HeaderStyle::IetfAndLegacy,
        _ => HeaderStyle::OnlyOnRefusal,
    };
    let mut policies = Vec::new();
    for raw in input.policies.into_iter().take(8) {
        let Some(limit) = NonZeroU32::new(raw.limit) else { continue };
        let Ok(mut quota) = Quota::per_period(limit, Duration::from_micros(raw.period_micros)) else { continue };
        if let Some(burst) = raw.burst.and_then(NonZeroU32::new) {
            quota = quota.with_burst(burst);
        }
        let algorithm = match raw.algorithm % 3 {
            0 => Algorithm::Gcra,
            1 => Algorithm::SlidingWindow,
            _ => Algorithm::FixedWindow,
        };
        let source = match raw.source % 4 {
            0 => Source::Store,
            1 => Source::BlockedCache,
            2 => Source::Local,
            _ => Source::FailOpen,
        };
        let state = PolicyState {
            allowed: raw.allowed,
            remaining: raw.remaining,
            // The limiter keeps times in microseconds.
            reset_after: Duration::from_micros(raw.reset_after_micros),
            retry_after: raw.retry_after_micros.map(Duration::from_micros),
            source,
        };
        policies.push((Policy::new(raw.name, quota).algorithm(algorithm), state));
    }

    let headers = match rate_limit_fields(&policies, style) {
        Ok(headers) => headers,
        Err(message) => {
            assert!(!message.is_empty());
            return;
        }
    };
    for (policy, _) in &policies {
        assert!(valid_name(policy.name()), "accepted policy name {:?}", policy.name());
    }
    let known: Vec<_> = policies.iter().filter(|(_, s)| s.source != Source::FailOpen).collect();
    if known.is_empty() {
        assert!(headers.is_empty(), "fields for policies whose state is unknown");
        return;
    }

    let policy_field = members(&headers, "ratelimit-policy");
    let state_field = members(&headers, "ratelimit");
    assert_eq!(policy_field.len(), known.len());
    assert_eq!(state_field.len(), known.len());
    for (((policy, state), (p_name, p_params)), (s_name, s_params)) in known.iter().zip(&policy_field).zip(&state_field)
    {
        assert_eq!(p_name, policy.name());
        assert_eq!(s_name, policy.name());
        let window = ceil_secs(policy.quota().period()).max(1);
        let expected = vec![("q".to_owned(), i64::from(policy.quota().limit().get())), ("w".to_owned(), window as i64)];
        assert_eq!(p_params, &expected);
        let reset = match (state.allowed, state.retry_after) {
            (false, Some(retry)) => ceil_secs(retry),
            _ => ceil_secs(state.reset_after),
        };
        let expected = vec![("r".to_owned(), i64::from(state.remaining)), ("t".to_owned(), reset as i64)];
        assert_eq!(s_params, &expected);
    }

    let legacy = ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"];
    if style == HeaderStyle::IetfAndLegacy {
        let fewest = known.iter().map(|(_, s)| s.remaining).min().expect("known is not empty");
        for name in legacy {
            let value = headers.get(name).unwrap_or_else(|| panic!("{name} missing"));
            let n: u64 = value.to_str().expect("ASCII").parse().unwrap_or_else(|_| panic!("{name}: {value:?}"));
            if name == "x-ratelimit-remaining" {
                assert_eq!(n, u64::from(fewest));
            }
        }
    } else {
        assert!(legacy.iter().all(|name| headers.get(*name).is_none()), "legacy fields not asked for");
    }
});
