//! Column values -> the text stored in Redis hash fields and substituted into key templates,
//! and -> sorted-set scores. The rules are ARCHITECTURE.md's "Value rendering".
//!
//! Rendering never fails: JSON text is stored as received, and [`check_value`] is the
//! separate validation the planner applies before anything is written.

use base64::Engine as _;
use chrono::DateTime;

use crate::change::FieldValue;

/// What to store for one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// Store this text.
    Value(String),
    /// SQL NULL: the hash field is absent.
    Null,
    /// Unchanged TOASTed column: keep what is stored.
    Unavailable,
}

impl Rendered {
    /// The text, if there is one.
    pub fn as_value(&self) -> Option<&str> {
        match self {
            Rendered::Value(v) => Some(v),
            Rendered::Null | Rendered::Unavailable => None,
        }
    }
}

/// A value that must not be stored as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// An `io.debezium.data.Json` value that is not JSON.
    #[error("invalid json text {text:?}: {reason}")]
    InvalidJson {
        /// The text received (truncated to 80 characters).
        text: String,
        /// The parser's complaint.
        reason: String,
    },
}

/// Renders `value` per ARCHITECTURE.md.
pub fn render_value(value: &FieldValue) -> Rendered {
    let text = match value {
        FieldValue::Null => return Rendered::Null,
        FieldValue::Unavailable => return Rendered::Unavailable,
        FieldValue::Boolean(b) => b.to_string(),
        FieldValue::Int(i) => i.to_string(),
        FieldValue::Float(f) => format_float(*f),
        FieldValue::String(s) | FieldValue::Json(s) => s.clone(),
        FieldValue::TimestampMicros(micros) => format_timestamp_micros(*micros),
        FieldValue::Date(days) => format_date(*days),
        FieldValue::Decimal { unscaled, scale } => format_decimal(unscaled, *scale),
        FieldValue::Bytes(bytes) => base64::engine::general_purpose::STANDARD.encode(bytes),
    };
    Rendered::Value(text)
}

/// [`render_value`] of a value no longer needed: its text, if it has one, moves instead of
/// being copied.
pub fn render_owned_value(value: FieldValue) -> Rendered {
    match value {
        FieldValue::String(text) | FieldValue::Json(text) => Rendered::Value(text),
        other => render_value(&other),
    }
}

/// Checks what [`render_value`] cannot reject: JSON text must parse.
pub fn check_value(value: &FieldValue) -> Result<(), ValueError> {
    match value {
        FieldValue::Json(text) => serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map(|_| ())
            .map_err(|e| ValueError::InvalidJson {
                text: text.chars().take(80).collect(),
                reason: e.to_string(),
            }),
        _ => Ok(()),
    }
}

/// The sorted-set score of a value: integers and floats as they are, timestamps as epoch
/// microseconds, dates as the epoch microseconds of their midnight (UTC), decimals as the
/// nearest double. `None` for NULL, unavailable, non-finite and non-numeric values.
pub fn score(value: &FieldValue) -> Option<f64> {
    match value {
        FieldValue::Int(i) => Some(*i as f64),
        FieldValue::Float(f) => f.is_finite().then_some(*f),
        FieldValue::TimestampMicros(micros) => Some(*micros as f64),
        FieldValue::Date(days) => Some(f64::from(*days) * 86_400e6),
        FieldValue::Decimal { unscaled, scale } => format_decimal(unscaled, *scale).parse().ok(),
        FieldValue::Null
        | FieldValue::Unavailable
        | FieldValue::Boolean(_)
        | FieldValue::String(_)
        | FieldValue::Json(_)
        | FieldValue::Bytes(_) => None,
    }
}

/// Shortest text that parses back to the same double; `NaN`, `Infinity`, `-Infinity` as
/// PostgreSQL writes them.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        // Rust's `Display` for floats is the shortest round-trip form, never exponential.
        f.to_string()
    }
}

