//! Text for operators, shared by both binaries: an error with its causes on one line, and the
//! redaction of secrets: a URL with its password hidden, client properties (librdkafka's
//! `sasl.password` and friends) with their values hidden. Pure functions, so that the sink and
//! agent-cli word their messages alike without either depending on the other. Every place that
//! shows a URL or a property goes through these; secrets held on their own are
//! [`crate::Secret`]s.

use std::collections::BTreeMap;

/// `err` and its sources on one line, `outer: inner: innermost`. A cause whose text the line
/// already holds (an error that prints its source itself) is not repeated.
pub fn one_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// `url` with any password replaced by `***`, for messages and logs. A user name alone
/// (`redis://token@host`) may be a secret too, so it is hidden as well.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

/// Whether the client property `key` (a librdkafka property such as `sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`) holds a secret: its
/// name mentions a password, a secret, a private key or a credential-bearing config string.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key.pem",
        "jaas",
        "oauthbearer.config",
        "token",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `value` as it may be shown for property `key`: `***` for a secret one, URLs redacted.
pub fn redact_property(key: &str, value: &str) -> String {
    if is_secret_property(key) {
        "***".to_owned()
    } else {
        redact_url(value)
    }
}

/// `properties` with every secret value replaced by `***` (see [`redact_property`]).
pub fn redact_properties(properties: &BTreeMap<String, String>) -> BTreeMap<&str, String> {
    properties
        .iter()
        .map(|(key, value)| (key.as_str(), redact_property(key, value)))
        .collect()
}

/// `url` without its `user[:password]@`, and that user and password, percent-decoded: how
/// credentials written into a URL are taken out of it before the URL is kept or shown.
pub fn split_userinfo(url: &str) -> (String, Option<(String, Option<String>)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_owned(), None);
    };
    let credentials = match userinfo.split_once(':') {
        Some((user, password)) => (percent_decode(user), Some(percent_decode(password))),
        None => (percent_decode(userinfo), None),
    };
    (format!("{scheme}://{host}{path}"), Some(credentials))
}

/// `%XX` escapes decoded (invalid ones kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn causes_follow_on_one_line_without_repeats() {
        assert_eq!(one_line(&Outer(Middle(Inner))), "outer: middle: inner");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/2"),
            "redis://:***@host:6379/2"
        );
        assert_eq!(redact_url("redis://user:pw@host"), "redis://user:***@host");
        assert_eq!(redact_url("redis://token@host"), "redis://***@host");
        assert_eq!(
            redact_url("redis://:pw@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://u:pw@h"), "rediss://u:***@h");
    }

    #[test]
    fn secret_properties_are_redacted() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
        ] {
            assert_eq!(redact_property(key, "s3cret"), "***", "{key}");
        }
        assert_eq!(redact_property("sasl.username", "sink"), "sink");
        assert_eq!(redact_property("security.protocol", "SASL_SSL"), "SASL_SSL");
        let properties = BTreeMap::from([
            ("sasl.password".to_owned(), "s3cret".to_owned()),
            ("compression.type".to_owned(), "zstd".to_owned()),
        ]);
        assert_eq!(
            format!("{:?}", redact_properties(&properties)),
            r#"{"compression.type": "zstd", "sasl.password": "***"}"#
        );
    }

    #[test]
    fn userinfo_leaves_the_url() {
        assert_eq!(
            split_userinfo("https://u%40x:p%3As@reg:8081/apis/ccompat/v7"),
            (
                "https://reg:8081/apis/ccompat/v7".to_owned(),
                Some(("u@x".to_owned(), Some("p:s".to_owned())))
            )
        );
        assert_eq!(
            split_userinfo("http://token@reg"),
            ("http://reg".to_owned(), Some(("token".to_owned(), None)))
        );
        assert_eq!(
            split_userinfo("http://reg:1/a@b"),
            ("http://reg:1/a@b".to_owned(), None)
        );
    }
}
