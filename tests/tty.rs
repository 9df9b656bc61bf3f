//! `run -t`: the job gets a real terminal. Each test drives the runner
//! through a pty of its own, as a terminal emulator would: the runner is a
//! session leader with the pty's slave as its controlling terminal and
//! stdio; the test types into the master and reads the screen from it.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::termios::{self, LocalFlags};

struct Terminal {
    master: File,
    slave: OwnedFd,
    seen: String,
}

impl Terminal {
    fn new(rows: u16, cols: u16) -> Terminal {
        let ws = nix::pty::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(Some(&ws), None).unwrap();
        Terminal { master: File::from(pty.master), slave: pty.slave, seen: String::new() }
    }

    /// `repeatr run -t [opts] -- argv` on this terminal.
    fn spawn(&self, r: &Repeatr, root: &Rootfs, opts: &[&str], argv: &[&str]) -> Runner {
        let mut c = r.cmd();
        c.arg("run").arg("--rootfs").arg(root.path()).args(["--net", "none"]).args(opts).arg("--").args(argv);
        let io = || Stdio::from(self.slave.try_clone().unwrap());
        c.stdin(io()).stdout(io()).stderr(io());
        // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the slave.
        unsafe {
            c.pre_exec(|| {
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Runner::new(c.spawn().unwrap())
    }

    fn set_size(&self, rows: u16, cols: u16) {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize from the valid `ws`.
        assert_eq!(unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
    }

    fn type_text(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// Reads the screen until `want` shows up after what was consumed.
    fn expect(&mut self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(at) = self.seen.find(want) {
                self.seen.drain(..at + want.len());
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "never saw {want:?}; the screen had {:?}", self.seen);
            let mut fds = [nix::poll::PollFd::new(self.master.as_fd(), nix::poll::PollFlags::POLLIN)];
            let ms = nix::poll::PollTimeout::try_from(left.as_millis().min(1000) as i32).unwrap();
            if nix::poll::poll(&mut fds, ms).unwrap() == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.master.read(&mut buf) {
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                // EIO: every slave closed (the test holds one, so not here).
                Err(e) => panic!("reading the terminal: {e}; the screen had {:?}", self.seen),
            }
        }
    }

    fn mode(&self) -> termios::Termios {
        termios::tcgetattr(&self.slave).unwrap()
    }
}

fn wait(child: Runner) -> i32 {
    let mut child: Child = child.into_inner();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the runner did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_job_has_a_terminal_of_its_own_that_follows_the_window() {
    if !require_root() {
        return;
    }
    let (r, root) = (Repeatr::new(), Rootfs::busybox());
    let mut t = Terminal::new(24, 80);
    let runner = t.spawn(&r, &root, &["-t", "-i"], &["/bin/sh"]);
    t.type_text("tty; stty size; echo do''ne\r");
    t.expect("/dev/pts/0");
    t.expect("24 80");
    t.expect("done");
    t.set_size(40, 100);
    // SIGWINCH reaches the runner (the terminal's foreground group), which
    // resizes the job's terminal.
    std::thread::sleep(Duration::from_millis(200));
    t.type_text("stty size; echo si''ze-done\r");
    t.expect("40 100");
    t.expect("size-done");
    // Ctrl-C stops the foreground command, in the job: the shell lives on.
    t.type_text("sleep 100\r");
    std::thread::sleep(Duration::from_millis(300));
    t.type_text("\x03");
    t.type_text("echo al''ive\r");
    t.expect("alive");
    t.type_text("exit 3\r");
    assert_eq!(wait(runner), 3);
}

#[test]
fn the_hosts_terminal_mode_is_restored_after_the_job_is_killed() {
    if !require_root() {
        return;
    }
    let (r, root) = (Repeatr::new(), Rootfs::busybox());
    let mut t = Terminal::new(24, 80);
    let before = t.mode();
    assert!(before.local_flags.contains(LocalFlags::ICANON));
    let runner = t.spawn(&r, &root, &["-t", "-i"], &["/bin/sh", "-c", "echo ready; sleep 100"]);
    t.expect("ready");
    assert!(!t.mode().local_flags.contains(LocalFlags::ICANON), "the runner did not put the terminal in raw mode");
    let job = children_of(runner.id());
    assert_eq!(job.len(), 1);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(job[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(wait(runner), 137);
    let after = t.mode();
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);
}

#[test]
fn tty_without_a_terminal_is_refused() {
    if !require_root() {
        return;
    }
    let (r, root) = (Repeatr::new(), Rootfs::busybox());
    let out = r.run(root.path(), &["-t"], &["tty"]);
    assert_eq!(code(&out), 125);
    let err = stderr(&out);
    assert!(err.contains("-t needs stdin to be a terminal"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn without_a_tty_the_job_has_none() {
    if !require_root() {
        return;
    }
    let (r, root) = (Repeatr::new(), Rootfs::busybox());
    let out = r.run(root.path(), &[], &["tty"]);
    assert_eq!(stdout(&out).trim(), "not a tty");
}

/// A paste longer than one read of the relay (4 KiB) reaches the job whole.
#[test]
fn a_long_paste_reaches_the_job_whole() {
    if !require_root() {
        return;
    }
    let (r, root) = (Repeatr::new(), Rootfs::busybox());
    let mut t = Terminal::new(24, 80);
    let script = "stty raw -echo; echo ready; head -c 8192 | wc -c";
    let runner = t.spawn(&r, &root, &["-t", "-i"], &["/bin/sh", "-c", script]);
    t.expect("ready");
    t.type_text(&"a".repeat(8192));
    t.expect("8192");
    assert_eq!(wait(runner), 0);
}
