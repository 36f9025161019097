//! Hiding secrets in URLs before they reach `Debug` output or error messages: one mechanism
//! for the configuration and every backend.

use std::borrow::Cow;
use std::fmt;

/// What replaces a password.
const MASK: &str = "***";

/// Replaces the password of every `scheme://user:password@host` in `text` with `***`, and the
/// value of every `password=...` parameter (as in `postgres://host/db?password=...` or a
/// `key=value` connection string).
///
/// Errs on the side of hiding: when it is unclear where the user information of a URL ends,
/// more than the password may be masked.
///
/// ```
/// use lock_core::redact::redact;
/// assert_eq!(redact("redis://app:s3cret@cache:6379/0"), "redis://app:***@cache:6379/0");
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let has_url = text.contains("://");
    let has_param = text.to_ascii_lowercase().contains("password=");
    if !has_url && !has_param {
        return Cow::Borrowed(text);
    }
    let mut out = if has_url {
        redact_userinfo(text)
    } else {
        text.to_owned()
    };
    if has_param {
        out = redact_params(&out);
    }
    Cow::Owned(out)
}

/// The end of a URL inside a longer text: a space, a quote, or a list separator.
fn url_end(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | ';' | '[' | ']' | '<' | '>')
}

fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(url_end).unwrap_or(tail.len());
        let url = &tail[..end];
        // The user information ends at the last `@` before the query or fragment.
        let authority_end = url.find(['?', '#']).unwrap_or(url.len());
        match url[..authority_end].rfind('@') {
            Some(at) => match url[..at].find(':') {
                Some(colon) => {
                    out.push_str(&url[..=colon]);
                    out.push_str(MASK);
                    out.push_str(&url[at..]);
                }
                None => out.push_str(url),
            },
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_params(text: &str) -> String {
    const KEY: &str = "password=";
    // ASCII lowercasing keeps every byte offset.
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(found) = lower[pos..].find(KEY) {
        let value_start = pos + found + KEY.len();
        out.push_str(&text[pos..value_start]);
        let value_len = text[value_start..]
            .find(|c: char| c == '&' || url_end(c))
            .unwrap_or(text.len() - value_start);
        if value_len > 0 {
            out.push_str(MASK);
        }
        pos = value_start + value_len;
    }
    out.push_str(&text[pos..]);
    out
}

/// Shows a string (a URL) through [`redact`], quoted like `Debug` of a `str`.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*redact(self.0), f)
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_url_passwords() {
        assert_eq!(
            redact("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("rediss://:s3cret@host"), "rediss://:***@host");
        assert_eq!(
            redact("postgres://app:p%40ss@db.local:5432/app?sslmode=require"),
            "postgres://app:***@db.local:5432/app?sslmode=require"
        );
        // An unencoded `@` or `/` in the password is still hidden.
        assert_eq!(redact("redis://u:a@b/c@host"), "redis://u:***@host");
    }

    #[test]
    fn hides_every_url_of_a_list() {
        assert_eq!(
            redact("redis://a:x@h1:6379,redis://b:y@h2:6379, redis://h3"),
            "redis://a:***@h1:6379,redis://b:***@h2:6379, redis://h3"
        );
        assert_eq!(
            redact(r#"LOCK_REDIS_URLS: empty item in "redis://a:x@h1,,redis://h2""#),
            r#"LOCK_REDIS_URLS: empty item in "redis://a:***@h1,,redis://h2""#
        );
    }

    #[test]
    fn hides_password_parameters() {
        assert_eq!(
            redact("postgres://db/app?user=app&password=s3cret&sslmode=disable"),
            "postgres://db/app?user=app&password=***&sslmode=disable"
        );
        assert_eq!(
            redact("host=db user=app PASSWORD=s3cret dbname=app"),
            "host=db user=app PASSWORD=*** dbname=app"
        );
    }

    #[test]
    fn leaves_the_rest_alone() {
        for text in [
            "redis://localhost:6379",
            "redis://user@host",
            "localhost:2379",
            "lock:",
            "http://[::1]:2379",
            "ünïcödé://x",
        ] {
            assert_eq!(redact(text), text);
        }
    }
}
