//! Server processes that fault tests own: start, kill, pause (SIGSTOP), resume, restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process started by a test. It is killed when dropped.
pub struct ServerProcess {
    program: PathBuf,
    args: Vec<String>,
    log: Option<PathBuf>,
    child: Option<Child>,
}

impl ServerProcess {
    /// Starts `program` with `args`; its output goes to `log` if given, else nowhere.
    ///
    /// # Errors
    ///
    /// When the program cannot be started.
    pub fn start(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
        log: Option<PathBuf>,
    ) -> std::io::Result<ServerProcess> {
        let mut process = ServerProcess {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            log,
            child: None,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut command = Command::new(&self.program);
        command.args(&self.args).stdin(Stdio::null());
        match &self.log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                command.stdout(file.try_clone()?).stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        self.child = Some(command.spawn()?);
        Ok(())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pauses the process with SIGSTOP: it holds its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a paused process with SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Starts the process again with the same arguments, after a kill.
    ///
    /// # Errors
    ///
    /// When the program cannot be started.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// True while the process runs (or is paused).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on loopback (bound, then released: good enough for tests that start a
/// server on it right away).
///
/// # Panics
///
/// When no loopback port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`; false after `within`.
pub async fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The first of `names` found on `PATH` or as an absolute path that exists.
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    for name in names {
        let path = PathBuf::from(name);
        if path.is_absolute() && path.exists() {
            return Some(path);
        }
        if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let candidate = dir.join(name);
                if candidate.is_file() {
                    return Some(candidate);
                }
            }
        }
    }
    None
}
