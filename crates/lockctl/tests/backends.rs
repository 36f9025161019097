//! `lockctl` processes against the test servers: Redis, PostgreSQL (advisory mode) and etcd.
//! Each property runs once per backend; a backend whose server variable is missing is skipped,
//! or fails with `LOCK_TEST_REQUIRE_SERVERS=1`.

mod common;

use common::{Backend, Ctx, PROCESS_LIMIT};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The exit codes lockctl documents.
const BUSY: i32 = 75;
const LOST: i32 = 76;
const CONFIG: i32 = 78;
const USAGE: i32 = 2;

macro_rules! backend_tests {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[test]
                fn $test() {
                    if let Some(backend) = crate::common::$backend() {
                        super::$test(&backend);
                    }
                }
            )*
        }
    };
}

backend_tests!(redis: two_runs_never_overlap, a_killed_holder_frees_the_lock_after_its_ttl,
    force_release_stops_the_command_with_the_lost_code, no_wait_on_a_busy_lock_exits_at_once,
    sigterm_reaches_the_command, status_and_environment_pass_through, kinds_share_as_documented,
    bad_settings_exit_with_the_config_code, list_shows_the_held_locks_under_a_prefix);
backend_tests!(postgres: two_runs_never_overlap, a_killed_holder_frees_the_lock_after_its_ttl,
    force_release_stops_the_command_with_the_lost_code, no_wait_on_a_busy_lock_exits_at_once,
    sigterm_reaches_the_command, status_and_environment_pass_through, kinds_share_as_documented,
    bad_settings_exit_with_the_config_code, list_shows_the_held_locks_under_a_prefix);
backend_tests!(etcd: two_runs_never_overlap, a_killed_holder_frees_the_lock_after_its_ttl,
    force_release_stops_the_command_with_the_lost_code, no_wait_on_a_busy_lock_exits_at_once,
    sigterm_reaches_the_command, status_and_environment_pass_through, kinds_share_as_documented,
    bad_settings_exit_with_the_config_code, list_shows_the_held_locks_under_a_prefix);

/// Three `lockctl run` processes started together on one name: each command appends its start
/// and end (nanoseconds) to one file; the intervals must be disjoint, in token order.
fn two_runs_never_overlap(backend: &Backend) {
    let ctx = Ctx::new(backend, "overlap");
    let log = ctx.path("log");
    let log = log.to_str().unwrap();
    let script = r#"echo "start $LOCK_FENCING_TOKEN $(date +%s%N)" >> "$1"
sleep 0.3
echo "end $LOCK_FENCING_TOKEN $(date +%s%N)" >> "$1""#;
    let runs: Vec<_> = (0..3)
        .map(|_| {
            ctx.spawn(&[
                "run", &ctx.name, "--ttl", "5s", "--", "sh", "-c", script, "sh", log,
            ])
        })
        .collect();
    for run in runs {
        run.wait(PROCESS_LIMIT).expect(0);
    }
    let text = common::read(&ctx.path("log"));
    let mut intervals: BTreeMap<u64, (Option<u128>, Option<u128>)> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "bad line {line:?} in\n{text}");
        let token: u64 = fields[1].parse().expect("token");
        let at: u128 = fields[2].parse().expect("time");
        let entry = intervals.entry(token).or_default();
        match fields[0] {
            "start" => entry.0 = Some(at),
            "end" => entry.1 = Some(at),
            other => panic!("bad line {other:?}"),
        }
    }
    assert_eq!(
        intervals.len(),
        3,
        "three distinct tokens expected:\n{text}"
    );
    let mut by_start: Vec<(u128, u128, u64)> = intervals
        .iter()
        .map(|(token, (start, end))| {
            (
                start.expect("start written"),
                end.expect("end written"),
                *token,
            )
        })
        .collect();
    by_start.sort();
    for pair in by_start.windows(2) {
        let (_, end, token) = pair[0];
        let (next_start, _, next_token) = pair[1];
        assert!(
            end <= next_start,
            "the commands of tokens {token} and {next_token} overlapped:\n{text}"
        );
        assert!(
            token < next_token,
            "tokens do not grow with the order of the grants:\n{text}"
        );
    }
}

/// `kill -9` of a holding lockctl: nothing releases the lock, so it stays busy, and is free
/// once its TTL has run out.
fn a_killed_holder_frees_the_lock_after_its_ttl(backend: &Backend) {
    let ctx = Ctx::new(backend, "kill9");
    let mut holder = ctx.holder(&["--ttl", "3s"], "holder");
    holder.ready();
    holder.proc.signal("KILL");
    let _ = holder.proc.child.wait();
    let killed = Instant::now();
    // The holder's command ends by itself once its lockctl is gone.

    let busy = ctx.run(&["run", &ctx.name, "--no-wait", "--", "true"]);
    if killed.elapsed() < Duration::from_secs(2) {
        // Well within the TTL: the lease must still be there.
        busy.expect(BUSY);
    }
    let next = ctx.run(&["run", &ctx.name, "--timeout", "20s", "--", "true"]);
    next.expect(0);
    let waited = killed.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "the lock came free {waited:?} after the kill, with a TTL of 3s"
    );
}

