//! What the agent's listeners (the HTTP endpoint, the trail socket) share:
//! an accept loop that does not spin when accepting fails.

use std::time::Duration;

/// How long to wait before accepting again after `err`. A connection
/// that failed before it was accepted (reset, aborted) is the client's
/// problem: accept the next one at once. Anything else (out of file
/// descriptors: EMFILE, ENFILE; out of memory: ENOBUFS, ENOMEM) will fail
/// again immediately, so the loop waits instead of spinning a core; the
/// wait doubles up to a second while the failures last.
#[must_use]
pub fn accept_pause(err: &std::io::Error, failures_in_a_row: u32) -> Option<Duration> {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted => None,
        _ => Some(
            Duration::from_millis(10)
                .saturating_mul(1u32 << failures_in_a_row.min(7))
                .min(Duration::from_secs(1)),
        ),
    }
}

/// The next accepted connection of a listener named `what`: calls
/// `accept` until it succeeds, logging a run of failures once and waiting
/// between them as [`accept_pause`] says. `failures` counts the run across
/// calls (one counter per listener).
pub async fn next_connection<S, A, Fut>(
    what: &str,
    failures: &mut u32,
    mut accept: impl FnMut() -> Fut,
) -> S
where
    Fut: std::future::Future<Output = std::io::Result<(S, A)>>,
{
    loop {
        match accept().await {
            Ok((stream, _)) => {
                *failures = 0;
                return stream;
            }
            Err(err) => after_accept_error(what, &err, failures).await,
        }
    }
}

/// Logs a failed accept (once per run of failures) and waits as
/// [`accept_pause`] says.
async fn after_accept_error(what: &str, err: &std::io::Error, failures_in_a_row: &mut u32) {
    if *failures_in_a_row == 0 {
        tracing::warn!(listener = what, error = %err, "accepting a connection failed");
    }
    if let Some(pause) = accept_pause(err, *failures_in_a_row) {
        *failures_in_a_row = failures_in_a_row.saturating_add(1);
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    #[test]
    fn out_of_descriptors_waits_and_backs_off_a_reset_does_not() {
        let emfile = Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(accept_pause(&emfile, 0), Some(Duration::from_millis(10)));
        assert_eq!(accept_pause(&emfile, 3), Some(Duration::from_millis(80)));
        assert_eq!(accept_pause(&emfile, 30), Some(Duration::from_secs(1)));
        assert_eq!(
            accept_pause(&Error::from(ErrorKind::ConnectionAborted), 5),
            None
        );
    }
}
