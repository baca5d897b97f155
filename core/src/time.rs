//! Time as tokenwatch reads and writes it, for every crate: instants in
//! Unix nanoseconds, parsed with jiff, formatted as RFC 3339 UTC.
//!
//! - [`parse_nanos`]: an instant as audit logs, trails and log pipelines
//!   write it: RFC 3339 (`2018-10-25T13:58:49.730588Z`, any offset), with a
//!   space instead of `T`, or without a zone (then UTC:
//!   `2022-11-29 00:09:04.38`, as pipelines rewrite kube-apiserver's times);
//! - [`parse_bound`]: a command-line time: `now`, such an instant, or a
//!   duration before now (`90s`, `15m`, `1h30m`, `7d`);
//! - [`format_nanos`]: RFC 3339 UTC, the fraction trimmed to what is needed
//!   (microseconds at most, as the API server writes).

use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// A time argument that is none of the accepted forms.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid time {input:?}: expected RFC 3339 (2025-06-01T10:00:00Z), `now`, or a duration before now (90s, 15m, 1h30m, 7d)"
)]
pub struct ParseTimeError {
    /// What was given.
    pub input: String,
}

/// Parses an instant (see the module docs) into nanoseconds since the
/// Unix epoch; `None` when it is not one.
///
/// The form the API server writes (`2018-10-25T13:58:49.730588Z`, from
/// 1970 on) is read by hand, for the replay reads two per event; anything
/// else goes to jiff ([`parse_nanos_reference`]), and the two agree on
/// every input (the unit tests and the `time_parse` fuzz target hold them
/// together).
#[must_use]
pub fn parse_nanos(text: &str) -> Option<i64> {
    let text = text.trim();
    utc_nanos(text.as_bytes()).or_else(|| parse_nanos_reference(text))
}

