//! Typing of plain scalars, with the rules `serde_norway` applies, so a
//! value means the same here as in a file read by `serde_norway` directly.

/// What a scalar's text means.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Typed<'a> {
    /// `~`, `null`, `Null`, `NULL` or nothing.
    Null,
    /// `true`/`True`/`TRUE` or `false`/`False`/`FALSE`.
    Bool(bool),
    /// A non-negative integer (decimal, `0x`, `0o` or `0b`).
    Unsigned(u64),
    /// A negative integer.
    Signed(i64),
    /// A float, including `.inf`, `-.inf` and `.nan`.
    Float(f64),
    /// Anything else, and every quoted scalar.
    Str(&'a str),
}

/// Types a scalar: quoted ones are strings, plain ones follow YAML 1.2's
/// core schema as `serde_norway` reads it.
pub(crate) fn typed(text: &str, quoted: bool) -> Typed<'_> {
    if quoted {
        return Typed::Str(text);
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Typed::Null,
        "true" | "True" | "TRUE" => return Typed::Bool(true),
        "false" | "False" | "FALSE" => return Typed::Bool(false),
        _ => {}
    }
    if let Some(n) = integer(text) {
        return n;
    }
    match float(text) {
        Some(x) => Typed::Float(x),
        None => Typed::Str(text),
    }
}

/// Leading zeros before digits (`007`) make a string in YAML 1.2.
fn leading_zero(digits: &str) -> bool {
    digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
}

fn integer(text: &str) -> Option<Typed<'static>> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if body.starts_with(['+', '-']) || leading_zero(body) {
        return None;
    }
    let (radix, digits) = [("0x", 16), ("0o", 8), ("0b", 2)]
        .into_iter()
        .find_map(|(prefix, radix)| body.strip_prefix(prefix).map(|d| (radix, d)))
        .unwrap_or((10, body));
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if !negative {
        return Some(Typed::Unsigned(magnitude));
    }
    if magnitude == 0 {
        return Some(Typed::Unsigned(0));
    }
    0i64.checked_sub_unsigned(magnitude).map(Typed::Signed)
}

fn float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    if body.starts_with(['+', '-']) || leading_zero(body) {
        return None;
    }
    // Rust also reads `inf` and `nan`, which YAML does not: keep finite ones.
    text.parse::<f64>().ok().filter(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_are_typed_like_serde_norway() {
        assert_eq!(typed("", false), Typed::Null);
        assert_eq!(typed("~", false), Typed::Null);
        assert_eq!(typed("True", false), Typed::Bool(true));
        assert_eq!(typed("yes", false), Typed::Str("yes"));
        assert_eq!(typed("42", false), Typed::Unsigned(42));
        assert_eq!(typed("+42", false), Typed::Unsigned(42));
        assert_eq!(typed("-42", false), Typed::Signed(-42));
        assert_eq!(typed("0x1f", false), Typed::Unsigned(31));
        assert_eq!(typed("007", false), Typed::Str("007"));
        assert_eq!(typed("3e-4", false), Typed::Float(3e-4));
        assert_eq!(typed("1.0e-3", false), Typed::Float(1e-3));
        assert_eq!(typed("-.inf", false), Typed::Float(f64::NEG_INFINITY));
        assert_eq!(typed("inf", false), Typed::Str("inf"));
        assert_eq!(typed("1_000", false), Typed::Str("1_000"));
        assert!(matches!(typed(".nan", false), Typed::Float(x) if x.is_nan()));
    }

    #[test]
    fn quoted_scalars_are_strings() {
        assert_eq!(typed("42", true), Typed::Str("42"));
        assert_eq!(typed("", true), Typed::Str(""));
    }
}
