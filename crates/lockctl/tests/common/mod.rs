//! Running `lockctl` as a user does: real processes, bounded waits, files for what they say.

#![allow(dead_code)] // each test file uses part of it

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const LOCKCTL: &str = env!("CARGO_BIN_EXE_lockctl");

/// The longest any single `lockctl` process of these tests may take before the test fails.
pub const PROCESS_LIMIT: Duration = Duration::from_secs(30);

/// The settings a backend's `lockctl` processes get.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: &'static str,
    pub env: Vec<(String, String)>,
    /// A variable of this backend and a bad value for it.
    pub bad: (&'static str, &'static str),
}

/// The backend whose test server `var` points at; `None` after printing why when it is not
/// set, or a panic when `LOCK_TEST_REQUIRE_SERVERS=1`.
fn server(
    var: &str,
    name: &'static str,
    bad: (&'static str, &'static str),
    env: impl FnOnce(String) -> Vec<(&'static str, String)>,
) -> Option<Backend> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Some(Backend {
            name,
            env: env(value)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            bad,
        }),
        _ if lock_testkit::require_servers() => {
            panic!("{var} is not set, and LOCK_TEST_REQUIRE_SERVERS=1 requires the {name} server")
        }
        _ => {
            eprintln!("skipped: {var} is not set (scripts/test.sh starts the servers)");
            None
        }
    }
}

/// One Redis instance.
pub fn redis() -> Option<Backend> {
    server(
        "LOCK_TEST_REDIS_URLS",
        "redis",
        ("LOCK_REDIS_QUORUM", "many"),
        |urls| {
            vec![
                ("LOCK_PROVIDER", "redis".to_owned()),
                ("LOCK_REDIS_URLS", urls),
            ]
        },
    )
}

/// PostgreSQL in advisory mode.
pub fn postgres() -> Option<Backend> {
    server(
        "LOCK_TEST_POSTGRES_URL",
        "postgres",
        ("LOCK_POSTGRES_NAMESPACE", "first"),
        |url| {
            vec![
                ("LOCK_PROVIDER", "postgres".to_owned()),
                ("LOCK_POSTGRES_URL", url),
                ("LOCK_POSTGRES_MODE", "advisory".to_owned()),
            ]
        },
    )
}

/// An etcd cluster.
pub fn etcd() -> Option<Backend> {
    server(
        "LOCK_TEST_ETCD_ENDPOINTS",
        "etcd",
        ("LOCK_ETCD_CONNECT_TIMEOUT", "soon"),
        |endpoints| {
            vec![
                ("LOCK_PROVIDER", "etcd".to_owned()),
                ("LOCK_ETCD_ENDPOINTS", endpoints),
            ]
        },
    )
}

/// A test's folder (removed at the end) and its lock name, unique to the run.
pub struct Ctx {
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub name: String,
    counter: std::cell::Cell<u32>,
}

impl Ctx {
    /// For `test` on `backend`.
    pub fn new(backend: &Backend, test: &str) -> Ctx {
        Ctx::with_env(backend.env.clone(), &format!("{}-{test}", backend.name))
    }

    /// For `test`, with these `LOCK_*` variables.
    pub fn with_env(env: Vec<(String, String)>, test: &str) -> Ctx {
        let id = ulid::Ulid::generate();
        let dir = std::env::temp_dir().join(format!("lockctl-{test}-{id}"));
        std::fs::create_dir_all(&dir).expect("make the test folder");
        Ctx {
            env,
            dir,
            name: format!("lockctl-test/{id}/{test}"),
            counter: std::cell::Cell::new(0),
        }
    }

    /// A path in the test's folder.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A `lockctl` command with only this test's `LOCK_*` variables, in a process group of
    /// its own (as if started by a shell without a terminal), stdin closed.
    pub fn lockctl(&self, args: &[&str]) -> Command {
        self.command(LOCKCTL, args)
    }