/// `2026-11-24T09:56:33.142906Z`. Outside chrono's range (beyond year ±262143) the number
/// of microseconds itself is returned.
pub fn format_timestamp_micros(micros: i64) -> String {
    /// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z: the years of four digits.
    const FOUR_DIGIT_YEARS: std::ops::RangeInclusive<i64> =
        -62_167_219_200_000_000..=253_402_300_799_999_999;
    if FOUR_DIGIT_YEARS.contains(&micros) {
        // The common case, written digit by digit: the sink renders every timestamp column
        // of every change, and `format!` with its seven arguments took 5 % of a rebuild's
        // CPU (BENCHMARKS.md, *Fewer copies from planning to the transaction*).
        return four_digit_year_timestamp(micros);
    }
    match DateTime::from_timestamp_micros(micros) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => micros.to_string(),
    }
}

/// [`format_timestamp_micros`] for a time in the years 0000-9999.
fn four_digit_year_timestamp(micros: i64) -> String {
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    let seconds = of_day / 1_000_000;
    let mut text = String::with_capacity(27);
    for (value, width, then) in [
        (year, 4, '-'),
        (month, 2, '-'),
        (day, 2, 'T'),
        (seconds / 3600, 2, ':'),
        (seconds / 60 % 60, 2, ':'),
        (seconds % 60, 2, '.'),
        (of_day % 1_000_000, 6, 'Z'),
    ] {
        push_digits(&mut text, value, width);
        text.push(then);
    }
    text
}

/// Appends the last `width` decimal digits of `value` (not negative), zero-padded.
fn push_digits(text: &mut String, value: i64, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10_i64.pow(place)) % 10;
        text.push(char::from_digit(digit as u32, 10).unwrap_or('0'));
    }
}

/// (year, month, day) of the proleptic Gregorian calendar for days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`; callers pass the days of years 0000-9999).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD` for days since 1970-01-01. Outside chrono's range the number of days itself
/// is returned.
pub fn format_date(days: i32) -> String {
    /// 0000-01-01 and 9999-12-31: the years of four digits.
    const FOUR_DIGIT_YEARS: std::ops::RangeInclusive<i32> = -719_528..=2_932_896;
    if FOUR_DIGIT_YEARS.contains(&days) {
        let (year, month, day) = civil_from_days(i64::from(days));
        let mut text = String::with_capacity(10);
        push_digits(&mut text, year, 4);
        text.push('-');
        push_digits(&mut text, month, 2);
        text.push('-');
        push_digits(&mut text, day, 2);
        return text;
    }
    match DateTime::from_timestamp(i64::from(days) * 86_400, 0) {
        Some(t) => t.date_naive().format("%Y-%m-%d").to_string(),
        None => days.to_string(),
    }
}

