//! `lockctl`: the `distlock` library (imported as `lock`) from a shell. Run a command under a distributed lock
//! (`lockctl run NAME -- COMMAND`), and inspect, list or force-release locks, on Redis,
//! PostgreSQL or etcd, configured by the library's `LOCK_*` variables. See the README and
//! `lockctl --help`.

#[cfg(not(unix))]
compile_error!("lockctl runs on Unix: it forwards Unix signals to its command");

/// `eprintln!` that cannot panic: a broken stderr pipe (`lockctl ... 2>&1 | logger`, logger
/// gone) must not stop lockctl between losing a lock and stopping its command.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
mod exit;
mod run;
mod settings;
mod show;
mod signals;
mod status;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, InspectArgs, ListArgs, ReleaseArgs};
use exit::Failure;
use lock::{ListCursor, ListRequest, LockInfo, LockPage, MAX_LIST_LIMIT};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// The most pages `list` reads in one call, each bounded by the request timeout.
const MAX_LIST_PAGES: usize = 100;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Completions(args) => {
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "lockctl", &mut out);
            print(&out)
        }
        command => match async_main(command, cli.config.as_deref()) {
            Ok(code) => code,
            Err(failure) => {
                if !failure.message.is_empty() {
                    say!("lockctl: {}", failure.message);
                }
                failure.code
            }
        },
    };
    ExitCode::from(code)
}

/// Runs a command that talks to the backend on a runtime of its own.
fn async_main(command: Command, config: Option<&Path>) -> Result<u8, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(async {
        match command {
            Command::Run(args) => run::run(args, config).await,
            Command::Inspect(args) => with_locker(config, |locker| inspect(locker, args)).await,
            Command::List(args) => with_locker(config, |locker| list(locker, args)).await,
            Command::Release(args) => with_locker(config, |locker| release(locker, args)).await,
            Command::Completions(_) => Ok(exit::OK),
        }
    });
    // Background tasks of the clients end with the runtime; none may keep lockctl alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Connects, runs `f`, closes the locker.
async fn with_locker<F, Fut>(config: Option<&Path>, f: F) -> Result<u8, Failure>
where
    F: FnOnce(lock::Locker) -> Fut,
    Fut: Future<Output = Result<u8, Failure>>,
{
    let locker = settings::connect(config).await?;
    let result = f(locker.clone()).await;
    locker.close().await;
    result
}

/// `lockctl inspect NAME [--json]`.
async fn inspect(locker: lock::Locker, args: InspectArgs) -> Result<u8, Failure> {
    let holders = locker
        .inspect(&args.name)
        .await
        .map_err(|e| Failure::from_lock(&e).context(format_args!("inspecting {:?}", args.name)))?;
    let text = if args.json {
        json(&holders)?
    } else if holders.is_empty() {
        format!("{:?} is not held\n", args.name)
    } else {
        show::table(&holders, SystemTime::now())
    };
    Ok(print(text.as_bytes()))
}

/// `lockctl list [PREFIX] [--json] [--limit N] [--after CURSOR]`: pages until the listing is
/// complete, `--limit` names are in, or [`MAX_LIST_PAGES`] pages were read.
async fn list(locker: lock::Locker, args: ListArgs) -> Result<u8, Failure> {
    let wanted = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let mut request = ListRequest::new(args.prefix.clone())
        .limit(wanted.min(MAX_LIST_LIMIT))
        .after(args.after.clone().map(ListCursor::new));
    let mut holders: Vec<LockInfo> = Vec::new();
    let mut seen_holders = HashSet::new();
    let mut names = HashSet::new();
    let mut next = None;
    for _ in 0..MAX_LIST_PAGES {
        let page = locker
            .list(&request)
            .await
            .map_err(|e| Failure::from_lock(&e).context("listing locks"))?;
        for holder in page.locks {
            // A name may show in two pages: keep each holder once.
            if seen_holders.insert((holder.name.clone(), holder.kind, holder.token)) {
                names.insert(holder.name.clone());
                holders.push(holder);
            }
        }
        next = page.next;
        let Some(cursor) = &next else { break };
        if names.len() >= wanted {
            break;
        }
        request = request
            .limit((wanted - names.len()).min(MAX_LIST_LIMIT))
            .after(Some(cursor.clone()));
    }
    let text = if args.json {
        json(&LockPage::new(holders, next.clone()))?
    } else if holders.is_empty() && next.is_none() {
        if args.prefix.is_empty() {
            "no locks are held\n".to_owned()
        } else {
            format!("no locks are held under {:?}\n", args.prefix)
        }
    } else {
        show::table(&holders, SystemTime::now())
    };
    let code = print(text.as_bytes());
    if let (Some(cursor), false) = (&next, args.json) {
        say!(
            "lockctl: stopped after {} lock names; more may follow: lockctl list {} --after {}",
            names.len(),
            shell_quote(&args.prefix),
            shell_quote(cursor.as_str())
        );
    }
    Ok(code)
}

/// `lockctl release --force NAME`.
async fn release(locker: lock::Locker, args: ReleaseArgs) -> Result<u8, Failure> {
    debug_assert!(args.force, "clap requires --force");
    let removed = locker.force_release(&args.name).await.map_err(|e| {
        Failure::from_lock(&e).context(format_args!("force-releasing {:?}", args.name))
    })?;
    let text = match removed {
        1 => format!("removed 1 lease of {:?}\n", args.name),
        n => format!("removed {n} leases of {:?}\n", args.name),
    };
    Ok(print(text.as_bytes()))
}

/// Pretty JSON with a final newline.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, Failure> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot write JSON: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// Writes to stdout; a closed pipe (`lockctl list | head`) is not an error.
fn print(bytes: &[u8]) -> u8 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            say!("lockctl: cannot write to stdout: {e}");
            exit::SOFTWARE
        }
    }
}

/// `text` quoted for a POSIX shell when it needs to be.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("jobs/"), "jobs/");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
    }
}