    /// [`Ctx::lockctl`] for another program (one that starts lockctl).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).process_group(0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LOCK_") {
                command.env_remove(key);
            }
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Starts `lockctl args`, its output into files of the test's folder.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        let mut command = self.lockctl(args);
        self.spawn_command(&mut command, args)
    }

    /// Starts `command`, its output into files of the test's folder.
    pub fn spawn_command(&self, command: &mut Command, args: &[&str]) -> Proc {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let stdout = self.path(&format!("lockctl-{n}.out"));
        let stderr = self.path(&format!("lockctl-{n}.err"));
        let child = command
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start lockctl");
        Proc {
            child,
            started: Instant::now(),
            stdout,
            stderr,
            what: format!("lockctl {}", args.join(" ")),
        }
    }

    /// Runs `lockctl args` to its end (within [`PROCESS_LIMIT`]).
    pub fn run(&self, args: &[&str]) -> Ran {
        self.spawn(args).wait(PROCESS_LIMIT)
    }

    /// Starts `lockctl run NAME OPTIONS -- sh -c HOLDER` whose command, once started, writes
    /// `LOCK_NAME|LOCK_FENCING_TOKEN|LOCK_OWNER|PID` to `ready`, writes `term` to `marker`
    /// and exits 0 on SIGTERM, and otherwise runs until stopped or its lockctl is gone.
    pub fn holder(&self, options: &[&str], tag: &str) -> Holder {
        self.holder_of(&self.name, options, tag)
    }

    /// [`Ctx::holder`] of the lock `name`.
    pub fn holder_of(&self, name: &str, options: &[&str], tag: &str) -> Holder {
        let ready = self.path(&format!("{tag}.ready"));
        let marker = self.path(&format!("{tag}.term"));
        let mut args = vec!["run", name];
        args.extend_from_slice(options);
        let ready_arg = ready.to_str().expect("UTF-8 path").to_owned();
        let marker_arg = marker.to_str().expect("UTF-8 path").to_owned();
        args.extend_from_slice(&["--", "sh", "-c", HOLDER, "sh", &ready_arg, &marker_arg]);
        let proc = self.spawn(&args);
        Holder {
            proc,
            ready,
            marker,
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("test files kept in {}", self.dir.display());
        }
    }
}

/// The holder's command: see [`Ctx::holder`]. It also ends once its lockctl is gone, so a
/// failed test leaves no process behind.
const HOLDER: &str = r#"trap 'echo term > "$2"; exit 0' TERM
echo "$LOCK_NAME|$LOCK_FENCING_TOKEN|$LOCK_OWNER|$$" > "$1.tmp" && mv "$1.tmp" "$1"
while kill -0 "$PPID" 2>/dev/null; do sleep 0.1; done"#;

/// A running `lockctl`.
pub struct Proc {
    pub child: Child,
    pub started: Instant,
    stdout: PathBuf,
    stderr: PathBuf,
    what: String,
}

impl Proc {
    /// Waits for the end, at most `limit` (then kills it and fails the test).
    pub fn wait(mut self, limit: Duration) -> Ran {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not end within {limit:?}; stderr: {}",
                    self.what,
                    read(&self.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ran {
            status,
            elapsed: self.started.elapsed(),
            stdout: read(&self.stdout),
            stderr: read(&self.stderr),
            what: self.what.clone(),
        }
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`, ...) to lockctl.
    pub fn signal(&self, signal: &str) {
        kill(signal, self.child.id());
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        read(&self.stderr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `lockctl run` holding the lock with the holder command of [`Ctx::holder`].
pub struct Holder {
    pub proc: Proc,
    pub ready: PathBuf,
    pub marker: PathBuf,
}

/// What the holder's command found in its environment.
#[derive(Debug)]
pub struct HolderEnv {
    pub name: String,
    pub token: u64,
    pub owner: String,
    pub pid: u32,
}

impl Holder {
    /// Waits until the command runs (so lockctl holds the lock) and returns its environment.
    pub fn ready(&self) -> HolderEnv {
        let text = wait_for_file(&self.ready, PROCESS_LIMIT, || self.proc.stderr());
        let fields: Vec<&str> = text.trim_end().split('|').collect();
        assert_eq!(fields.len(), 4, "holder wrote {text:?}");
        HolderEnv {
            name: fields[0].to_owned(),
            token: fields[1].parse().expect("LOCK_FENCING_TOKEN is a number"),
            owner: fields[2].to_owned(),
            pid: fields[3].parse().expect("a pid"),
        }
    }

    /// Whether the command got SIGTERM (it wrote its marker).
    pub fn got_sigterm(&self) -> bool {
        read(&self.marker).trim() == "term"
    }
}

/// How a `lockctl` process ended.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl Ran {
    /// The exit code; fails the test if it was killed by a signal.
    pub fn code(&self) -> i32 {
        match self.status.code() {
            Some(code) => code,
            None => panic!(
                "{} was killed: {:?}; stderr: {}",
                self.what, self.status, self.stderr
            ),
        }
    }

    /// Fails the test unless the exit code is `code`.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "{} exited with {:?}, expected {code}\nstdout: {}\nstderr: {}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Waits until `path` exists and is not empty, at most `limit`.
pub fn wait_for_file(path: &Path, limit: Duration, context: impl Fn() -> String) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = read(path);
        if !text.is_empty() {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} not written within {limit:?}; lockctl's stderr: {}",
            path.display(),
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A file's text, empty when it is missing.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `kill -SIGNAL pid`.
pub fn kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status();
}