/// `release --force` deletes the running holder's lease: its command gets SIGTERM, lockctl
/// exits with the lost code. `inspect` shows the holder before and nobody after.
fn force_release_stops_the_command_with_the_lost_code(backend: &Backend) {
    let ctx = Ctx::new(backend, "force");
    let holder = ctx.holder(
        &[
            "--ttl",
            "2s",
            "--kill-grace",
            "5s",
            "--metadata",
            "job=nightly",
        ],
        "holder",
    );
    let env = holder.ready();
    assert_eq!(env.name, ctx.name);

    let inspected = ctx.run(&["inspect", &ctx.name, "--json"]);
    inspected.expect(0);
    let holders: serde_json::Value =
        serde_json::from_str(&inspected.stdout).expect("inspect --json prints JSON");
    let holders = holders.as_array().expect("an array");
    assert_eq!(holders.len(), 1, "{holders:?}");
    let h = &holders[0];
    assert_eq!(h["name"], ctx.name.as_str());
    assert_eq!(h["kind"], "mutex");
    assert_eq!(h["mode"], "exclusive");
    assert_eq!(h["owner"], env.owner.as_str());
    assert_eq!(h["token"], env.token);
    assert_eq!(h["metadata"]["job"], "nightly");
    let table = ctx.run(&["inspect", &ctx.name]);
    table.expect(0);
    assert!(table.stdout.starts_with("NAME"), "{}", table.stdout);
    assert!(table.stdout.contains("job=nightly"), "{}", table.stdout);
    assert!(table.stdout.contains(&env.owner), "{}", table.stdout);

    let released = ctx.run(&["release", "--force", &ctx.name]);
    released.expect(0);
    assert!(
        released.stdout.contains("removed 1 lease"),
        "{}",
        released.stdout
    );
    let ended = holder.proc.wait(PROCESS_LIMIT);
    ended.expect(LOST);
    assert!(ended.stderr.contains("lost"), "{}", ended.stderr);
    assert!(
        common::read(&holder.marker).trim() == "term",
        "the command did not get SIGTERM; lockctl said: {}",
        ended.stderr
    );
    let after = ctx.run(&["inspect", &ctx.name]);
    after.expect(0);
    assert!(after.stdout.contains("is not held"), "{}", after.stdout);
}

/// `--no-wait` on a held lock exits at once with the busy code, or the one of
/// `--conflict-exit-code`; `--timeout` gives up after its time with the same code.
fn no_wait_on_a_busy_lock_exits_at_once(backend: &Backend) {
    let ctx = Ctx::new(backend, "busy");
    let holder = ctx.holder(&["--ttl", "5s"], "holder");
    let env = holder.ready();

    let busy = ctx.run(&["run", &ctx.name, "--no-wait", "--", "true"]);
    busy.expect(BUSY);
    assert!(
        busy.elapsed < Duration::from_secs(5),
        "--no-wait took {:?}",
        busy.elapsed
    );
    assert!(busy.stderr.contains("busy"), "{}", busy.stderr);
    assert!(busy.stderr.contains(&env.owner), "{}", busy.stderr);

    ctx.run(&[
        "run",
        &ctx.name,
        "--no-wait",
        "--conflict-exit-code",
        "9",
        "--",
        "true",
    ])
    .expect(9);
    ctx.run(&["run", &ctx.name, "-n", "-E", "0", "--", "false"])
        .expect(0);

    let timed_out = ctx.run(&["run", &ctx.name, "--timeout", "300ms", "--", "true"]);
    timed_out.expect(BUSY);
    assert!(
        timed_out.elapsed >= Duration::from_millis(300),
        "{:?}",
        timed_out.elapsed
    );
    assert!(
        timed_out.stderr.contains("not acquired within"),
        "{}",
        timed_out.stderr
    );
    // No status line when stderr is not a terminal: the one line of the outcome.
    assert_eq!(timed_out.stderr.lines().count(), 1, "{}", timed_out.stderr);

    // On a terminal (script(1) gives it one), the status line names the holder.
    if std::path::Path::new("/usr/bin/script").exists() {
        let inner = format!(
            "{} run '{}' --timeout 1500ms -- true",
            common::LOCKCTL,
            ctx.name
        );
        let mut command = ctx.command("/usr/bin/script", &["-qec", &inner, "/dev/null"]);
        let on_tty = ctx
            .spawn_command(&mut command, &["(script)"])
            .wait(PROCESS_LIMIT);
        on_tty.expect(BUSY);
        assert!(
            on_tty.stdout.contains("waiting for mutex"),
            "{}",
            on_tty.stdout
        );
        assert!(on_tty.stdout.contains(&env.owner), "{}", on_tty.stdout);
    } else {
        eprintln!("script(1) is missing: the status line is not checked");
    }
    assert!(!holder.got_sigterm());
}

