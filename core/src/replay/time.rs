//! Timestamps as audit logs and trails write them, to Unix nanoseconds.
//!
//! kube-apiserver writes RFC 3339 with microseconds (`2018-10-25T13:58:49.730588Z`);
//! log pipelines rewrite them (`2022-11-29 00:09:04.38`, a space instead of
//! `T`, no zone meaning UTC) and trails use nanoseconds. [`parse_nanos`]
//! takes all of those without allocating, because the replay parses one per
//! event; [`format_nanos`] writes RFC 3339 UTC back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|+hh:mm|-hh:mm]` (no zone is
/// UTC) into nanoseconds since the Unix epoch; `None` when it is not that.
#[must_use]
pub fn parse_nanos(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos: i64 = 0;
    if let Some((b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let mut scale = 100_000_000;
        for &c in &frac[..n.min(9)] {
            nanos += i64::from(c - b'0') * scale;
            scale /= 10;
        }
        rest = &frac[n..];
    }
    let offset_secs: i64 = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])?;
            let m = digits(&[*m1, *m2])?;
            let secs = h * 3600 + m * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC with the fraction
/// trimmed to what is needed (microseconds at most, as the API server writes).
#[must_use]
pub fn format_nanos(nanos: i64) -> String {
    let t = to_system_time(nanos);
    let micros = humantime::format_rfc3339_micros(t).to_string();
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

fn digits(b: &[u8]) -> Option<i64> {
    let mut v: i64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
            parse_nanos("2018-10-25T13:58:49.123456789123Z").unwrap(),
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
            "2018-10-25T13:58:49+2",
            "2018-10-25X13:58:49Z",
        ] {
            assert_eq!(parse_nanos(bad), None, "{bad}");
        }
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