/// Exact decimal text of `unscaled * 10^-scale`, where `unscaled` is big-endian two's
/// complement (Connect `Decimal`): `0.05`, `-12.50`, `100`.
pub fn format_decimal(unscaled: &[u8], scale: u32) -> String {
    let negative = unscaled.first().is_some_and(|b| b & 0x80 != 0);
    let digits = if unscaled.len() <= 16 {
        let mut buf = [if negative { 0xff } else { 0 }; 16];
        buf[16 - unscaled.len()..].copy_from_slice(unscaled);
        i128::from_be_bytes(buf).unsigned_abs().to_string()
    } else {
        big_magnitude_digits(unscaled, negative)
    };
    let scale = usize::try_from(scale).unwrap_or(usize::MAX);
    let mut out = String::with_capacity(digits.len() + 3);
    if negative {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(&digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    }
    out
}

/// Decimal digits of the magnitude of a two's complement big-endian integer of any length.
fn big_magnitude_digits(bytes: &[u8], negative: bool) -> String {
    let mut magnitude: Vec<u8> = bytes.to_vec();
    if negative {
        // Two's complement negation: invert, add one.
        for b in &mut magnitude {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (sum, overflow) = b.overflowing_add(1);
            *b = sum;
            if !overflow {
                break;
            }
        }
    }
    // Repeated long division by 10^9, collecting base-10^9 chunks, least significant first.
    const CHUNK: u64 = 1_000_000_000;
    let mut chunks = Vec::new();
    while magnitude.iter().any(|&b| b != 0) {
        let mut rem: u64 = 0;
        for b in &mut magnitude {
            let cur = (rem << 8) | u64::from(*b);
            *b = u8::try_from(cur / CHUNK).unwrap_or(u8::MAX);
            rem = cur % CHUNK;
        }
        chunks.push(rem);
    }
    match chunks.split_last() {
        None => "0".to_owned(),
        Some((most, rest)) => {
            let mut out = most.to_string();
            for chunk in rest.iter().rev() {
                out.push_str(&format!("{chunk:09}"));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn text(v: FieldValue) -> String {
        match render_value(&v) {
            Rendered::Value(s) => s,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    #[test]
    fn timestamps_from_the_recorded_samples() {
        // customers id 1 `created_at` in avro-customers-op_r-snapshot.json. (ARCHITECTURE.md's
        // example `2026-11-24T09:56:33.142906Z` shows the format, not this value: 1795480593 s
        // after the epoch is 00:36:33 UTC.)
        assert_eq!(
            text(FieldValue::TimestampMicros(1_795_480_593_142_906)),
            "2026-11-24T00:36:33.142906Z"
        );
        // orders id 5 `created_at` in avro-orders-op_c-insert.json.
        assert_eq!(
            text(FieldValue::TimestampMicros(1_795_480_942_634_072)),
            "2026-11-24T00:42:22.634072Z"
        );
        // The REPLICA IDENTITY DEFAULT delete's default.
        assert_eq!(
            text(FieldValue::TimestampMicros(0)),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            text(FieldValue::TimestampMicros(-1)),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            text(FieldValue::TimestampMicros(i64::MAX)),
            i64::MAX.to_string()
        );
    }

    #[test]
    fn timestamps_match_chrono_formatting_everywhere() {
        let chrono_text = |m: i64| {
            DateTime::from_timestamp_micros(m)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
        };
        // Around year 0 and year 10000 (the fast path's bounds), then a stride through
        // both centuries' worth of odd values.
        let mut samples = vec![
            -62_167_219_200_000_001,
            -62_167_219_200_000_000,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
        ];
        samples.extend((0..2_000).map(|i| -4_102_444_800_000_000 + i * 4_102_444_800_123_457));
        // Every day of years 0000-9999 is written digit by digit: a pseudo-random time in
        // each of 400,000 spans through them (leap days and century rules included), and
        // each side of every new year's midnight of the years around the epoch.
        let (first, last) = (-62_167_219_200_000_000_i64, 253_402_300_799_999_999_i64);
        let span = (last - first) / 400_000;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        samples.extend((0..400_000).map(|i| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            first + i * span + i64::try_from(state >> 1).unwrap() % span
        }));
        for year in 1900..2200 {
            let midnight = NaiveDate::from_ymd_opt(year, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_micros();
            samples.extend([midnight - 1, midnight]);
        }
        for m in samples {
            assert_eq!(format_timestamp_micros(m), chrono_text(m), "micros {m}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(text(FieldValue::Date(0)), "1970-01-01");
        assert_eq!(text(FieldValue::Date(20_781)), "2026-11-24");
        assert_eq!(text(FieldValue::Date(-1)), "1969-12-31");
        let chrono_text = |days: i32| {
            DateTime::from_timestamp(i64::from(days) * 86_400, 0)
                .unwrap()
                .date_naive()
                .format("%Y-%m-%d")
                .to_string()
        };
        // Every third day of years -0001 to 10000 (the digit-by-digit path and both sides of
        // it), so every day of the month and of the year, leap days included, comes up.
        for days in (-719_893..=2_933_262).step_by(3) {
            assert_eq!(format_date(days), chrono_text(days), "days {days}");
        }
    }

    #[test]
    fn decimals() {
        let d = |unscaled: &[u8], scale| format_decimal(unscaled, scale);
        assert_eq!(d(&[0x04, 0xe2], 2), "12.50"); // 1250
        assert_eq!(d(&[0xfb, 0x1e], 2), "-12.50"); // -1250
        assert_eq!(d(&[0x05], 2), "0.05");
        assert_eq!(d(&[0xfb], 2), "-0.05");
        assert_eq!(d(&[0x05], 4), "0.0005");
        assert_eq!(d(&[0x00], 2), "0.00");
        assert_eq!(d(&[], 0), "0");
        assert_eq!(d(&[0x64], 0), "100");
        assert_eq!(d(&[0x80], 0), "-128");
        assert_eq!(d(&[0x00, 0xff], 1), "25.5");
        // 16 bytes: i128::MIN and MAX.
        let mut min = [0u8; 16];
        min[0] = 0x80;
        assert_eq!(d(&min, 0), i128::MIN.to_string());
        let mut max = [0xffu8; 16];
        max[0] = 0x7f;
        assert_eq!(d(&max, 3), {
            let s = i128::MAX.to_string();
            format!("{}.{}", &s[..s.len() - 3], &s[s.len() - 3..])
        });
    }

    #[test]
    fn long_decimals_use_the_big_integer_path() {
        // 2^128 = 340282366920938463463374607431768211456 in 17 bytes.
        let mut big = [0u8; 17];
        big[0] = 0x01;
        assert_eq!(
            format_decimal(&big, 0),
            "340282366920938463463374607431768211456"
        );
        // -(2^128) in 17 bytes two's complement.
        let mut neg = [0u8; 17];
        neg[0] = 0xff;
        assert_eq!(
            format_decimal(&neg, 2),
            "-3402823669209384634633746074317682114.56"
        );
        // Sign-extended small values agree with the fast path.
        let mut minus_one = [0xffu8; 20];
        assert_eq!(format_decimal(&minus_one, 0), "-1");
        minus_one[19] = 0xfe;
        assert_eq!(format_decimal(&minus_one, 3), "-0.002");
        assert_eq!(format_decimal(&[0u8; 20], 1), "0.0");
    }

    #[test]
    fn scalars() {
        assert_eq!(text(FieldValue::Int(-42)), "-42");
        assert_eq!(text(FieldValue::Boolean(true)), "true");
        assert_eq!(text(FieldValue::Boolean(false)), "false");
        assert_eq!(text(FieldValue::Float(0.1)), "0.1");
        assert_eq!(text(FieldValue::Float(1.0)), "1");
        assert_eq!(text(FieldValue::Float(1e300)).parse::<f64>(), Ok(1e300));
        assert_eq!(
            text(FieldValue::Float(f64::from(0.1f32))),
            "0.10000000149011612"
        );
        assert_eq!(text(FieldValue::Float(f64::NAN)), "NaN");
        assert_eq!(text(FieldValue::Float(f64::NEG_INFINITY)), "-Infinity");
        assert_eq!(text(FieldValue::String("a b".into())), "a b");
        assert_eq!(text(FieldValue::Bytes(b"hi!?".to_vec())), "aGkhPw==");
        assert_eq!(render_value(&FieldValue::Null), Rendered::Null);
        assert_eq!(
            render_value(&FieldValue::Unavailable),
            Rendered::Unavailable
        );
    }

    #[test]
    fn json_is_stored_verbatim_and_checked() {
        let items = r#"[{"qty": 3, "sku": "STICKER", "price_cents": 333}]"#;
        assert_eq!(text(FieldValue::Json(items.into())), items);
        assert_eq!(check_value(&FieldValue::Json(items.into())), Ok(()));
        // The Avro default Debezium puts in a REPLICA IDENTITY DEFAULT delete's `before`.
        let err = check_value(&FieldValue::Json(String::new())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid json text \"\": EOF while parsing a value at line 1 column 0"
        );
        assert_eq!(check_value(&FieldValue::String(String::new())), Ok(()));
    }

    #[test]
    fn scores() {
        assert_eq!(score(&FieldValue::Int(7)), Some(7.0));
        assert_eq!(score(&FieldValue::Float(2.5)), Some(2.5));
        assert_eq!(score(&FieldValue::Float(f64::NAN)), None);
        assert_eq!(
            score(&FieldValue::TimestampMicros(1_795_480_593_142_906)),
            Some(1_795_480_593_142_906.0)
        );
        assert_eq!(score(&FieldValue::Date(1)), Some(86_400_000_000.0));
        assert_eq!(
            score(&FieldValue::Decimal {
                unscaled: vec![0xfb, 0x1e],
                scale: 2
            }),
            Some(-12.5)
        );
        assert_eq!(score(&FieldValue::Null), None);
        assert_eq!(score(&FieldValue::String("1".into())), None);
        assert_eq!(score(&FieldValue::Unavailable), None);
    }
}
