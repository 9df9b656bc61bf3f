//! Reading and writing cgroupfs files: each value in one write(2), as the
//! kernel parses it, to a file that must exist (a missing one is a missing
//! controller or an old kernel, never a file to create).

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::error::{CgroupError, io_err};

pub fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    write_io(&path, value).map_err(io_err("write", &path))
}

pub fn write_io(path: &Path, value: &str) -> io::Result<()> {
    std::fs::OpenOptions::new().write(true).open(path)?.write_all(value.as_bytes())
}

pub fn read(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    read_text(&path).map_err(|err| CgroupError::Read { path, err })
}

/// A small kernel-made file in one read: cgroupfs and procfs files say
/// size 0, so `read_to_string` would start from a 32-byte buffer and
/// take a read per doubling.
pub fn read_text(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::with_capacity(8192);
    std::fs::File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// The value of `key` in a flat-keyed file (`memory.events`,
/// `memory.oom_control`: `key value` per line).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The pids a `cgroup.procs` lists.
pub fn procs(dir: &Path) -> Result<Vec<libc::pid_t>, CgroupError> {
    Ok(read(dir, "cgroup.procs")?.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Moves the whole process `pid` into the cgroup at `dir`.
pub fn enter(dir: &Path, pid: libc::pid_t) -> Result<(), CgroupError> {
    write(dir, "cgroup.procs", &pid.to_string())
}

/// Waits until `dir` lists no process.
pub fn wait_empty(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    while !procs(dir)?.is_empty() {
        if Instant::now() > deadline {
            return Err(CgroupError::NotEmpty(dir.to_path_buf()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// rmdir, retried while the kernel still counts a dying process in it
/// (EBUSY); a directory already gone is no error.
pub fn rmdir(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(io_err("remove", dir)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keyed_files() {
        let t = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(super::keyed(t, "oom_kill"), Some(1));
        assert_eq!(super::keyed(t, "oom"), Some(2));
        assert_eq!(super::keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n", "oom_kill"), Some(4));
        assert_eq!(super::keyed("", "oom_kill"), None);
    }
}