/// [`parse_nanos`] with jiff alone.
#[must_use]
pub fn parse_nanos_reference(text: &str) -> Option<i64> {
    let text = text.trim();
    let ts = match Timestamp::from_str(text) {
        Ok(ts) => ts,
        // No offset: a civil time, taken as UTC.
        Err(_) => DateTime::from_str(text)
            .ok()?
            .to_zoned(TimeZone::UTC)
            .ok()?
            .timestamp(),
    };
    i64::try_from(ts.as_nanosecond()).ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.F]Z` (1 to 9 fraction digits, years 1970 to
/// 2261, which i64 nanoseconds hold) as nanoseconds; `None` for anything
/// else, valid or not, which jiff then decides.
fn utc_nanos(b: &[u8]) -> Option<i64> {
    fn digits(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    }
    let (date_time, rest) = b.split_at_checked(19)?;
    let &[
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        i0,
        i1,
        b':',
        s0,
        s1,
    ] = date_time
    else {
        return None;
    };
    let year = digits(&[y0, y1, y2, y3])?;
    let month = digits(&[m0, m1])?;
    let day = digits(&[d0, d1])?;
    let hour = digits(&[h0, h1])?;
    let minute = digits(&[i0, i1])?;
    let second = digits(&[s0, s1])?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1970..=2261).contains(&year)
        || !(1..=month_days).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let fraction = match rest {
        [b'Z'] => 0,
        [b'.', f @ .., b'Z'] if (1..=9).contains(&f.len()) => {
            digits(f)? * 10i64.pow(9 - u32::try_from(f.len()).ok()?)
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (March-based
    // years, so the leap day ends a year).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    seconds.checked_mul(1_000_000_000)?.checked_add(fraction)
}

/// Parses a command-line time: `now`, an instant, or a duration before
/// `now`; as nanoseconds since the Unix epoch.
///
/// # Errors
/// [`ParseTimeError`] naming the input.
pub fn parse_bound(input: &str, now: SystemTime) -> Result<i64, ParseTimeError> {
    if input.trim() == "now" {
        return Ok(from_system_time(now));
    }
    if let Some(nanos) = parse_nanos(input) {
        return Ok(nanos);
    }
    match humantime::parse_duration(input.trim()) {
        Ok(ago) => Ok(from_system_time(now.checked_sub(ago).unwrap_or(UNIX_EPOCH))),
        Err(_) => Err(ParseTimeError {
            input: input.to_owned(),
        }),
    }
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC with the fraction
/// trimmed to what is needed (microseconds at most).
#[must_use]
pub fn format_nanos(nanos: i64) -> String {
    let micros = humantime::format_rfc3339_micros(to_system_time(nanos)).to_string();
    // Drop a zero fraction: `...:49.000000Z` -> `...:49Z`.
    micros.replace(".000000Z", "Z")
}

/// The same instant as a [`SystemTime`] (clamped at the epoch).
#[must_use]
pub fn to_system_time(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// A [`SystemTime`] as nanoseconds since the epoch (saturating).
#[must_use]
pub fn from_system_time(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_audit_logs_use() {
        let base = parse_nanos("2018-10-25T13:58:49Z").unwrap();
        assert_eq!(base, 1_540_475_929 * 1_000_000_000);
        assert_eq!(
            parse_nanos("2018-10-25T13:58:49.730588Z").unwrap(),
            base + 730_588_000
        );
        assert_eq!(
            parse_nanos("2018-10-25 13:58:49.73").unwrap(),
            base + 730_000_000
        );
        assert_eq!(parse_nanos("2018-10-25T15:58:49+02:00").unwrap(), base);
        assert_eq!(
            parse_nanos("2018-10-25T13:58:49.123456789Z").unwrap(),
            base + 123_456_789
        );
        // Agrees with humantime on a leap day.
        let t = humantime::parse_rfc3339("2024-02-29T23:59:59.5Z").unwrap();
        assert_eq!(
            parse_nanos("2024-02-29T23:59:59.5Z").unwrap(),
            from_system_time(t)
        );
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for bad in [
            "",
            "yesterday",
            "2018-13-01T00:00:00Z",
            "2018-02-30T00:00:00Z",
            "2018-10-25T13:58:49.Z",
            "2018-10-25X13:58:49Z",
            "2018-10-25T13:58:49é",
            "é2018-10-25T13:58:49Z",
        ] {
            assert_eq!(parse_nanos(bad), None, "{bad}");
        }
    }

    /// The hand-read form agrees with jiff on valid and invalid dates,
    /// every field's edges, fractions of every length and the years at
    /// both ends.
    #[test]
    fn the_fast_form_agrees_with_jiff() {
        let mut checked = 0;
        let mut fast = 0;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut texts: Vec<String> = vec![
            "1970-01-01T00:00:00Z".into(),
            "1969-12-31T23:59:59.999999999Z".into(),
            "2261-12-31T23:59:59.999999999Z".into(),
            "2262-04-11T23:47:16.854775807Z".into(),
            "2262-04-11T23:47:16.854775808Z".into(),
            "2000-02-29T12:00:00Z".into(),
            "1900-02-29T12:00:00Z".into(),
            "2100-02-29T12:00:00Z".into(),
            "2024-02-29T23:59:60Z".into(),
            "2024-02-29T24:00:00Z".into(),
            "2018-10-25T13:58:49.1234567890Z".into(),
            "2018-10-25t13:58:49z".into(),
            "2018-10-25T13:58:49,5Z".into(),
            "2018-10-25T13:58:49.5+00:00".into(),
            " 2018-10-25T13:58:49.5Z\n".into(),
            "2018-10-25T13:58:4é".into(),
            "+2018-10-25T13:58:49Z".into(),
        ];
        for _ in 0..20_000 {
            let fraction = match next(4) {
                0 => String::new(),
                1 => ".".to_owned(),
                _ => format!(".{:0w$}", next(1_000_000_000), w = 1 + next(10) as usize),
            };
            texts.push(format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}Z",
                1960 + next(320),
                next(14),
                next(33),
                next(26),
                next(62),
                next(62),
            ));
        }
        for t in &texts {
            let by_hand = utc_nanos(t.trim().as_bytes());
            let reference = parse_nanos_reference(t);
            if by_hand.is_some() {
                fast += 1;
                assert_eq!(by_hand, reference, "{t:?}");
            }
            assert_eq!(parse_nanos(t), reference, "{t:?}");
            checked += 1;
        }
        assert!(fast > 2_000, "only {fast} of {checked} took the fast form");
    }

    #[test]
    fn command_line_bounds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let n = from_system_time(now);
        assert_eq!(parse_bound("now", now).unwrap(), n);
        assert_eq!(parse_bound("15m", now).unwrap(), n - 900 * 1_000_000_000);
        assert_eq!(
            parse_bound("1h30m", now).unwrap(),
            n - 5_400 * 1_000_000_000
        );
        assert_eq!(
            parse_bound("2018-10-25T13:58:49Z", now).unwrap(),
            1_540_475_929 * 1_000_000_000
        );
        let err = parse_bound("last tuesday", now).unwrap_err();
        assert!(
            err.to_string().contains("invalid time \"last tuesday\""),
            "{err}"
        );
    }

    #[test]
    fn formats_back() {
        let t = parse_nanos("2018-10-25T13:58:49.730588Z").unwrap();
        assert_eq!(format_nanos(t), "2018-10-25T13:58:49.730588Z");
        assert_eq!(
            format_nanos(parse_nanos("2018-10-25T13:58:49Z").unwrap()),
            "2018-10-25T13:58:49Z"
        );
    }
}
