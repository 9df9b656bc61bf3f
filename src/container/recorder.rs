//! A [`Syscall`] for unit tests: it does nothing but log each call, one
//! line each, and hands out tokens named by the path an object would have.
//! Nothing it is given is opened, mounted or run (not even the work of an
//! `fs_work`), so a test of the steps' order needs no root and touches
//! nothing on the host.

use std::cell::RefCell;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;

use super::resolve::Create;
use super::syscall::Syscall;
use crate::sys::Resolve;

/// What a recorded open returns: the path the object would have, as the
/// process sees it at that point.
#[derive(Debug)]
pub struct Token(PathBuf);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

impl Token {
    /// `path` under this token: absolute paths count from it (as inside a
    /// root), `.` stays, `..` goes up.
    fn join(&self, path: &Path) -> Token {
        let mut out = self.0.clone();
        for c in path.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::ParentDir => {
                    out.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        Token(out)
    }
}

#[derive(Default)]
pub struct Recorder {
    calls: RefCell<Vec<String>>,
    /// The paths `is_dir` says are directories; everything else is a file.
    dirs: Vec<PathBuf>,
}

impl Recorder {
    pub fn with_dirs(dirs: &[&str]) -> Self {
        Recorder { calls: RefCell::default(), dirs: dirs.iter().map(PathBuf::from).collect() }
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn log(&self, line: String) {
        self.calls.borrow_mut().push(line);
    }
}

impl Syscall for Recorder {
    type Fd = Token;

    fn make_rslave(&self, path: &Path) -> io::Result<()> {
        self.log(format!("rslave {}", path.display()));
        Ok(())
    }

    fn open_dir(&self, path: &Path) -> io::Result<Token> {
        self.log(format!("open {}", path.display()));
        Ok(Token(path.to_path_buf()))
    }

    fn open_at(&self, dir: &Token, path: &Path, _flags: libc::c_int, resolve: Resolve) -> io::Result<Token> {
        let t = dir.join(path);
        let how = match resolve {
            Resolve::InRoot => "in root",
            Resolve::Beneath => "beneath",
        };
        self.log(format!("open {t} {how} {dir}"));
        Ok(t)
    }

    fn resolve_in_root(&self, root: &Token, path: &Path, _create: Create) -> io::Result<Token> {
        let t = root.join(path);
        self.log(format!("resolve {t} in root {root}"));
        Ok(t)
    }

    fn fs_work(
        &self,
        at: &Token,
        what: &'static str,
        _work: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        self.log(format!("{what} at {at}"));
        Ok(())
    }

    fn is_dir(&self, fd: &Token) -> io::Result<bool> {
        Ok(self.dirs.contains(&fd.0))
    }

    fn same_fs(&self, a: &Token, b: &Token) -> io::Result<bool> {
        self.log(format!("compare the filesystems of {a} and {b}"));
        Ok(true)
    }

    fn fd_path(&self, fd: &Token) -> CString {
        CString::new(format!("fd({fd})")).unwrap()
    }

    fn mount_fs(&self, fstype: &str, target: &Token, _flags: MsFlags, data: Option<&str>) -> io::Result<()> {
        match data {
            Some(data) => self.log(format!("mount {fstype} on {target} ({data})")),
            None => self.log(format!("mount {fstype} on {target}")),
        }
        Ok(())
    }

    fn attach(&self, tree: BorrowedFd<'_>, target: &Token) -> io::Result<()> {
        self.log(format!("attach fd {} on {target}", tree.as_raw_fd()));
        Ok(())
    }

    fn bind(&self, source: &Token, target: &Token, _attrs: u64) -> io::Result<()> {
        self.log(format!("bind {source} on {target}"));
        Ok(())
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        self.log(format!("hostname {name}"));
        Ok(())
    }

    fn pivot_into(&self, new_root: &Token) -> io::Result<()> {
        self.log(format!("pivot into {new_root}"));
        Ok(())
    }
}
