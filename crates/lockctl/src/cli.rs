//! The command line: clap's derive definitions and the value parsers.

use crate::exit::EXIT_CODES;
use clap::{ArgGroup, Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

const ABOUT: &str =
    "Run a command under a distributed lock, and inspect, list or force-release locks";

const LONG_ABOUT: &str = "\
Run a command under a distributed lock, and inspect, list or force-release locks.

lockctl is the command-line tool of the distlock library. It is configured by the library's
LOCK_* environment variables (LOCK_PROVIDER, LOCK_REDIS_URLS, LOCK_POSTGRES_URL,
LOCK_ETCD_ENDPOINTS, LOCK_DEFAULT_TTL, LOCK_REQUEST_TIMEOUT, ...), optionally over a TOML file
given with --config. LOCK_PROVIDER must be redis, postgres or etcd: the memory provider keeps
its locks inside one process, so lockctl refuses it (and it is the default when LOCK_PROVIDER
is unset).

Every call to the backend is bounded by LOCK_REQUEST_TIMEOUT (default 5s); connecting by the
backend's own connect timeout. Only `run` waits longer, and only as long as --timeout says.";

const AFTER_HELP: &str = "\
Examples:
  LOCK_PROVIDER=redis LOCK_REDIS_URLS=redis://10.0.0.5:6379 \\
      lockctl run nightly-report --no-wait -- ./report.sh
  lockctl inspect nightly-report
  lockctl list jobs/ --json
  lockctl release --force nightly-report";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "lockctl",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    after_long_help = format!("{AFTER_HELP}\n\n{EXIT_CODES}"),
    propagate_version = true
)]
pub(crate) struct Cli {
    /// A TOML file of settings, read before the environment (which overrides it). Its keys are
    /// the LOCK_* variable names without LOCK_, in lowercase: provider = "redis",
    /// redis_urls = "redis://10.0.0.5:6379", default_ttl = "1m". An unknown key is an error.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    Run(RunArgs),
    Inspect(InspectArgs),
    List(ListArgs),
    Release(ReleaseArgs),
    Completions(CompletionsArgs),
}

const RUN_LONG_ABOUT: &str = "\
Acquire a lock, run COMMAND while holding it, release it when COMMAND exits, and exit with
COMMAND's status.

The lock is a mutex by default; --read and --write take the read or write side of a
read-write lock, --semaphore LIMIT takes --permits N of a counting semaphore. Locks of
different kinds never interfere, even with the same name. lockctl waits until the lock is
free, unless --no-wait or --timeout say otherwise; while it waits on a terminal, one status
line on stderr says who holds the lock and how long lockctl has waited.

While COMMAND runs, the lease is extended in the background (every third of its TTL). COMMAND
gets in its environment:
  LOCK_NAME           the lock's name
  LOCK_FENCING_TOKEN  the lease's fencing token: a number larger than every token granted
                      before on this lock; pass it to the resource you protect, and have it
                      refuse writes with a token lower than the highest it has seen
  LOCK_OWNER          the owner recorded in the lease: LOCK_OWNER_ID, or lockctl@HOST:PID

SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to lockctl are forwarded to COMMAND, and lockctl goes
on waiting for it (SIGINT and SIGQUIT are not forwarded when lockctl is in the terminal's
foreground process group: the terminal delivers them to COMMAND itself). A signal that
arrives while lockctl waits for the lock ends the wait: lockctl exits with 128 + the signal's
number and COMMAND is not started.

If the lock is lost while COMMAND runs (force-released, or its extension could not be
confirmed before the lease could expire), lockctl sends COMMAND SIGTERM, then SIGKILL after
--kill-grace, and exits with 76; until then COMMAND may run next to a new holder. Without a
terminal, COMMAND runs in a process group of its own and the whole group gets the signals. If lockctl itself is killed with SIGKILL, nothing extends
the lease any more: the lock is free again after its TTL while COMMAND, if it still runs, runs
without it; supervisors that kill the whole process group (systemd's default) avoid that.";

/// `lockctl run`.
#[derive(Debug, Args)]
#[command(
    about = "Run a command while holding a lock; exit with its status",
    long_about = RUN_LONG_ABOUT,
    after_long_help = EXIT_CODES,
    group(ArgGroup::new("kind").args(["read", "write", "semaphore"])),
    group(ArgGroup::new("waiting").args(["timeout", "no_wait"]))
)]
pub(crate) struct RunArgs {
    /// The lock's name: any non-empty UTF-8 text up to 1024 bytes.
    #[arg(value_name = "NAME")]
    pub(crate) name: String,

