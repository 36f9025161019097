//! Settings given as text — `LOCK_*` environment variables, keys of a configuration file — and
//! the parsers every backend's configuration reads them with.
//!
//! Each backend owns its variables: its configuration type lists them as [`Setting`]s and
//! builds itself from [`Settings`] (`RedisConfig::from_settings`, ...). The `lock` crate only
//! collects what was given, picks the provider and hands the same [`Settings`] over; it does
//! not know a backend's variables. Errors name the variable, quote the value (passwords in
//! URLs hidden, see [`redact::redact`](crate::redact::redact)) and say where it was set when that was
//! not the environment.
//!
//! ```
//! use lock_core::settings::{Setting, Settings, Value};
//! use std::time::Duration;
//!
//! const TIMEOUT: Setting = Setting::new("LOCK_EXAMPLE_TIMEOUT", "example_timeout");
//! let mut given = Settings::new();
//! given.insert("example_timeout", Value::One("250ms".into()), "");
//! assert_eq!(given.duration(TIMEOUT).unwrap(), Some(Duration::from_millis(250)));
//!
//! given.insert("example_timeout", Value::One("30".into()), " (set in lock.toml)");
//! let err = given.duration(TIMEOUT).unwrap_err().to_string();
//! assert!(err.contains("LOCK_EXAMPLE_TIMEOUT: invalid duration \"30\""), "{err}");
//! assert!(err.ends_with("(set in lock.toml)"), "{err}");
//! ```

use crate::redact::{redact, redact_all};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

/// One setting: its environment variable and its key in other sources (the variable's name
/// without `LOCK_`, in lowercase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Setting {
    /// The environment variable, `LOCK_REDIS_URLS`.
    pub name: &'static str,
    /// The key in a configuration file or any figment provider, `redis_urls`.
    pub key: &'static str,
}

impl Setting {
    /// The setting `name` (`LOCK_REDIS_URLS`) with the key `key` (`redis_urls`).
    pub const fn new(name: &'static str, key: &'static str) -> Setting {
        Setting { name, key }
    }
}

/// A value as it was given: one text, or a list of texts (a file's array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A scalar, as its text (numbers and booleans too).
    One(String),
    /// A list of scalars.
    Many(Vec<String>),
}

/// The values given for settings, by key, each with where it was set.
///
/// Its parsers return `Ok(None)` for a setting that was not given, the parsed value when it
/// was, and an [`Error::Config`] naming the variable, the value and the origin when the value
/// is bad.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    given: BTreeMap<String, (Value, String)>,
}

impl Settings {
    /// No settings given: every parser returns `Ok(None)`, and [`error`](Self::error) names
    /// no origin. Configuration types check their fields against this when they were set in
    /// code.
    pub fn new() -> Settings {
        Settings::default()
    }

    /// Records `value` for `key`; `origin` is appended to errors about it (empty for the
    /// environment, ` (set as `key` by TOML file lock.toml)` for a file).
    pub fn insert(&mut self, key: impl Into<String>, value: Value, origin: impl Into<String>) {
        self.given.insert(key.into(), (value, origin.into()));
    }

    /// Whether `setting` was given.
    pub fn contains(&self, setting: Setting) -> bool {
        self.given.contains_key(setting.key)
    }

    /// The text `setting` was given as, trimmed, when it was one value: to quote the user's
    /// own spelling (`90s`, not `1m 30s`) in a later error.
    pub fn written(&self, setting: Setting) -> Option<&str> {
        match self.given.get(setting.key) {
            Some((Value::One(text), _)) => Some(text.trim()),
            _ => None,
        }
    }

    /// An [`Error::Config`] `NAME: problem (origin)`, with passwords in URLs hidden.
    pub fn error(&self, setting: Setting, problem: &str) -> Error {
        let origin = self
            .given
            .get(setting.key)
            .map_or("", |(_, origin)| origin.as_str());
        Error::config(redact(&format!("{}: {problem}{origin}", setting.name)))
    }

    /// A single value parsed by `parse`, whose error names the problem and the value.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `parse` fails or a list was given.
    pub fn parse<T>(
        &self,
        setting: Setting,
        parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        match self.given.get(setting.key) {
            None => Ok(None),
            Some((Value::One(text), _)) => parse(text)
                .map(Some)
                .map_err(|problem| self.error(setting, &problem)),
            Some((Value::Many(items), _)) => Err(self.error(
                setting,
                &format!(
                    "expected a single value, got the list {:?}",
                    redact_all(items)
                ),
            )),
        }
    }

    /// A text, trimmed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a list was given.
    pub fn text(&self, setting: Setting) -> Result<Option<String>> {
        self.parse(setting, |s| Ok(s.trim().to_owned()))
    }

    /// A duration with a unit (`30s`, `500ms`, `1m 30s`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the value has no unit or is not a duration.
    pub fn duration(&self, setting: Setting) -> Result<Option<Duration>> {
        self.parse(setting, parse_duration)
    }

    /// An integer; `expected` describes the range for the error (`"a non-negative integer"`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the value is not an integer of type `T`.
    pub fn int<T: FromStr>(&self, setting: Setting, expected: &str) -> Result<Option<T>> {
        self.parse(setting, |s| {
            let t = s.trim();
            t.parse()
                .map_err(|_| format!("invalid value {t:?} (expected {expected})"))
        })
    }