/// SIGTERM sent to lockctl reaches its command; lockctl then exits with the command's status
/// and releases the lock.
fn sigterm_reaches_the_command(backend: &Backend) {
    let ctx = Ctx::new(backend, "sigterm");
    let holder = ctx.holder(&["--ttl", "5s"], "holder");
    holder.ready();

    // While lockctl waits for the lock, a signal ends the wait; the command never starts.
    let never = ctx.path("never");
    let waiter = ctx.spawn(&["run", &ctx.name, "--", "touch", never.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(1));
    waiter.signal("TERM");
    let waited = waiter.wait(PROCESS_LIMIT);
    waited.expect(143);
    // "while waiting", or "while connecting" on a machine slow enough to still be at it.
    assert!(waited.stderr.contains("SIGTERM while"), "{}", waited.stderr);
    assert!(!never.exists(), "the command ran without the lock");

    holder.proc.signal("TERM");
    let marker = holder.marker.clone();
    let ended = holder.proc.wait(PROCESS_LIMIT);
    // The command traps SIGTERM and exits 0.
    ended.expect(0);
    assert_eq!(common::read(&marker).trim(), "term", "{}", ended.stderr);
    // Released at once, not after the TTL, and the interrupted waiter left nothing behind.
    ctx.run(&["run", &ctx.name, "--no-wait", "--", "true"])
        .expect(0);

    // SIGINT too, and a command killed by the signal makes lockctl exit with 128 + 2.
    let sleeper = ctx.spawn(&[
        "run",
        &ctx.name,
        "--",
        "sh",
        "-c",
        "echo up > \"$1\"; exec sleep 20",
        "sh",
        ctx.path("up").to_str().unwrap(),
    ]);
    common::wait_for_file(&ctx.path("up"), PROCESS_LIMIT, || sleeper.stderr());
    sleeper.signal("INT");
    sleeper.wait(PROCESS_LIMIT).expect(130);
}

/// The command's exit status comes back as lockctl's; a command killed by a signal gives
/// 128 + the signal; a missing command 127. The command sees LOCK_NAME, LOCK_FENCING_TOKEN and
/// LOCK_OWNER, and tokens grow from one run to the next.
fn status_and_environment_pass_through(backend: &Backend) {
    let ctx = Ctx::new(backend, "status");
    let env_file = |tag: &str| ctx.path(tag).to_str().unwrap().to_owned();
    let record = r#"echo "$LOCK_NAME|$LOCK_FENCING_TOKEN|$LOCK_OWNER" > "$1"; exit "$2""#;
    let first = env_file("first");
    ctx.run(&[
        "run", &ctx.name, "--", "sh", "-c", record, "sh", &first, "7",
    ])
    .expect(7);
    let second = env_file("second");
    ctx.run(&[
        "run", &ctx.name, "--", "sh", "-c", record, "sh", &second, "0",
    ])
    .expect(0);
    let parse = |path: &str| {
        let text = common::read(std::path::Path::new(path));
        let fields: Vec<String> = text.trim_end().split('|').map(str::to_owned).collect();
        assert_eq!(fields.len(), 3, "{text:?}");
        fields
    };
    let (a, b) = (parse(&first), parse(&second));
    assert_eq!(a[0], ctx.name);
    assert!(a[2].starts_with("lockctl@"), "LOCK_OWNER = {:?}", a[2]);
    let (ta, tb): (u64, u64) = (a[1].parse().unwrap(), b[1].parse().unwrap());
    assert!(tb > ta, "tokens {ta} then {tb}");

    ctx.run(&["run", &ctx.name, "--", "sh", "-c", "kill -KILL $$"])
        .expect(137);
    let missing = ctx.run(&["run", &ctx.name, "--", "/nonexistent/lockctl-test-command"]);
    missing.expect(127);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    // Every run above released the lock.
    ctx.run(&["run", &ctx.name, "--no-wait", "--", "true"])
        .expect(0);
}

/// Readers share a read-write lock and exclude writers; kinds never interfere with each
/// other; a semaphore takes up to its limit.
fn kinds_share_as_documented(backend: &Backend) {
    let ctx = Ctx::new(backend, "kinds");
    let reader = ctx.holder(&["--read", "--ttl", "5s"], "reader");
    reader.ready();
    ctx.run(&["run", &ctx.name, "--read", "--no-wait", "--", "true"])
        .expect(0);
    ctx.run(&["run", &ctx.name, "--write", "--no-wait", "--", "true"])
        .expect(BUSY);
    // A mutex of the same name is another lock.
    ctx.run(&["run", &ctx.name, "--no-wait", "--", "true"])
        .expect(0);

    let permit = ctx.holder(&["--semaphore", "2", "--ttl", "5s"], "permit");
    permit.ready();
    ctx.run(&[
        "run",
        &ctx.name,
        "--semaphore",
        "2",
        "--no-wait",
        "--",
        "true",
    ])
    .expect(0);
    ctx.run(&[
        "run",
        &ctx.name,
        "--semaphore",
        "2",
        "--permits",
        "2",
        "--no-wait",
        "--",
        "true",
    ])
    .expect(BUSY);
    let too_many = ctx.run(&[
        "run",
        &ctx.name,
        "--semaphore",
        "2",
        "--permits",
        "3",
        "--",
        "true",
    ]);
    too_many.expect(USAGE);
    assert!(
        too_many.stderr.contains("invalid argument"),
        "{}",
        too_many.stderr
    );
}

/// A bad `LOCK_*` value (a general one, and one of the backend's own) makes lockctl exit with
/// the configuration code, naming the variable, before it runs anything.
fn bad_settings_exit_with_the_config_code(backend: &Backend) {
    for (var, value) in [("LOCK_DEFAULT_TTL", "abc"), backend.bad] {
        let mut env = backend.env.clone();
        env.push((var.to_owned(), value.to_owned()));
        let ctx = Ctx::with_env(env, "config");
        let marker = ctx.path("ran");
        for args in [
            vec![
                "run",
                ctx.name.as_str(),
                "--",
                "touch",
                marker.to_str().unwrap(),
            ],
            vec!["inspect", ctx.name.as_str()],
        ] {
            let ran = ctx.run(&args);
            ran.expect(CONFIG);
            assert!(ran.stderr.contains(var), "{var}={value}: {}", ran.stderr);
            assert!(ran.stderr.contains(value), "{var}={value}: {}", ran.stderr);
        }
        assert!(!marker.exists(), "the command ran despite {var}={value}");
    }
}

/// `list PREFIX` shows every held lock under the prefix (every kind) and nothing else; with
/// `--limit` it stops early and gives the cursor that `--after` goes on from.
fn list_shows_the_held_locks_under_a_prefix(backend: &Backend) {
    let ctx = Ctx::new(backend, "list");
    let prefix = format!("{}/", ctx.name);
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    let outside = format!("{}-outside", ctx.name);
    let holders = [
        ctx.holder_of(&a, &["--ttl", "5s", "--metadata", "job=a"], "a"),
        ctx.holder_of(
            &b,
            &["--semaphore", "3", "--permits", "2", "--ttl", "5s"],
            "b",
        ),
        ctx.holder_of(&outside, &["--ttl", "5s"], "outside"),
    ];
    for holder in &holders {
        holder.ready();
    }

    let listed = ctx.run(&["list", &prefix, "--json"]);
    listed.expect(0);
    let page: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON");
    assert!(page["next"].is_null(), "{page}");
    let mut names: Vec<(String, String)> = page["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_owned(),
                h["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            (a.clone(), "mutex".to_owned()),
            (b.clone(), "semaphore".to_owned())
        ],
        "{page}"
    );

    let table = ctx.run(&["list", &prefix]);
    table.expect(0);
    assert!(table.stdout.starts_with("NAME"), "{}", table.stdout);
    assert!(
        table.stdout.contains(&a) && table.stdout.contains(&b),
        "{}",
        table.stdout
    );
    assert!(!table.stdout.contains(&outside), "{}", table.stdout);
    assert!(table.stdout.contains("job=a"), "{}", table.stdout);

    // One name per call: the cursor goes on to the other.
    let first = ctx.run(&["list", &prefix, "--limit", "1", "--json"]);
    first.expect(0);
    let first: serde_json::Value = serde_json::from_str(&first.stdout).expect("JSON");
    let cursor = first["next"]
        .as_str()
        .expect("stopped early: a cursor")
        .to_owned();
    let first_names: Vec<&str> = first["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(first_names.len(), 1, "{first}");
    let rest = ctx.run(&["list", &prefix, "--after", &cursor, "--json"]);
    rest.expect(0);
    let rest: serde_json::Value = serde_json::from_str(&rest.stdout).expect("JSON");
    let other = if first_names[0] == a { &b } else { &a };
    assert!(
        rest["locks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == other.as_str()),
        "{rest}"
    );
    let stopped = ctx.run(&["list", &prefix, "--limit", "1"]);
    stopped.expect(0);
    assert!(stopped.stderr.contains("--after"), "{}", stopped.stderr);
}
