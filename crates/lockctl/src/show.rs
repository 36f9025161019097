//! How holders are shown: a table, a one-line summary, durations.

use lock::{LockInfo, Mode};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

const HEADERS: [&str; 8] = [
    "NAME",
    "KIND",
    "OWNER",
    "TOKEN",
    "MODE",
    "PERMITS",
    "EXPIRES IN",
    "METADATA",
];

/// The holders as an aligned table with a header line, each line ending in `\n`.
pub(crate) fn table(holders: &[LockInfo], now: SystemTime) -> String {
    let rows: Vec<[String; 8]> = holders
        .iter()
        .map(|h| {
            [
                clean(&h.name),
                h.kind.to_string(),
                clean(&h.owner),
                h.token.to_string(),
                mode(h.mode).to_owned(),
                h.permits.to_string(),
                expires_in(h.expires_at, now),
                metadata(h),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String; 8]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&HEADERS.map(str::to_owned));
    for row in &rows {
        line(row);
    }
    out
}

/// `exclusive` or `shared`.
fn mode(mode: Mode) -> &'static str {
    match mode {
        Mode::Exclusive => "exclusive",
        Mode::Shared => "shared",
    }
}

/// `key=value` pairs joined by commas, or `-`.
fn metadata(holder: &LockInfo) -> String {
    if holder.metadata.is_empty() {
        return "-".to_owned();
    }
    holder
        .metadata
        .iter()
        .map(|(k, v)| format!("{}={}", clean(k), clean(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The time left before `expires_at`: `1.9s` under a minute, else `4m 10s`; `expired` once
/// past.
pub(crate) fn expires_in(expires_at: SystemTime, now: SystemTime) -> String {
    match expires_at.duration_since(now) {
        Ok(left) if !left.is_zero() => short_duration(left),
        _ => "expired".to_owned(),
    }
}

/// `1.9s` under a minute, else whole seconds in humantime's form (`4m 10s`).
pub(crate) fn short_duration(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// Text from the backend with control characters escaped, so a name holding a newline or an
/// escape sequence cannot break the table or the terminal.
pub(crate) fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One line about who holds a lock: `held by OWNER (token 7, expires in 3.2s)`, or a count
/// with the first two when several share it.
pub(crate) fn holders_summary(holders: &[&LockInfo], now: SystemTime) -> String {
    let one = |h: &LockInfo| {
        format!(
            "{} (token {}, {}{}expires in {})",
            clean(&h.owner),
            h.token,
            mode(h.mode),
            if h.permits > 1 {
                format!(", {} permits, ", h.permits)
            } else {
                ", ".to_owned()
            },
            expires_in(h.expires_at, now)
        )
    };
    match holders {
        [] => "no holder right now".to_owned(),
        [h] => format!("held by {}", one(h)),
        [a, b] => format!("held by {} and {}", one(a), one(b)),
        [a, b, rest @ ..] => format!("held by {}, {} and {} more", one(a), one(b), rest.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lock::{FencingToken, LockKey, LockKind, Metadata};

    fn holder(name: &str, owner: &str, token: u64, left: Duration, now: SystemTime) -> LockInfo {
        let key = LockKey::new(name, LockKind::Mutex).unwrap();
        let mut metadata = Metadata::new();
        metadata.insert("host".into(), "a1".into());
        LockInfo::new(
            &key,
            owner,
            FencingToken(token),
            Mode::Exclusive,
            1,
            now + left,
            metadata,
        )
    }

    #[test]
    fn tables_align_and_escape() {
        let now = SystemTime::now();
        let rows = [
            holder("jobs/a", "w1", 7, Duration::from_millis(2500), now),
            holder("b\nc", "worker-22", 1234, Duration::from_secs(250), now),
        ];
        let text = table(&rows, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("NAME    KIND   OWNER      TOKEN"),
            "{text}"
        );
        assert!(lines[1].contains("2.5s"), "{text}");
        assert!(lines[2].starts_with("b\\nc"), "{text}");
        assert!(lines[2].contains("4m 10s"), "{text}");
        assert!(lines[2].ends_with("host=a1"), "{text}");
    }

    #[test]
    fn durations_are_short() {
        let now = SystemTime::now();
        assert_eq!(expires_in(now, now), "expired");
        assert_eq!(expires_in(now - Duration::from_secs(1), now), "expired");
        assert_eq!(short_duration(Duration::from_millis(1940)), "1.9s");
        assert_eq!(short_duration(Duration::from_secs(3725)), "1h 2m 5s");
    }

    #[test]
    fn summaries_name_the_holders() {
        let now = SystemTime::now();
        let a = holder("x", "w1", 7, Duration::from_secs(3), now);
        assert_eq!(
            holders_summary(&[&a], now),
            "held by w1 (token 7, exclusive, expires in 3.0s)"
        );
        let b = holder("x", "w2", 8, Duration::from_secs(3), now);
        let c = holder("x", "w3", 9, Duration::from_secs(3), now);
        assert!(holders_summary(&[&a, &b, &c], now).ends_with("and 1 more"));
    }
}
