//! Shared by the fuzz targets (`fuzz_targets/`): cutting one input into the several
//! values a target needs, comparing JSON, and the policy engine's oracle.
pub mod packets;
pub mod policy_oracle;

use serde_json::Value;

/// `data` cut at its first `N - 1` NUL bytes: `N` fields, the missing ones empty.
pub fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for field in out.iter_mut().take(N - 1) {
        match rest.iter().position(|&b| b == 0) {
            Some(at) => {
                *field = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *field = rest;
                return out;
            }
        }
    }
    out[N - 1] = rest;
    out
}

/// The first `N` lines of `text` (without their newline) and the text after them.
pub fn lines<const N: usize>(text: &str) -> ([&str; N], &str) {
    let mut out = [""; N];
    let mut rest = text;
    for line in &mut out {
        let (head, tail) = rest.split_once('\n').unwrap_or((rest, ""));
        *line = head;
        rest = tail;
    }
    (out, rest)
}

/// JSON equality, except that two floats one rounding step apart are equal: serde_json's
/// default float parser is not exact, so a number may move by one ulp through a round trip.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| same_json(x, y)))
        }
        _ => a == b,
    }
}

/// Asserts that `a` and `b` serialize to the [`same_json`].
#[track_caller]
pub fn assert_same<T: serde::Serialize + std::fmt::Debug>(a: &T, b: &T) {
    let (x, y) = (
        serde_json::to_value(a).expect("serializes"),
        serde_json::to_value(b).expect("serializes"),
    );
    assert!(same_json(&x, &y), "{a:#?}\n!=\n{b:#?}");
}
