//! Where a token comes from: a token file, standard input, or a whole
//! `Secret` manifest (`kubectl get secret -o yaml|json`, with the token
//! base64 in `data.token`, or plain in `stringData.token`; a `List` of
//! Secrets gives its first Secret with a token).
//!
//! The result is a [`SecretString`]; the bytes read are moved into it, not
//! copied. Errors say what is wrong with the input by position or by name,
//! never by quoting it: YAML parser messages are replaced by the line and
//! column, because they can quote the value they choke on.

use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;

use super::Error;

/// The largest input read: far above any token or Secret manifest.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// Reads a token from a file, or from standard input when `path` is `None`
/// or `-`.
///
/// # Errors
/// [`Error::ReadTokenFile`], [`Error::ReadStdin`], [`Error::CheckInputSize`],
/// and the errors of [`token_from_input`].
pub fn read_token_input(path: Option<&Path>) -> Result<SecretString, Error> {
    let limit = u64::try_from(MAX_INPUT_BYTES).unwrap_or(u64::MAX) + 1;
    let mut bytes = Vec::new();
    match path {
        Some(path) if path != Path::new("-") => {
            let file = std::fs::File::open(path).map_err(|source| Error::ReadTokenFile {
                path: path.to_owned(),
                source,
            })?;
            file.take(limit)
                .read_to_end(&mut bytes)
                .map_err(|source| Error::ReadTokenFile {
                    path: path.to_owned(),
                    source,
                })?;
        }
        _ => {
            std::io::stdin()
                .lock()
                .take(limit)
                .read_to_end(&mut bytes)
                .map_err(|source| Error::ReadStdin { source })?;
        }
    }
    token_from_input(bytes)
}

/// Turns input bytes (a bare token or a Secret manifest) into the token.
///
/// # Errors
/// [`Error::CheckInputSize`], [`Error::DecodeUtf8`], [`Error::FindToken`],
/// [`Error::DecodeManifest`], [`Error::ReadSecretToken`],
/// [`Error::DecodeSecretData`].
pub fn token_from_input(bytes: Vec<u8>) -> Result<SecretString, Error> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(Error::CheckInputSize {
            len: bytes.len(),
            max: MAX_INPUT_BYTES,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| Error::DecodeUtf8 {
        offset: e.utf8_error().valid_up_to(),
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Error::FindToken);
    }
    if looks_like_bare_token(trimmed) {
        if trimmed.len() == text.len() {
            return Ok(SecretString::from(text));
        }
        return Ok(SecretString::from(trimmed.to_owned()));
    }
    token_from_manifest(trimmed)
}

/// A bare token is one word of text with no YAML/JSON structure in it.
fn looks_like_bare_token(text: &str) -> bool {
    !text.starts_with('{') && !text.contains(|c: char| c.is_whitespace() || c == ':')
}

fn token_from_manifest(text: &str) -> Result<SecretString, Error> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        Error::DecodeManifest { line, column }
    })?;
    let secret = find_secret(&value)?;
    if let Some(data) = secret.get("data").and_then(|d| d.get("token")) {
        let encoded = data.as_str().ok_or(Error::ReadSecretToken {
            reason: "data.token is not a string",
        })?;
        let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
        let decoded = STANDARD
            .decode(compact)
            .map_err(|source| Error::DecodeSecretData { source })?;
        let token = String::from_utf8(decoded).map_err(|e| Error::DecodeUtf8 {
            offset: e.utf8_error().valid_up_to(),
        })?;
        return Ok(SecretString::from(token.trim().to_owned()));
    }
    if let Some(plain) = secret.get("stringData").and_then(|d| d.get("token")) {
        let token = plain.as_str().ok_or(Error::ReadSecretToken {
            reason: "stringData.token is not a string",
        })?;
        return Ok(SecretString::from(token.trim().to_owned()));
    }
    Err(Error::ReadSecretToken {
        reason: "it has no data.token (nor stringData.token)",
    })
}

fn find_secret(value: &serde_yaml_ng::Value) -> Result<&serde_yaml_ng::Value, Error> {
    if !value.is_mapping() {
        return Err(Error::ReadSecretToken {
            reason: "the input is neither a JWT nor a YAML/JSON object",
        });
    }
    match value.get("kind").and_then(serde_yaml_ng::Value::as_str) {
        Some("List" | "SecretList") => value
            .get("items")
            .and_then(serde_yaml_ng::Value::as_sequence)
            .and_then(|items| {
                items.iter().find(|item| {
                    item.get("kind").and_then(serde_yaml_ng::Value::as_str) != Some("List")
                        && (item.get("data").and_then(|d| d.get("token")).is_some()
                            || item
                                .get("stringData")
                                .and_then(|d| d.get("token"))
                                .is_some())
                })
            })
            .ok_or(Error::ReadSecretToken {
                reason: "the List holds no Secret with a token",
            }),
        Some("Secret") | None => Ok(value),
        Some(_) => Err(Error::ReadSecretToken {
            reason: "its kind is not Secret",
        }),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn bare_tokens_are_trimmed() {
        let token = token_from_input(b"  aaa.bbb.ccc\n".to_vec()).expect("token");
        assert_eq!(token.expose_secret(), "aaa.bbb.ccc");
    }

    #[test]
    fn secret_manifests_in_yaml_and_json() {
        let yaml = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: t\ntype: kubernetes.io/service-account-token\ndata:\n  token: YWFhLmJiYi5jY2M=\n";
        assert_eq!(
            token_from_input(yaml.into()).expect("yaml").expose_secret(),
            "aaa.bbb.ccc"
        );
        let json = r#"{"kind":"Secret","apiVersion":"v1","stringData":{"token":"x.y.z"}}"#;
        assert_eq!(
            token_from_input(json.into()).expect("json").expose_secret(),
            "x.y.z"
        );
        let list = "kind: List\nitems:\n- kind: Secret\n  data:\n    ca.crt: AA==\n- kind: Secret\n  data:\n    token: YWFhLmJiYi5jY2M=\n";
        assert_eq!(
            token_from_input(list.into()).expect("list").expose_secret(),
            "aaa.bbb.ccc"
        );
    }

    #[test]
    fn bad_inputs_get_named_errors() {
        assert!(matches!(
            token_from_input(b"  \n".to_vec()),
            Err(Error::FindToken)
        ));
        assert!(matches!(
            token_from_input(vec![b'a', 0xff, b'b']),
            Err(Error::DecodeUtf8 { offset: 1 })
        ));
        assert!(matches!(
            token_from_input(vec![b'a'; MAX_INPUT_BYTES + 1]),
            Err(Error::CheckInputSize { .. })
        ));
        assert!(matches!(
            token_from_input(b"kind: ConfigMap\ndata:\n  token: x\n".to_vec()),
            Err(Error::ReadSecretToken { .. })
        ));
        assert!(matches!(
            token_from_input(b"kind: Secret\ndata:\n  token: '%%%'\n".to_vec()),
            Err(Error::DecodeSecretData { .. })
        ));
        let err = token_from_input(b"kind: Secret\ndata: [\n  token: eyJzZWNyZXQ\n".to_vec())
            .expect_err("bad yaml");
        assert!(matches!(err, Error::DecodeManifest { .. }), "{err:?}");
        assert!(!err.to_string().contains("eyJzZWNyZXQ"));
    }
}
