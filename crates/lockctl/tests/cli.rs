//! `lockctl` processes that need no server: configuration errors, usage errors, an
//! unreachable backend, help and completions.

mod common;

use common::Ctx;
use std::time::Duration;

const USAGE: i32 = 2;
const UNAVAILABLE: i32 = 69;
const CONFIG: i32 = 78;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Without LOCK_PROVIDER (memory, the library's default) or with memory, lockctl refuses to
/// run: the message names LOCK_PROVIDER and what to set.
#[test]
fn the_memory_provider_is_refused() {
    for vars in [env(&[]), env(&[("LOCK_PROVIDER", "memory")])] {
        let ctx = Ctx::with_env(vars, "memory");
        let marker = ctx.path("ran");
        for args in [
            vec![
                "run",
                ctx.name.as_str(),
                "--",
                "touch",
                marker.to_str().unwrap(),
            ],
            vec!["inspect", "x"],
            vec!["list"],
            vec!["release", "--force", "x"],
        ] {
            let ran = ctx.run(&args);
            ran.expect(CONFIG);
            assert!(ran.stderr.contains("LOCK_PROVIDER"), "{}", ran.stderr);
            assert!(ran.stderr.contains("redis"), "{}", ran.stderr);
        }
        assert!(!marker.exists());
    }
}

/// A bad value is a configuration error naming the variable, whatever the command.
#[test]
fn a_bad_variable_is_named() {
    let ctx = Ctx::with_env(
        env(&[("LOCK_PROVIDER", "redis"), ("LOCK_DEFAULT_TTL", "30")]),
        "bad-var",
    );
    let ran = ctx.run(&["inspect", "x"]);
    ran.expect(CONFIG);
    assert!(ran.stderr.contains("LOCK_DEFAULT_TTL"), "{}", ran.stderr);

    let ctx = Ctx::with_env(env(&[("LOCK_PROVIDER", "zookeeper")]), "bad-provider");
    let ran = ctx.run(&["list"]);
    ran.expect(CONFIG);
    assert!(ran.stderr.contains("LOCK_PROVIDER"), "{}", ran.stderr);
}

/// An unknown LOCK_* variable is reported, and the variables lockctl sets for its command are
/// not (a nested lockctl sees them).
#[test]
fn unknown_variables_are_warned_about() {
    let ctx = Ctx::with_env(
        env(&[
            ("LOCK_DEFAULT_TLL", "5s"),
            ("LOCK_NAME", "outer"),
            ("LOCK_FENCING_TOKEN", "7"),
            ("LOCK_OWNER", "someone"),
        ]),
        "unknown",
    );
    let ran = ctx.run(&["inspect", "x"]);
    ran.expect(CONFIG); // memory
    assert!(ran.stderr.contains("LOCK_DEFAULT_TLL"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("did you mean LOCK_DEFAULT_TTL"),
        "{}",
        ran.stderr
    );
    for set_by_lockctl in ["LOCK_NAME", "LOCK_FENCING_TOKEN", "LOCK_OWNER "] {
        assert!(!ran.stderr.contains(set_by_lockctl), "{}", ran.stderr);
    }
}

/// A backend nothing listens on: the backend-unavailable code, within the request timeout.
#[test]
fn an_unreachable_backend_is_unavailable() {
    let ctx = Ctx::with_env(
        env(&[
            ("LOCK_PROVIDER", "redis"),
            ("LOCK_REDIS_URLS", "redis://127.0.0.1:1"),
            ("LOCK_REQUEST_TIMEOUT", "2s"),
        ]),
        "unreachable",
    );
    let marker = ctx.path("ran");
    for args in [
        vec!["inspect", "x"],
        vec![
            "run",
            "x",
            "--no-wait",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
    ] {
        let ran = ctx.run(&args);
        ran.expect(UNAVAILABLE);
        assert!(ran.stderr.contains("unavailable"), "{}", ran.stderr);
        assert!(ran.elapsed < Duration::from_secs(20), "{:?}", ran.elapsed);
    }
    assert!(!marker.exists());
}

/// `--config FILE` is read under the environment; a missing file or an unknown key is a
/// configuration error.
#[test]
fn the_config_file_is_read() {
    let ctx = Ctx::with_env(env(&[]), "file");
    let file = ctx.path("lock.toml");
    std::fs::write(
        &file,
        "provider = \"redis\"\nredis_urls = \"redis://127.0.0.1:1\"\nrequest_timeout = \"2s\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    // The file's provider is used: not the memory refusal, but an unreachable Redis.
    ctx.run(&["inspect", "x", "--config", file])
        .expect(UNAVAILABLE);
    // The environment overrides the file.
    let over = Ctx::with_env(env(&[("LOCK_PROVIDER", "memory")]), "file-env");
    let ran = over.run(&["--config", file, "inspect", "x"]);
    ran.expect(CONFIG);
    assert!(
        ran.stderr.contains("LOCK_PROVIDER is memory"),
        "{}",
        ran.stderr
    );

    let bad = ctx.path("bad.toml");
    std::fs::write(&bad, "provider = \"redis\"\ndefault_tll = \"5s\"\n").unwrap();
    let ran = ctx.run(&["list", "--config", bad.to_str().unwrap()]);
    ran.expect(CONFIG);
    assert!(ran.stderr.contains("default_tll"), "{}", ran.stderr);
    assert!(ran.stderr.contains("default_ttl"), "{}", ran.stderr);

    let missing = ctx.path("missing.toml");
    let ran = ctx.run(&["list", "--config", missing.to_str().unwrap()]);
    ran.expect(CONFIG);
    assert!(ran.stderr.contains("missing.toml"), "{}", ran.stderr);
}

/// clap's usage errors exit with 2 and run nothing.
#[test]
fn usage_errors_exit_with_2() {
    let ctx = Ctx::with_env(env(&[("LOCK_PROVIDER", "redis")]), "usage");
    for args in [
        &["run", "x", "true"][..],
        &["run", "x", "--ttl", "forever", "--", "true"],
        &["run", "x", "--read", "--semaphore", "2", "--", "true"],
        &["release", "x"],
        &["frobnicate"],
    ] {
        let ran = ctx.run(args);
        ran.expect(USAGE);
        assert!(!ran.stderr.is_empty());
    }
}

/// `--help` documents the exit codes; completions are generated for the usual shells.
#[test]
fn help_and_completions() {
    let ctx = Ctx::with_env(env(&[]), "help");
    let help = ctx.run(&["--help"]);
    help.expect(0);
    for text in [
        "Exit codes",
        "75",
        "76",
        "78",
        "LOCK_PROVIDER",
        "LOCK_REQUEST_TIMEOUT",
    ] {
        assert!(help.stdout.contains(text), "--help lacks {text:?}");
    }
    let run_help = ctx.run(&["run", "--help"]);
    run_help.expect(0);
    for text in [
        "--no-wait",
        "--timeout",
        "--conflict-exit-code",
        "--kill-grace",
        "--metadata",
        "LOCK_FENCING_TOKEN",
        "SIGTERM",
    ] {
        assert!(run_help.stdout.contains(text), "run --help lacks {text:?}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let ran = ctx.run(&["completions", shell]);
        ran.expect(0);
        assert!(ran.stdout.contains("lockctl"), "{shell}: {}", ran.stdout);
        assert!(ran.stdout.contains("no-wait"), "{shell}");
    }
}