    /// A boolean: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, in any case.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for any other value.
    pub fn bool(&self, setting: Setting) -> Result<Option<bool>> {
        self.parse(setting, |s| {
            let t = s.trim();
            match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("invalid value {t:?} (expected true or false)")),
            }
        })
    }

    /// A list: one value, comma-separated values (spaces around items trimmed), `[a, b]`, or a
    /// list given by the source. Empty items are rejected; a comma inside a URL must be
    /// percent-encoded (`%2C`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the list or one of its items is empty.
    pub fn list(&self, setting: Setting) -> Result<Option<Vec<String>>> {
        let Some((value, _)) = self.given.get(setting.key) else {
            return Ok(None);
        };
        let (shown, items): (String, Vec<String>) = match value {
            Value::One(s) => {
                let trimmed = s.trim();
                let inner = trimmed
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .unwrap_or(trimmed);
                let items = inner.split(',').map(|item| unquote(item.trim())).collect();
                // Each item redacted on its own: only a lone URL can be redacted exactly.
                let shown: Vec<String> = s.split(',').map(|p| redact(p).into_owned()).collect();
                (shown.join(","), items)
            }
            Value::Many(items) => (
                format!("{:?}", redact_all(items)),
                items.iter().map(|item| unquote(item.trim())).collect(),
            ),
        };
        if items.iter().all(String::is_empty) {
            return Err(self.error(
                setting,
                &format!(
                    "must not be empty, got {shown:?} (give one value or a comma-separated list)"
                ),
            ));
        }
        if items.iter().any(String::is_empty) {
            return Err(self.error(
                setting,
                &format!("empty item in {shown:?} (items are separated by single commas)"),
            ));
        }
        Ok(Some(items))
    }

    /// A duration for an error message: as the user wrote it when `setting` was given, else as
    /// humantime writes `d` (`2years`, `1h 1m`, `250ms`).
    pub fn show_duration(&self, setting: Setting, d: Duration) -> String {
        match self.written(setting) {
            Some(text) => text.to_owned(),
            None => show_duration(d),
        }
    }
}

/// Strips one pair of matching quotes.
fn unquote(s: &str) -> String {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|t| t.strip_suffix(q)) {
            return inner.trim().to_owned();
        }
    }
    s.to_owned()
}

/// Parses a [humantime](https://docs.rs/humantime) duration that has a unit: `30s`, `500ms`,
/// `1m 30s`. A bare number is refused with a message that suggests a unit.
///
/// # Errors
///
/// The problem, quoting the text, when it is not a duration with a unit.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if t.parse::<f64>().is_ok_and(|n| n >= 0.0) {
        return Err(format!(
            "invalid duration {t:?}: a unit is required (e.g. {t}s or {t}ms)"
        ));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("invalid duration {t:?} (use a unit, e.g. 30s or 500ms)"))
}

/// A duration as humantime writes it (`2years`, `1h 1m`, `250ms`).
pub fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: Setting = Setting::new("LOCK_T_LIST", "t_list");

    fn given(value: Value) -> Settings {
        let mut settings = Settings::new();
        settings.insert("t_list", value, "");
        settings
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration(" 250ms "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        let err = parse_duration("30").unwrap_err();
        assert!(err.contains("unit is required"), "{err}");
        assert_eq!(
            parse_duration("abc").unwrap_err(),
            r#"invalid duration "abc" (use a unit, e.g. 30s or 500ms)"#
        );
    }

    #[test]
    fn lists_take_every_form() {
        for value in [
            Value::One("a, b".into()),
            Value::One("[a,b]".into()),
            Value::One(r#"["a", 'b']"#.into()),
            Value::Many(vec!["a".into(), " b ".into()]),
        ] {
            assert_eq!(
                given(value).list(LIST).unwrap(),
                Some(vec!["a".to_owned(), "b".to_owned()])
            );
        }
        let err = given(Value::One("a,,b".into())).list(LIST).unwrap_err();
        assert!(err.to_string().contains("LOCK_T_LIST: empty item"), "{err}");
        let err = given(Value::One(" ".into())).list(LIST).unwrap_err();
        assert!(err.to_string().contains("must not be empty"), "{err}");
        assert_eq!(Settings::new().list(LIST).unwrap(), None);
    }

    #[test]
    fn errors_hide_passwords_and_name_the_origin() {
        let mut settings = Settings::new();
        settings.insert(
            "t_list",
            Value::Many(vec!["redis://u:s3cret@h".into()]),
            " (set in a file)",
        );
        let err = settings.text(LIST).unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(
            err.contains("LOCK_T_LIST: expected a single value"),
            "{err}"
        );
        assert!(err.ends_with("(set in a file)"), "{err}");
    }

    #[test]
    fn booleans_and_integers() {
        assert_eq!(
            given(Value::One("Yes".into())).bool(LIST).unwrap(),
            Some(true)
        );
        assert!(given(Value::One("maybe".into())).bool(LIST).is_err());
        assert_eq!(
            given(Value::One(" 7 ".into()))
                .int::<u32>(LIST, "a count")
                .unwrap(),
            Some(7)
        );
        let err = given(Value::One("-1".into()))
            .int::<u32>(LIST, "a count")
            .unwrap_err();
        assert!(err.to_string().contains("(expected a count)"), "{err}");
    }
}
