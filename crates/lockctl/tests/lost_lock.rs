//! `lockctl run` leaves nothing of its command running once the lock is lost (review of issue
//! 11, findings 1 and 2), on Redis (`LOCK_TEST_REDIS_URLS`):
//!
//! 1. without a terminal the command has a process group of its own, and the lost path signals
//!    the group: a process the command started (a shell script's `sleep`) stops too;
//! 2. a broken stderr pipe cannot stop lockctl before it signals the command (it wrote with
//!    `eprintln!`, which panics there, before sending SIGTERM).

mod common;

use common::{Ctx, LOCKCTL, redis};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `pid` runs (a zombie, dead but not yet reaped by its new parent, does not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether `pid` still runs once `within` has passed (returns as soon as it is gone): the
/// signal reaches it at once, it may take a moment to exit.
fn still_alive_after(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    alive(pid)
}

fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn force_release(ctx: &Ctx) {
    let ran = ctx.run(&["release", "--force", &ctx.name]);
    assert!(ran.status.success(), "release --force: {}", ran.stderr);
}

/// The command starts a grandchild (`sleep`, not exec'd); the lock is force-released;
/// lockctl exits 76 and the grandchild is stopped too.
#[test]
fn a_lost_lock_stops_what_the_command_started() {
    let Some(backend) = redis() else { return };
    let ctx = Ctx::new(&backend, "grandchild");
    let pidfile = ctx.path("grandchild.pid");
    let script = format!("sleep 120 & echo $! > {}; wait", pidfile.to_str().unwrap());
    let proc = ctx.spawn(&[
        "run",
        &ctx.name,
        "--ttl",
        "5s",
        "--kill-grace",
        "1s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let grandchild: i32 = wait_for_file(&pidfile).parse().unwrap();
    force_release(&ctx);
    let ran = proc.wait(Duration::from_secs(30));
    assert_eq!(ran.status.code(), Some(76), "{}", ran.stderr);
    let survived = still_alive_after(grandchild, Duration::from_secs(5));
    let _ = Command::new("kill").arg(grandchild.to_string()).status();
    assert!(
        !survived,
        "lockctl exited 76 (lock lost) but the command's process {grandchild} still runs, \
         without the lock"
    );
}

/// lockctl's stderr is a pipe whose reader is gone (`lockctl run ... 2>&1 | logger`, logger
/// died). Losing the lock still stops the command.
#[test]
fn a_broken_stderr_pipe_does_not_keep_the_command_running_unlocked() {
    let Some(backend) = redis() else { return };
    let ctx = Ctx::new(&backend, "brokenpipe");
    let pidfile = ctx.path("child.pid");
    let script = format!("echo $$ > {}; exec sleep 120", pidfile.to_str().unwrap());
    let mut command = Command::new(LOCKCTL);
    command
        .args([
            "run",
            &ctx.name,
            "--ttl",
            "5s",
            "--kill-grace",
            "1s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LOCK_") {
            command.env_remove(key);
        }
    }
    command.envs(ctx.env.iter().map(|(k, v)| (k, v)));
    let mut lockctl = command.spawn().unwrap();
    drop(lockctl.stderr.take()); // the reader goes away
    let child: i32 = wait_for_file(&pidfile).parse().unwrap();
    force_release(&ctx);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = lockctl.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "lockctl did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    let survived = still_alive_after(child, Duration::from_secs(5));
    let _ = Command::new("kill").arg(child.to_string()).status();
    assert!(
        !survived,
        "lockctl exited with {status} and its command {child} still runs without the lock"
    );
}
