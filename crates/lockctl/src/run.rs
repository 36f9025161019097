//! `lockctl run`: acquire, run the command, supervise it, release, pass its status on.

use crate::cli::RunArgs;
use crate::exit::{self, Failure, chain};
use crate::settings;
use crate::show::{holders_summary, short_duration};
use crate::signals::{self, Caught, Signals};
use crate::status::{StatusLine, describe};
use lock::{Error, Guard, LockKind, Locker};
use rustix::process::Signal;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Runs `lockctl run` and returns the exit code: the command's status, or a failure.
pub(crate) async fn run(args: RunArgs, config: Option<&Path>) -> Result<u8, Failure> {
    // From here on, SIGINT and friends no longer kill lockctl: it cleans up, then exits.
    let mut signals = Signals::catch()
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot catch signals: {e}")))?;
    let locker = tokio::select! {
        locker = settings::connect(config) => locker?,
        caught = signals.recv() => {
            return Err(Failure::new(
                caught.exit_code(),
                format!("{} while connecting; the command was not started", caught.name()),
            ));
        }
    };
    let result = hold_and_run(&locker, &args, &mut signals).await;
    let report = locker.close().await;
    if report.not_released > 0 {
        say!(
            "lockctl: warning: {} lease(s) could not be released; they expire after their TTL",
            report.not_released
        );
    }
    result
}

/// The lock handle `run` asked for.
enum Handle {
    Mutex(lock::Mutex),
    Read(lock::RwMutex),
    Write(lock::RwMutex),
    Semaphore(lock::Semaphore, u32),
}

impl Handle {
    fn new(locker: &Locker, args: &RunArgs) -> Handle {
        macro_rules! configure {
            ($handle:expr) => {{
                // The lease lives as long as the command runs.
                let mut handle = $handle.auto_extend(true);
                if let Some(ttl) = args.ttl {
                    handle = handle.ttl(ttl);
                }
                if let Some(timeout) = args.timeout {
                    handle = handle.lock_timeout(timeout);
                }
                for (key, value) in &args.metadata {
                    handle = handle.metadata(key, value);
                }
                handle
            }};
        }
        let name = args.name.clone();
        if args.read {
            Handle::Read(configure!(locker.rw_mutex(name)))
        } else if args.write {
            Handle::Write(configure!(locker.rw_mutex(name)))
        } else if let Some(limit) = args.semaphore {
            Handle::Semaphore(configure!(locker.semaphore(name, limit)), args.permits)
        } else {
            Handle::Mutex(configure!(locker.mutex(name)))
        }
    }

    fn kind(&self) -> LockKind {
        match self {
            Handle::Mutex(_) => LockKind::Mutex,
            Handle::Read(_) | Handle::Write(_) => LockKind::RwMutex,
            Handle::Semaphore(..) => LockKind::Semaphore,
        }
    }

    /// `mutex "NAME"`, `read lock "NAME"`, `2 permits of semaphore "NAME"`, ...
    fn describe(&self, name: &str) -> String {
        match self {
            Handle::Mutex(_) => describe("mutex", name),
            Handle::Read(_) => describe("read lock", name),
            Handle::Write(_) => describe("write lock", name),
            Handle::Semaphore(semaphore, 1) => {
                format!(
                    "1 permit of {}",
                    describe_semaphore(name, semaphore.limit())
                )
            }
            Handle::Semaphore(semaphore, n) => {
                format!(
                    "{n} permits of {}",
                    describe_semaphore(name, semaphore.limit())
                )
            }
        }
    }

    async fn acquire(&self) -> lock::Result<Guard> {
        match self {
            Handle::Mutex(mutex) => mutex.lock().await,
            Handle::Read(rw) => rw.read().await,
            Handle::Write(rw) => rw.write().await,
            Handle::Semaphore(semaphore, n) => semaphore.acquire(*n).await,
        }
    }

