//! Exact decimal text arithmetic for aggregate sums, digit by digit as `aggregate.lua` does
//! it (the script cannot use doubles, and neither may the owning writer if both are to write
//! the same text): any number of digits, canonical results (no leading zeros, no trailing
//! fractional zeros, `0` for zero).

/// `a + b` (or `a - b` when `negate_b`), exact, in canonical form; an `Err` names a text
/// that is not a plain decimal number (`-?digits[.digits]`, as the script accepts).
pub(super) fn add(a: &str, b: &str, negate_b: bool) -> Result<String, String> {
    let (na, ia, fa) = split(a)?;
    let (nb, ib, fb) = split(b)?;
    let nb = nb != negate_b;
    let scale = fa.len().max(fb.len());
    let x = magnitude(ia, fa, scale);
    let y = magnitude(ib, fb, scale);
    let (neg, m) = if na == nb {
        (na, mag_add(&x, &y))
    } else if mag_ge(&x, &y) {
        (na, mag_sub(&x, &y))
    } else {
        (nb, mag_sub(&y, &x))
    };
    if m.is_empty() {
        return Ok("0".to_owned());
    }
    let m = if m.len() <= scale {
        format!("{}{m}", "0".repeat(scale - m.len() + 1))
    } else {
        m
    };
    let (int, frac) = m.split_at(m.len() - scale);
    let frac = frac.trim_end_matches('0');
    let mut text = String::with_capacity(m.len() + 2);
    if neg {
        text.push('-');
    }
    text.push_str(int);
    if !frac.is_empty() {
        text.push('.');
        text.push_str(frac);
    }
    Ok(text)
}

/// Sign, integer digits and fraction digits of a decimal text.
fn split(s: &str) -> Result<(bool, &str, &str), String> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) {
        return Err(format!("aggregate: not a number: {s}"));
    }
    Ok((neg, int, frac))
}

/// The digits of `int.frac` scaled to `scale` fraction digits, without leading zeros.
fn magnitude(int: &str, frac: &str, scale: usize) -> Vec<u8> {
    let digits = int
        .bytes()
        .chain(frac.bytes())
        .chain(std::iter::repeat_n(b'0', scale - frac.len()))
        .map(|b| b - b'0')
        .skip_while(|d| *d == 0);
    digits.collect()
}

/// `|x| >= |y|` for digit strings without leading zeros.
fn mag_ge(x: &[u8], y: &[u8]) -> bool {
    if x.len() != y.len() {
        return x.len() > y.len();
    }
    x >= y
}

/// `x + y` as digit text without leading zeros (empty for zero).
fn mag_add(x: &[u8], y: &[u8]) -> String {
    let mut out = Vec::with_capacity(x.len().max(y.len()) + 1);
    let mut carry = 0;
    let (mut i, mut j) = (x.len(), y.len());
    while i > 0 || j > 0 || carry > 0 {
        let mut d = carry;
        if i > 0 {
            i -= 1;
            d += x[i];
        }
        if j > 0 {
            j -= 1;
            d += y[j];
        }
        out.push(d % 10);
        carry = d / 10;
    }
    text(out)
}

/// `x - y` for `x >= y`, as digit text without leading zeros (empty for zero).
fn mag_sub(x: &[u8], y: &[u8]) -> String {
    let mut out = Vec::with_capacity(x.len());
    let mut borrow = 0;
    let mut j = y.len();
    for &xd in x.iter().rev() {
        let yd = if j > 0 {
            j -= 1;
            y[j]
        } else {
            0
        };
        let mut d = i16::from(xd) - i16::from(yd) - borrow;
        borrow = 0;
        if d < 0 {
            d += 10;
            borrow = 1;
        }
        out.push(d as u8);
    }
    text(out)
}

/// Reversed digits as text, leading zeros dropped.
fn text(reversed: Vec<u8>) -> String {
    let digits: String = reversed
        .into_iter()
        .rev()
        .map(|d| char::from(b'0' + d))
        .collect();
    digits.trim_start_matches('0').to_owned()
}

#[cfg(test)]
mod tests {
    use super::add;

    #[test]
    fn sums_are_exact_and_canonical() {
        assert_eq!(add("0", "1", false).unwrap(), "1");
        assert_eq!(add("350", "100", true).unwrap(), "250");
        assert_eq!(
            add("1.50", "9007199254740993", false).unwrap(),
            "9007199254740994.5"
        );
        assert_eq!(
            add("9007199254740994.5", "-0.125", false).unwrap(),
            "9007199254740994.375"
        );
        assert_eq!(add("0.1", "0.1", true).unwrap(), "0");
        assert_eq!(add("-0.5", "0.25", false).unwrap(), "-0.25");
        assert_eq!(add("0.05", "1", true).unwrap(), "-0.95");
        assert_eq!(add("007", "1.", false).unwrap(), "8");
        assert_eq!(
            add("99999999999999999999999999999999999999999", "1", false).unwrap(),
            "100000000000000000000000000000000000000000"
        );
    }

    #[test]
    fn what_is_not_a_number_is_refused() {
        for bad in ["", "-", "abc", "1e5", ".5", "+1", "1.2.3", "1 "] {
            assert!(add("0", bad, false).is_err(), "{bad}");
        }
    }
}
