//! Error helpers everyone may use (the library crates, the CLI, the tests).

/// Joins an error and its sources with `: ` (a source whose text the
/// error's own text already ends with is not repeated).
#[must_use]
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the token file")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_sources_once() {
        let err = Outer(std::io::Error::other("permission denied"));
        assert_eq!(
            error_chain(&err),
            "reading the token file: permission denied"
        );
    }
}