    async fn try_acquire(&self) -> lock::Result<Option<Guard>> {
        match self {
            Handle::Mutex(mutex) => mutex.try_lock().await,
            Handle::Read(rw) => rw.try_read().await,
            Handle::Write(rw) => rw.try_write().await,
            Handle::Semaphore(semaphore, n) => semaphore.try_acquire(*n).await,
        }
    }
}

fn describe_semaphore(name: &str, limit: u32) -> String {
    format!("{} (limit {limit})", describe("semaphore", name))
}

/// Acquires, runs the command, releases.
async fn hold_and_run(
    locker: &Locker,
    args: &RunArgs,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    let handle = Handle::new(locker, args);
    let what = handle.describe(&args.name);
    let acquired = if args.no_wait {
        tokio::select! {
            acquired = handle.try_acquire() => acquired,
            caught = signals.recv() => return Err(interrupted(caught, &what)),
        }
    } else {
        let _status = StatusLine::start(
            locker,
            &args.name,
            handle.kind(),
            what.clone(),
            args.timeout,
        );
        tokio::select! {
            acquired = handle.acquire() => acquired.map(Some),
            caught = signals.recv() => return Err(interrupted(caught, &what)),
        }
    };
    let guard = match acquired {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            let holders = holders(locker, &args.name, handle.kind()).await;
            return Err(Failure::new(
                args.conflict_exit_code,
                format!("{what} is busy{holders}"),
            ));
        }
        Err(Error::NotAcquired { waited, .. }) => {
            let holders = holders(locker, &args.name, handle.kind()).await;
            return Err(Failure::new(
                args.conflict_exit_code,
                format!(
                    "{what} was not acquired within {}{holders}",
                    short_duration(waited)
                ),
            ));
        }
        Err(e) => return Err(Failure::from_lock(&e).context(format_args!("acquiring {what}"))),
    };
    // A signal that came while the lock was granted: do not start the command.
    if let Some(caught) = signals.pending().await {
        release(guard, &what).await;
        return Err(interrupted(caught, &what));
    }
    let (program, program_args) = args
        .command
        .split_first()
        .ok_or_else(|| Failure::new(exit::USAGE, "no command given after `--`"))?;
    // Without a terminal (cron, scripts, services) the command gets a process group of its own,
    // so a lost lock stops everything it started, not only its first process. On a terminal it
    // stays in lockctl's group, which keeps the terminal's foreground (a command that reads the
    // terminal keeps working); Ctrl-C then reaches all of it from the terminal itself.
    let own_group = !signals::has_terminal();
    let mut command = tokio::process::Command::new(program);
    command
        .args(program_args)
        .env("LOCK_NAME", &args.name)
        .env("LOCK_FENCING_TOKEN", guard.token().to_string())
        .env("LOCK_OWNER", locker.owner())
        // A backstop: if lockctl itself fails (a panic), the command is killed, not left
        // running without the lock.
        .kill_on_drop(true);
    if own_group {
        command.process_group(0);
    }
    let spawned = command.spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            release(guard, &what).await;
            return Err(spawn_failure(program, &e));
        }
    };
    supervise(child, guard, &what, args.kill_grace, own_group, signals).await
}

/// `: held by OWNER (token 7, ...)` from a bounded `inspect`, or nothing if that fails.
async fn holders(locker: &Locker, name: &str, kind: LockKind) -> String {
    match locker.inspect(name).await {
        Ok(all) => {
            let ours: Vec<_> = all.iter().filter(|h| h.kind == kind).collect();
            if ours.is_empty() {
                String::new()
            } else {
                format!(": {}", holders_summary(&ours, SystemTime::now()))
            }
        }
        Err(_) => String::new(),
    }
}

fn interrupted(caught: Caught, what: &str) -> Failure {
    Failure::new(
        caught.exit_code(),
        format!(
            "{} while waiting for {what}; the command was not started",
            caught.name()
        ),
    )
}

