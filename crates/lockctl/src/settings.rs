//! The configuration: an optional TOML file under the `LOCK_*` environment variables, and the
//! connection to the backend.

use crate::exit::{self, Failure};
use figment::Figment;
use figment::providers::{Format, Toml};
use lock::config::EnvVars;
use lock::{Config, Locker, Provider};
use std::path::Path;

/// Loads the configuration: the defaults, then `file`, then the `LOCK_*` variables. Warns on
/// stderr about unknown `LOCK_*` variables. The owner id defaults to `lockctl@HOST:PID`.
pub(crate) fn load(file: Option<&Path>) -> Result<Config, Failure> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        // figment reads a missing file as an empty one: say so instead.
        if let Err(e) = std::fs::File::open(path) {
            return Err(Failure::new(
                exit::CONFIG,
                format!("cannot read the configuration file {}: {e}", path.display()),
            ));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(EnvVars::new());
    // LOCK_NAME, LOCK_FENCING_TOKEN and LOCK_OWNER (what `run` gives its command, seen by a
    // nested lockctl) are not reported by the library.
    for unknown in Config::unknown_env_vars() {
        say!("lockctl: warning: {unknown}");
    }
    let mut config = Config::from_figment(&figment).map_err(|e| Failure::from_lock(&e))?;
    if config.provider == Provider::Memory {
        return Err(Failure::new(exit::CONFIG, memory_refused(&figment)));
    }
    if config.owner_id.is_none() {
        config.owner_id = Some(default_owner());
    }
    Ok(config)
}

/// Why the memory provider is refused, and what to set instead.
fn memory_refused(figment: &Figment) -> String {
    let given = if figment.find_value("provider").is_ok() {
        "LOCK_PROVIDER is memory"
    } else {
        "LOCK_PROVIDER is not set (the default is memory)"
    };
    let enabled: Vec<&str> = Provider::ALL
        .into_iter()
        .filter(|p| *p != Provider::Memory && p.is_enabled())
        .map(Provider::as_str)
        .collect();
    let choices = match enabled.split_last() {
        None => "a network backend (this build has none: enable a Cargo feature)".to_owned(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    };
    format!(
        "{given}: the memory provider keeps its locks inside one process, so lockctl cannot \
         use it; set LOCK_PROVIDER to {choices} (or `provider` in the --config file)"
    )
}

/// `lockctl@HOST:PID`: tells an operator reading `inspect` where the holder runs.
fn default_owner() -> String {
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    let host = if host.is_empty() { "localhost" } else { &host };
    format!("lockctl@{host}:{}", std::process::id())
}

/// Loads the configuration and connects to its backend.
pub(crate) async fn connect(file: Option<&Path>) -> Result<Locker, Failure> {
    let config = load(file)?;
    Locker::new(config)
        .await
        .map_err(|e| Failure::from_lock(&e))
}