    /// Take the read (shared) side of the read-write lock NAME.
    #[arg(long)]
    pub(crate) read: bool,

    /// Take the write (exclusive) side of the read-write lock NAME; a waiting writer holds off
    /// new readers.
    #[arg(long)]
    pub(crate) write: bool,

    /// Take permits of the counting semaphore NAME, which has LIMIT permits. Every user of
    /// the semaphore must give the same LIMIT.
    #[arg(long, value_name = "LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) semaphore: Option<u32>,

    /// How many of the semaphore's permits to take (1 to LIMIT).
    #[arg(
        long,
        value_name = "N",
        requires = "semaphore",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub(crate) permits: u32,

    /// The lease's time to live (e.g. 30s, 2m): how long the lock stays held after lockctl
    /// dies without releasing it. Default LOCK_DEFAULT_TTL (30s). At least 10ms, at most a year.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub(crate) ttl: Option<Duration>,

    /// Give up waiting for the lock after DURATION (e.g. 500ms, 10s, 5m) and exit with the
    /// busy code. Default: wait until the lock is free.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,

    /// Do not wait: one attempt, and if the lock is busy exit at once with the busy code.
    #[arg(long, short = 'n')]
    pub(crate) no_wait: bool,

    /// Stored with the lease and shown by `inspect` and `list`; repeat it for more pairs.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub(crate) metadata: Vec<(String, String)>,

    /// How long COMMAND has to exit after the SIGTERM sent when the lock is lost, before
    /// SIGKILL.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub(crate) kill_grace: Duration,

    /// The exit code when the lock is busy (--no-wait) or not acquired within --timeout, like
    /// flock's -E.
    #[arg(long, short = 'E', value_name = "N", default_value_t = crate::exit::BUSY)]
    pub(crate) conflict_exit_code: u8,

    /// The command to run under the lock, and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub(crate) command: Vec<OsString>,
}

/// `lockctl inspect`.
#[derive(Debug, Args)]
#[command(
    about = "Show the holders of a lock (every kind: mutex, read-write lock, semaphore)",
    long_about = "Show the current holders of the locks named NAME, of every kind (mutex, \
                  read-write lock, semaphore): a table of name, kind, owner, fencing token, \
                  mode, permits, time left before expiry and metadata, or with --json an array \
                  of the library's LockInfo (expires_at as seconds and nanoseconds since the \
                  Unix epoch). Prints \"\"NAME\" is not held\" (or []) when nobody holds it."
)]
pub(crate) struct InspectArgs {
    /// The lock's name.
    #[arg(value_name = "NAME")]
    pub(crate) name: String,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `lockctl list`.
#[derive(Debug, Args)]
#[command(
    about = "List the locks that are held, optionally under a name prefix",
    long_about = "List the locks that are held (every kind) whose names start with PREFIX, \
                  with their holders, as `inspect` shows them. lockctl reads the backend one \
                  bounded page at a time (each call within LOCK_REQUEST_TIMEOUT) and stops \
                  after --limit lock names or 100 pages, whichever comes first; when it \
                  stopped before the end it prints the cursor to go on with --after (in the \
                  JSON output: \"next\"). With --json it prints the library's LockPage: \
                  {\"locks\": [LockInfo...], \"next\": cursor or null}. A name may show twice \
                  if it changed while it was listed."
)]
pub(crate) struct ListArgs {
    /// Only locks whose names start with this (byte-wise); all locks when left out.
    #[arg(value_name = "PREFIX", default_value = "")]
    pub(crate) prefix: String,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,