/// 127 for a command that does not exist, 126 for one that cannot be run, as a shell says.
fn spawn_failure(program: &OsString, error: &std::io::Error) -> Failure {
    let program = program.to_string_lossy();
    match error.kind() {
        ErrorKind::NotFound => {
            Failure::new(exit::NOT_FOUND, format!("{program}: command not found"))
        }
        _ => Failure::new(exit::NOT_EXECUTABLE, format!("{program}: {error}")),
    }
}

/// Releases the lease, warning on stderr when that fails.
async fn release(guard: Guard, what: &str) {
    if let Err(e) = guard.release().await {
        say!(
            "lockctl: warning: releasing the {what} failed ({}); it expires after its TTL",
            chain(&e)
        );
    }
}

/// Waits for the command while forwarding signals to it; stops it if the lock is lost; then
/// releases the lock and returns the command's status (or the lost code).
async fn supervise(
    mut child: tokio::process::Child,
    guard: Guard,
    what: &str,
    kill_grace: Duration,
    own_group: bool,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    let target = signals::Target::new(child.id(), own_group);
    let lost = guard.lost();
    tokio::pin!(lost);
    let grace = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(grace);
    let mut lost_at: Option<Instant> = None;
    let mut killed = false;
    let waited = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = &mut lost, if lost_at.is_none() => {
                // The signal first: nothing may delay it.
                target.send(Signal::TERM);
                say!(
                    "lockctl: lost the {what} while the command ran; sent it SIGTERM \
                     (SIGKILL in {})",
                    short_duration(kill_grace)
                );
                let now = Instant::now();
                lost_at = Some(now);
                grace.as_mut().reset(deadline(now, kill_grace));
            }
            () = &mut grace, if lost_at.is_some() && !killed => {
                target.send(Signal::KILL);
                killed = true;
                say!(
                    "lockctl: the command did not exit within {} of SIGTERM; sent it SIGKILL",
                    short_duration(kill_grace)
                );
            }
            caught = signals.recv() => {
                if target.own_group() || !caught.sent_by_terminal() {
                    target.forward(caught);
                }
            }
        }
    };
    let status = match waited {
        Ok(status) => status,
        Err(e) => {
            // Cannot happen for a child we spawned; stop it rather than leave it unlocked.
            target.send(Signal::KILL);
            release(guard, what).await;
            return Err(Failure::new(
                exit::SOFTWARE,
                format!("waiting for the command failed: {e}"),
            ));
        }
    };
    if lost_at.is_some() {
        // The release is still sent: a lease the backend still has (an extension that could
        // not be confirmed) goes now rather than after its TTL.
        let _ = guard.release().await;
        return Err(Failure::new(
            exit::LOST,
            format!(
                "the command was stopped because the {what} was lost ({})",
                describe_status(status)
            ),
        ));
    }
    match guard.release().await {
        Ok(()) => Ok(status_code(status)),
        Err(e @ (Error::NotHeld { .. } | Error::Lost { .. } | Error::Expired { .. })) => {
            Err(Failure::new(
                exit::LOST,
                format!(
                    "the {what} was lost before the command finished ({}; the command's {})",
                    chain(&e),
                    describe_status(status)
                ),
            ))
        }
        Err(e) => {
            say!(
                "lockctl: warning: releasing the {what} failed ({}); it expires after its TTL",
                chain(&e)
            );
            Ok(status_code(status))
        }
    }
}

/// `now + d`, or far away when that does not fit.
fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 60 * 60))
}

/// The command's status as a shell reports it: its exit code, or 128 + the signal that killed
/// it.
fn status_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(u8::MAX),
        (None, Some(signal)) => u8::try_from(128 + (signal & 0x7f)).unwrap_or(u8::MAX),
        (None, None) => exit::SOFTWARE,
    }
}

/// `exit status 3`, `killed by signal 15`.
fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_like_a_shell() {
        assert_eq!(status_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(status_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(status_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(status_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "killed by signal 9"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exit status 3"
        );
    }
}
