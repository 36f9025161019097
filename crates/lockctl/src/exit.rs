//! Exit codes, and the failures that carry them.

use std::fmt;

/// The command ran, or the lock was not held: success.
pub(crate) const OK: u8 = 0;
/// A usage error: an unknown option or a bad value (clap's code), or an argument the library
/// rejects (a name over 1024 bytes, `--permits` above the limit, a semaphore limit that differs
/// from the stored one).
pub(crate) const USAGE: u8 = 2;
/// `EX_UNAVAILABLE`: the backend could not be reached, failed, did not answer in time, or
/// cannot do what was asked.
pub(crate) const UNAVAILABLE: u8 = 69;
/// `EX_SOFTWARE`: an internal error.
pub(crate) const SOFTWARE: u8 = 70;
/// `EX_TEMPFAIL`: the lock is busy (`--no-wait`), or was not acquired within `--timeout`.
/// `--conflict-exit-code` replaces it.
pub(crate) const BUSY: u8 = 75;
/// The lock was lost while the command ran (it was force-released, expired, or its extension
/// could not be confirmed in time).
pub(crate) const LOST: u8 = 76;
/// `EX_CONFIG`: a bad `LOCK_*` value or configuration file, or a provider lockctl cannot use.
pub(crate) const CONFIG: u8 = 78;
/// The command was found but could not be executed (as a shell says).
pub(crate) const NOT_EXECUTABLE: u8 = 126;
/// The command was not found (as a shell says).
pub(crate) const NOT_FOUND: u8 = 127;

/// The exit codes, for `--help` and the README.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0        success (run: the command's own status is passed through, whatever it is)
  2        usage error: a bad option or value, or an argument the library rejects
  69       the backend is unreachable, failed, did not answer within LOCK_REQUEST_TIMEOUT,
           or cannot do this (EX_UNAVAILABLE)
  70       internal error (EX_SOFTWARE)
  75       run: the lock is busy (--no-wait) or was not acquired within --timeout
           (EX_TEMPFAIL; --conflict-exit-code N replaces it)
  76       run: the lock was lost while the command ran; the command got SIGTERM
           (then SIGKILL after --kill-grace)
  78       configuration error: a bad LOCK_* value (the message names the variable), an
           unreadable --config file, or LOCK_PROVIDER memory or unset (EX_CONFIG)
  126      run: the command could not be executed
  127      run: the command was not found
  128+N    run: the command was killed by signal N, or lockctl was interrupted by signal N
           while it waited for the lock (130 for SIGINT, 143 for SIGTERM)
  other    run: the command's exit status";

/// A command that did not succeed: the exit code and what to print on stderr (nothing when
/// empty).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// The exit code of a library error, and its message with every source.
    pub(crate) fn from_lock(error: &lock::Error) -> Self {
        let code = match error {
            lock::Error::Config { .. } => CONFIG,
            lock::Error::InvalidArgument { .. } => USAGE,
            lock::Error::ProviderUnavailable { .. } | lock::Error::Unsupported { .. } => {
                UNAVAILABLE
            }
            lock::Error::NotAcquired { .. } => BUSY,
            lock::Error::Lost { .. }
            | lock::Error::Expired { .. }
            | lock::Error::NotHeld { .. } => LOST,
            _ => SOFTWARE,
        };
        Failure::new(code, chain(error))
    }

    /// Adds what was being done in front of the message.
    pub(crate) fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

/// An error and its sources, joined by `: `.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some client errors repeat their source's text; say it once.
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
    use super::*;

    #[test]
    fn codes_follow_the_errors() {
        let unavailable =
            lock::Error::unavailable("redis", std::io::Error::other("connection refused"));
        let failure = Failure::from_lock(&unavailable);
        assert_eq!(failure.code, UNAVAILABLE);
        assert_eq!(
            failure.message,
            "redis backend unavailable: connection refused"
        );
        assert_eq!(
            Failure::from_lock(&lock::Error::config("LOCK_DEFAULT_TTL: bad")).code,
            CONFIG
        );
        assert_eq!(
            Failure::from_lock(&lock::Error::invalid_argument("n > limit")).code,
            USAGE
        );
        assert_eq!(
            Failure::from_lock(&lock::Error::Lost { name: "x".into() }).code,
            LOST
        );
    }
}
