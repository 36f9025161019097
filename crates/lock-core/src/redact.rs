//! Hiding secrets in URLs before they reach `Debug` output or error messages: one mechanism
//! for the configuration and every backend.

use std::borrow::Cow;
use std::fmt;
use url::Url;
use url::form_urlencoded;

/// What replaces a password.
const MASK: &str = "***";

/// Query parameters whose value is a password (compared without regard to case).
const SECRET_PARAMS: [&str; 3] = ["password", "pass", "passwd"];

/// Hides the passwords in `text`: a URL, a `host:port` endpoint, or a longer text such as an
/// error message.
///
/// - **One URL or endpoint** (no whitespace inside, at most one `://`): the password of the
///   user information (`scheme://user:password@host`, or `user:password@host` without a
///   scheme) becomes `***`, whatever characters it holds — a raw `,` `'` `"` `;` `/` or `@`
///   included: the user information runs to the *last* `@` before the query. The rest is
///   parsed with the [`url`] crate, and the values of the `password`, `pass` and `passwd`
///   query parameters (any case, percent-encoded keys included) become `***`
///   (`redis+unix:///run/redis.sock?db=0&pass=***`). Nothing else changes.
/// - **Any other text** (an error message holding URLs, a `key=value` connection string, a
///   comma-joined list): a conservative scan that errs on the side of hiding. In each URL the
///   user information runs from `://` to the last `@` before a space, a quote or the next
///   `scheme://`; `user:password@host` words are masked the same way; and the value of every
///   key ending in `pass`, `passwd` or `password` followed by `=` is masked up to the next
///   space, `&` or quote (or the whole `'quoted value'`). More than the password may be
///   hidden.
///
/// Redact the items of a list one by one (as `Debug` of the configurations does) rather than
/// their joined text: only a lone URL can be redacted exactly.
///
/// ```
/// use lock_core::redact::redact;
/// assert_eq!(redact("redis://app:s3cret@cache:6379/0"), "redis://app:***@cache:6379/0");
/// assert_eq!(redact("postgres://app:pa,ss@db/app"), "postgres://app:***@db/app");
/// assert_eq!(
///     redact("redis+unix:///run/redis.sock?db=0&pass=s3cret"),
///     "redis+unix:///run/redis.sock?db=0&pass=***"
/// );
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let trimmed = text.trim();
    let one_value = !trimmed.contains(char::is_whitespace) && trimmed.matches("://").count() <= 1;
    let redacted = if one_value {
        redact_one(trimmed)
    } else {
        redact_text(trimmed)
    };
    if redacted == trimmed {
        return Cow::Borrowed(text);
    }
    let start = text.len() - text.trim_start().len();
    let end = start + trimmed.len();
    Cow::Owned(format!("{}{redacted}{}", &text[..start], &text[end..]))
}

/// Redacts the items of a list one by one.
pub fn redact_all<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    items
        .iter()
        .map(|item| redact(item.as_ref()).into_owned())
        .collect()
}

