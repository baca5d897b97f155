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
#[must_use]
pub fn parse_nanos(text: &str) -> Option<i64> {
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
