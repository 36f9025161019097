//! The signals `lockctl run` catches and forwards to its command.

use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use tokio::signal::unix::{SignalKind, signal};

/// A signal lockctl catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caught {
    Hup,
    Int,
    Quit,
    Term,
}

impl Caught {
    /// The signal's number (1, 2, 3, 15).
    pub(crate) fn number(self) -> i32 {
        self.signal().as_raw()
    }

    /// `SIGHUP`, `SIGINT`, ...
    pub(crate) fn name(self) -> &'static str {
        match self {
            Caught::Hup => "SIGHUP",
            Caught::Int => "SIGINT",
            Caught::Quit => "SIGQUIT",
            Caught::Term => "SIGTERM",
        }
    }

    fn signal(self) -> Signal {
        match self {
            Caught::Hup => Signal::HUP,
            Caught::Int => Signal::INT,
            Caught::Quit => Signal::QUIT,
            Caught::Term => Signal::TERM,
        }
    }

    /// The exit code of a shell whose command was killed by this signal.
    pub(crate) fn exit_code(self) -> u8 {
        // 129, 130, 131, 143: all below 256.
        u8::try_from(128 + self.number()).unwrap_or(u8::MAX)
    }

    /// Whether a signal of this kind reached the command without lockctl: SIGINT and SIGQUIT
    /// are typed on a terminal (Ctrl-C, Ctrl-\), which sends them to its whole foreground
    /// process group, the command included. Forwarding them again would deliver them twice.
    pub(crate) fn sent_by_terminal(self) -> bool {
        matches!(self, Caught::Int | Caught::Quit) && in_terminal_foreground()
    }
}

/// Whether lockctl runs in the foreground of a terminal (a user typing, who can press Ctrl-C).
pub(crate) fn has_terminal() -> bool {
    in_terminal_foreground()
}

/// Whether lockctl's process group is the foreground group of its controlling terminal.
fn in_terminal_foreground() -> bool {
    let Ok(tty) = std::fs::File::open("/dev/tty") else {
        return false; // no controlling terminal
    };
    rustix::termios::tcgetpgrp(&tty).is_ok_and(|group| group == rustix::process::getpgrp())
}

/// SIGHUP, SIGINT, SIGQUIT and SIGTERM, caught from the moment this is made: they no longer
/// end lockctl, they are reported by [`Signals::recv`].
pub(crate) struct Signals {
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching the signals.
    ///
    /// # Errors
    ///
    /// When a handler cannot be installed.
    pub(crate) fn catch() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal caught.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal that arrives while nobody waits is reported by the next call.
    pub(crate) async fn recv(&mut self) -> Caught {
        tokio::select! {
            Some(()) = self.hup.recv() => Caught::Hup,
            Some(()) = self.int.recv() => Caught::Int,
            Some(()) = self.quit.recv() => Caught::Quit,
            Some(()) = self.term.recv() => Caught::Term,
            // The runtime's signal driver is gone: nothing more will come.
            else => std::future::pending().await,
        }
    }

    /// A signal caught already, if any, without waiting.
    pub(crate) async fn pending(&mut self) -> Option<Caught> {
        tokio::select! {
            biased;
            caught = self.recv() => Some(caught),
            () = std::future::ready(()) => None,
        }
    }
}

/// Where the command's signals go: its own process, or its whole process group (when lockctl
/// started it in a group of its own, so that what the command started is stopped with it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pid: Option<Pid>,
    group: bool,
}

impl Target {
    /// The command `pid`; `group` when it leads a process group of its own.
    pub(crate) fn new(pid: Option<u32>, group: bool) -> Target {
        let pid = pid
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(Pid::from_raw);
        Target { pid, group }
    }

    /// Whether the command has a process group of its own: a terminal's Ctrl-C then reaches
    /// lockctl only, and lockctl forwards it.
    pub(crate) fn own_group(self) -> bool {
        self.group
    }

    /// Sends `signal`. Errors (the command exited meanwhile) are ignored: the caller is about
    /// to reap it.
    pub(crate) fn send(self, signal: Signal) {
        let Some(pid) = self.pid else {
            return;
        };
        if self.group {
            let _ = kill_process_group(pid, signal);
        } else {
            let _ = kill_process(pid, signal);
        }
    }

    /// Forwards a caught signal.
    pub(crate) fn forward(self, caught: Caught) {
        self.send(caught.signal());
    }
}