/// The passwords [`redact`] hides in one URL or endpoint (`value`), each as written and, when
/// different, percent-decoded: to scrub them from a client library's error texts, which may
/// quote them in forms `redact` cannot recognise.
///
/// ```
/// use lock_core::redact::passwords;
/// assert_eq!(passwords("redis://u:p%40ss@h:6379"), ["p%40ss", "p@ss"]);
/// assert_eq!(passwords("redis+unix:///r.sock?pass=s3cret"), ["s3cret"]);
/// assert!(passwords("redis://h:6379").is_empty());
/// ```
pub fn passwords(value: &str) -> Vec<String> {
    let value = value.trim();
    let mut found = Vec::new();
    let mut add = |raw: &str| {
        if raw.is_empty() {
            return;
        }
        found.push(raw.to_owned());
        let decoded: String = form_urlencoded::parse(format!("x={raw}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !decoded.is_empty() && decoded != raw {
            found.push(decoded);
        }
    };
    let rest = &value[value.find("://").map_or(0, |i| i + 3)..];
    let authority_end = rest.find(['?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..authority_end].rfind('@')
        && let Some((_, password)) = rest[..at].split_once(':')
    {
        add(password);
    }
    if authority_end < rest.len() && rest[authority_end..].starts_with('?') {
        let query = &rest[authority_end + 1..];
        let query = &query[..query.find('#').unwrap_or(query.len())];
        for pair in query.split('&') {
            if let Some((key, raw)) = pair.split_once('=') {
                let key = form_urlencoded::parse(key.as_bytes())
                    .next()
                    .map(|(k, _)| k.into_owned())
                    .unwrap_or_default();
                if is_secret_param(&key, true) {
                    add(raw);
                }
            }
        }
    }
    found
}

/// One URL or endpoint, without whitespace.
fn redact_one(value: &str) -> String {
    let masked = mask_userinfo(value);
    if !masked.contains("://") {
        // An endpoint or a `key=value` pair: no structure to parse.
        return mask_params(&masked);
    }
    match Url::parse(&masked) {
        Ok(url) => {
            let secret = url
                .query_pairs()
                .any(|(key, _)| is_secret_param(&key, true));
            if secret { mask_query(&masked) } else { masked }
        }
        // Not a URL the parser accepts (a raw `#` or `?` in a password, say): mask more.
        Err(_) => mask_params(&masked),
    }
}

/// Masks the password of the user information of one URL or endpoint: from the first `:` after
/// `scheme://` to the last `@` before the query or fragment.
fn mask_userinfo(value: &str) -> String {
    let rest_start = value.find("://").map_or(0, |i| i + 3);
    let rest = &value[rest_start..];
    let authority_end = rest.find(['?', '#']).unwrap_or(rest.len());
    // A password holding a raw `?` or `#` (not percent-encoded) ends the authority early as a
    // URL parser reads it: when what comes before has no path (`/`), mask up to the last `@`,
    // at the risk of masking more than the password, never less.
    let early = &rest[..authority_end];
    let Some(at) = early
        .rfind('@')
        .or_else(|| (!early.contains('/')).then(|| rest.rfind('@')).flatten())
    else {
        return value.to_owned();
    };
    let userinfo = &rest[..at];
    let Some(colon) = userinfo.find(':') else {
        // A user name only.
        return value.to_owned();
    };
    format!(
        "{}{}{MASK}{}",
        &value[..rest_start],
        &userinfo[..=colon],
        &rest[at..]
    )
}

/// Masks the values of the password parameters of a URL's query, which the [`Url`] parser found
/// there. Works on the text itself, so that nothing else changes.
fn mask_query(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_owned();
    };
    let query_end = url[q..].find('#').map_or(url.len(), |i| q + i);
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..=q]);
    for (i, pair) in url[q + 1..query_end].split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let key = form_urlencoded::parse(pair.as_bytes())
            .next()
            .map(|(key, _)| key);
        match (pair.split_once('='), key) {
            (Some((raw_key, value)), Some(key))
                if !value.is_empty() && is_secret_param(&key, true) =>
            {
                out.push_str(raw_key);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(pair),
        }
    }
    out.push_str(&url[query_end..]);
    out
}

/// Whether `key` names a password: exactly one of [`SECRET_PARAMS`], or (`exact == false`)
/// any key ending in one.
fn is_secret_param(key: &str, exact: bool) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_PARAMS
        .iter()
        .any(|p| if exact { key == *p } else { key.ends_with(p) })
}

/// A text that is not one URL: each word (between spaces and quotes) is redacted on its own,
/// then every password parameter of the whole text.
fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_start = 0;
    let mut prev = None;
    for (i, c) in text.char_indices() {
        if ends_word(c, prev) {
            out.push_str(&redact_word(&text[word_start..i]));
            out.push(c);
            word_start = i + c.len_utf8();
        }
        prev = Some(c);
    }
    out.push_str(&redact_word(&text[word_start..]));
    mask_params(&out)
}

/// Ends a word of a text: whitespace, or a quote that is not escaped by a backslash (as in
/// `Debug` output).
fn ends_word(c: char, prev: Option<char>) -> bool {
    c.is_whitespace() || (matches!(c, '"' | '`' | '<' | '>') && prev != Some('\\'))
}

