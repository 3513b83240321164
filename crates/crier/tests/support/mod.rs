//! The one launcher for tests that run the real `crier` binary.
//!
//! - The environment is sealed: the child gets only `PATH` (plus what a test adds), so
//!   an outer `CRIER_*` or `RUST_LOG` variable cannot change a result.
//! - The server binds port 0 and prints its address; nothing here picks a port.
//! - Every read of the child's output has a deadline: stdout and stderr are drained by
//!   threads into logs, and waits on them give up with a failure, never hang.
//! - [`Crier`] kills and reaps the process on drop, so a failed assertion leaves no
//!   server behind.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to print its address, exit after a signal, or a
/// one-shot command may run.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Pushed to a [`Log`] once the stream has ended: everything the process wrote is in.
pub const CLOSED: &str = "<closed>";

/// The lines a child wrote to one of its streams, filled by a reader thread.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Every line, once the stream has closed (`CLOSED` not included).
    pub fn text(&self) -> String {
        self.lines()
            .into_iter()
            .filter(|l| l != CLOSED)
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn closed(&self) -> bool {
        self.0.lock().unwrap().iter().any(|l| l == CLOSED)
    }

    /// Waits until a line satisfies `pred`, and returns it; fails at the deadline or
    /// when the stream closes without one.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let lines = self.0.lock().unwrap();
                if let Some(l) = lines.iter().find(|l| *l != CLOSED && pred(l)) {
                    return l.clone();
                }
                assert!(
                    !lines.iter().any(|l| l == CLOSED),
                    "stream closed without {what}: {lines:?}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}: {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the stream has closed; fails at the deadline.
    pub fn wait_closed(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while !self.closed() {
            assert!(
                Instant::now() < deadline,
                "stream still open after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.lines().into_iter().filter(|l| l != CLOSED).collect()
    }

    fn drain(stream: impl Read + Send + 'static) -> Self {
        let log = Self::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.0.lock().unwrap().push(line);
            }
            sink.0.lock().unwrap().push(CLOSED.into());
        });
        log
    }
}

/// `crier` with a sealed environment: only `PATH` is passed on.
pub fn crier() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crier"));
    c.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        c.env("PATH", path);
    }
    c
}

/// Runs a command that should end by itself (help, a config error, `crier publish`)
/// and returns its output; kills it and fails if it is still running at [`DEADLINE`].
pub fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Log::drain(child.stdout.take().unwrap());
    let err = Log::drain(child.stderr.take().unwrap());
    let status = wait_until(&mut child, DEADLINE);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "command still running after {DEADLINE:?}; stderr: {}",
            err.text()
        );
    };
    let join = |log: Log| {
        let mut text = log.wait_closed(DEADLINE).join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text.into_bytes()
    };
    Output {
        status,
        stdout: join(out),
        stderr: join(err),
    }
}

fn wait_until(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `crier serve`; killed and reaped on drop, whatever the test did.
pub struct Crier {
    child: Child,
    /// `host:port` the server printed.
    pub addr: String,
    /// `http://` or `https://` plus `addr`.
    pub url: String,
    pub stdout: Log,
    pub stderr: Log,
}

impl Crier {
    /// Spawns `cmd` (from [`crier`], with its arguments) and waits, up to
    /// [`DEADLINE`], for the address it prints.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Log::drain(child.stdout.take().unwrap());
        let stderr = Log::drain(child.stderr.take().unwrap());
        // Owned from here on, so a failed wait below still kills and reaps it.
        let mut server = Self {
            child,
            addr: String::new(),
            url: String::new(),
            stdout,
            stderr,
        };
        let line = server
            .stdout
            .wait_for("\"crier listening on\"", DEADLINE, |l| {
                l.starts_with("crier listening on ")
            });
        let url = line["crier listening on ".len()..].trim().to_owned();
        server.addr = url.split_once("://").map(|(_, a)| a.to_owned()).unwrap();
        server.url = url;
        server
    }

    /// `crier serve --listen 127.0.0.1:0 --udp-listen "" --data-dir DIR ARGS...`.
    pub fn serve(dir: &std::path::Path, args: &[&str]) -> Self {
        let mut cmd = crier();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--udp-listen", ""])
            .arg("--data-dir")
            .arg(dir)
            .args(args);
        Self::spawn(cmd)
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit, failing after [`DEADLINE`].
    pub fn term(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        wait_until(&mut self.child, DEADLINE)
            .unwrap_or_else(|| panic!("no exit within {DEADLINE:?} of SIGTERM"))
    }

    /// SIGKILL, then reaps.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything written to stderr, after a SIGTERM and a clean exit.
    pub fn stderr_until_exit(mut self) -> Vec<String> {
        assert!(self.term().success(), "unclean exit");
        self.stderr.wait_closed(DEADLINE)
    }
}

impl Drop for Crier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