    /// The most lock names to print.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub(crate) limit: u32,

    /// Go on from the cursor an earlier `list` printed when it stopped early.
    #[arg(long, value_name = "CURSOR")]
    pub(crate) after: Option<String>,
}

/// `lockctl release`.
#[derive(Debug, Args)]
#[command(
    about = "Force-release a lock: delete every lease of NAME, whoever holds it",
    long_about = "Delete every lease and waiting claim of every lock named NAME (every kind), \
                  whoever holds it, and print how many leases were removed. For an operator \
                  facing a stuck lock: holders find out at their next extension (a holder \
                  running under `lockctl run` gets SIGTERM and lockctl exits with 76). --force \
                  is required: lockctl never holds the lease it releases."
)]
pub(crate) struct ReleaseArgs {
    /// Required: confirms that every holder's lease is to be deleted.
    #[arg(long, required = true)]
    pub(crate) force: bool,

    /// The lock's name.
    #[arg(value_name = "NAME")]
    pub(crate) name: String,
}

/// `lockctl completions`.
#[derive(Debug, Args)]
#[command(
    about = "Print a shell completion script",
    long_about = "Print the completion script of SHELL on stdout. For example:\n  \
                  lockctl completions bash > /etc/bash_completion.d/lockctl\n  \
                  lockctl completions zsh > \"${fpath[1]}/_lockctl\"\n  \
                  lockctl completions fish > ~/.config/fish/completions/lockctl.fish"
)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_name = "SHELL")]
    pub(crate) shell: clap_complete::Shell,
}

/// A humantime duration with a unit: `500ms`, `30s`, `2m`, `1h 30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?} ({e}); give a number with a unit: 500ms, 30s, 2m")
    })
}

/// A duration that is a valid lease TTL (10ms to one year).
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text)?;
    lock::check_ttl("ttl", ttl).map_err(|e| match e {
        lock::Error::InvalidArgument { message } => message,
        other => other.to_string(),
    })?;
    Ok(ttl)
}

/// `KEY=VALUE`, split at the first `=`; the key must not be empty.
fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!(
            "expected KEY=VALUE with a non-empty KEY, got {text:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_parses_every_option() {
        let cli = Cli::try_parse_from([
            "lockctl",
            "run",
            "jobs/nightly",
            "--semaphore",
            "4",
            "--permits",
            "2",
            "--ttl",
            "2s",
            "--timeout",
            "1m",
            "--metadata",
            "host=a1",
            "--metadata",
            "note=x=y",
            "--kill-grace",
            "3s",
            "-E",
            "9",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.semaphore, Some(4));
        assert_eq!(run.permits, 2);
        assert_eq!(run.ttl, Some(Duration::from_secs(2)));
        assert_eq!(run.timeout, Some(Duration::from_secs(60)));
        assert_eq!(
            run.metadata,
            [("host".into(), "a1".into()), ("note".into(), "x=y".into())]
        );
        assert_eq!(run.kill_grace, Duration::from_secs(3));
        assert_eq!(run.conflict_exit_code, 9);
        assert_eq!(run.command, ["sh", "-c", "exit 3"]);
    }

    #[test]
    fn bad_runs_are_usage_errors() {
        for args in [
            &["lockctl", "run", "x", "true"][..],
            &["lockctl", "run", "x", "--read", "--write", "--", "true"],
            &[
                "lockctl",
                "run",
                "x",
                "--no-wait",
                "--timeout",
                "1s",
                "--",
                "true",
            ],
            &["lockctl", "run", "x", "--permits", "2", "--", "true"],
            &["lockctl", "run", "x", "--semaphore", "0", "--", "true"],
            &["lockctl", "run", "x", "--ttl", "0s", "--", "true"],
            &["lockctl", "run", "x", "--ttl", "30", "--", "true"],
            &["lockctl", "run", "x", "--metadata", "=v", "--", "true"],
            &["lockctl", "run", "x", "-E", "256", "--", "true"],
            &["lockctl", "run", "x", "--"],
            &["lockctl", "release", "x"],
        ] {
            let error = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        }
    }
}