/// One word of a text: each URL in it (a word may hold several, as in a comma-joined list) or
/// a `user:password@host` endpoint.
fn redact_word(word: &str) -> String {
    if !word.contains('@') {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    loop {
        // The next URL starts at the scheme before the second `://` of `rest`.
        let second = rest
            .find("://")
            .and_then(|first| rest[first + 3..].find("://").map(|i| first + 3 + i));
        let Some(sep) = second else {
            out.push_str(&mask_userinfo(rest));
            return out;
        };
        let scheme_start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        out.push_str(&mask_userinfo(&rest[..scheme_start]));
        rest = &rest[scheme_start..];
        if scheme_start == 0 {
            // No scheme before this `://`: nothing to split at.
            out.push_str(&mask_userinfo(rest));
            return out;
        }
    }
}

/// Masks the value of every `...pass=`, `...passwd=` or `...password=` in a text: up to the
/// next space, `&` or unescaped `"`, or a whole single-quoted value (libpq's `key='value'`,
/// with `''` or `\'` inside).
fn mask_params(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find('=') {
        let eq = search + found;
        search = eq + 1;
        let key_start = lower[..eq]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        if eq < pos || !is_secret_param(&lower[key_start..eq], false) {
            continue;
        }
        let value_start = eq + 1;
        let value_len = value_len(&text[value_start..]);
        out.push_str(&text[pos..value_start]);
        if value_len > 0 {
            out.push_str(MASK);
        }
        pos = value_start + value_len;
        search = pos;
    }
    out.push_str(&text[pos..]);
    out
}

/// The length of a parameter's value at the start of `rest`.
fn value_len(rest: &str) -> usize {
    let mut chars = rest.char_indices().peekable();
    if rest.starts_with('\'') {
        chars.next();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' if chars.peek().is_some_and(|&(_, n)| n == '\'') => {
                    chars.next();
                }
                '\'' => return i + 1,
                _ => {}
            }
        }
        return rest.len();
    }
    let mut prev = None;
    for (i, c) in chars {
        if c.is_whitespace() || c == '&' || (c == '"' && prev != Some('\\')) {
            return i;
        }
        prev = Some(c);
    }
    rest.len()
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
    fn hides_passwords_with_raw_question_marks_and_hashes() {
        for url in [
            "redis://user:pa#ss@host:6379/0",
            "redis://:pa?ss@host",
            "postgres://app:a#b?c@db:5432/app?sslmode=disable",
        ] {
            let shown = redact(url);
            for secret in ["pa#ss", "pa?ss", "a#b?c"] {
                assert!(!shown.contains(secret), "{url} shown as {shown}");
            }
            assert!(shown.contains("***"), "{url} shown as {shown}");
        }
        // An `@` in a path or query is not a password's end.
        assert_eq!(redact("redis://h:1/0?x=@"), "redis://h:1/0?x=@");
        assert_eq!(redact("redis://h/0#a:b@c"), "redis://h/0#a:b@c");
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

    /// Review finding 6: redis-rs reads the password of a Unix-socket URL from `?pass=`.
    #[test]
    fn hides_pass_and_passwd_query_parameters() {
        assert_eq!(
            redact("redis+unix:///run/redis.sock?db=0&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=0&pass=***"
        );
        assert_eq!(
            redact("unix:///run/redis.sock?PASSWD=s3cret&db=1"),
            "unix:///run/redis.sock?PASSWD=***&db=1"
        );
        assert_eq!(
            redact("postgres://db/app?Password=s,3'cr@t&sslmode=disable"),
            "postgres://db/app?Password=***&sslmode=disable"
        );
        // A percent-encoded key is still the key.
        assert_eq!(
            redact("redis+unix:///s.sock?pa%73s=s3cret"),
            "redis+unix:///s.sock?pa%73s=***"
        );
        // Other parameters that merely end in `pass` are left alone.
        assert_eq!(redact("redis://h/0?bypass=1"), "redis://h/0?bypass=1");
    }

    /// Review finding 6: a password holding `,` `'` `@` or `/` (valid in a URL) is hidden whole.
    #[test]
    fn hides_passwords_whatever_they_hold() {
        for (url, shown) in [
            (
                "postgres://app:pa,ss@db:5432/app",
                "postgres://app:***@db:5432/app",
            ),
            (
                "postgres://app:it's@db:5432/app",
                "postgres://app:***@db:5432/app",
            ),
            ("redis://u:a/b@host:6379/0", "redis://u:***@host:6379/0"),
            ("redis://u:a@b@host", "redis://u:***@host"),
            ("redis://u:\"x;y<z>@host?db=0", "redis://u:***@host?db=0"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
            // Surrounding spaces do not make it a text.
            assert_eq!(redact(&format!(" {url} ")), format!(" {shown} "), "{url}");
        }
    }

    #[test]
    fn hides_credentials_without_a_scheme() {
        assert_eq!(redact("root:s3cret@e1:2379"), "root:***@e1:2379");
        assert_eq!(redact("root@e1:2379"), "root@e1:2379");
    }

    /// The fallback for texts that are not one URL errs on the side of hiding.
    #[test]
    fn hides_urls_inside_texts() {
        for secret in ["pa,ss", "it's", "a/b", "x@y"] {
            let text =
                format!("cannot connect to \"postgres://app:{secret}@db:5432/app\": refused");
            let shown = redact(&text);
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("postgres://app:***@"), "{shown}");
            assert!(shown.ends_with(": refused"), "{shown}");
        }
        let shown = redact("redis+unix:///s.sock?db=0&pass=s3cret failed");
        assert_eq!(shown, "redis+unix:///s.sock?db=0&pass=*** failed");
        let shown = redact("host=db user=app passwd=s3cret dbname=app");
        assert_eq!(shown, "host=db user=app passwd=*** dbname=app");
        let shown = redact("host=db password='it''s a secret' dbname=app");
        assert_eq!(shown, "host=db password=*** dbname=app");
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
