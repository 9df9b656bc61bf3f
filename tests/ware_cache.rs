//! The unpacked-ware cache (issue 14), as root: wares and `--rootfs` tars
//! unpacked once and shared, corrupt wares kept out, entries that jobs
//! cannot change, eviction that spares entries in use, a root whose
//! readdir and stat agree, and packing whole root filesystems.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use sha2::{Digest, Sha256};

fn pack(r: &Repeatr, wares: &Path, dir: &Path, filters: &[&str]) -> String {
    let mut c = r.cmd();
    c.arg("pack").arg(dir).arg("--warehouse").arg(wares);
    for f in filters {
        c.args(["--filter", f]);
    }
    let out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// The keys of the published entries.
fn entries(r: &Repeatr) -> Vec<String> {
    let mut keys: Vec<String> = match fs::read_dir(r.cache_dir().join("entries")) {
        Ok(d) => d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(_) => Vec::new(),
    };
    keys.sort();
    keys
}

fn tmp_is_empty(r: &Repeatr) -> bool {
    fs::read_dir(r.cache_dir().join("tmp")).map_or(true, |mut d| d.next().is_none())
}

/// A formula on a busybox ware with an extra ware at /opt/tool.
struct Formula {
    r: Repeatr,
    wares: PathBuf,
    root: String,
    tool: String,
    file: PathBuf,
}

impl Formula {
    fn new(script: &str) -> Formula {
        let r = Repeatr::new();
        let wares = r.state.path().join("wares");
        let rootfs = Rootfs::busybox();
        // Some bulk, so that concurrent first runs really overlap.
        fs::write(rootfs.path().join("bulk"), vec![7u8; 24 << 20]).unwrap();
        let root = pack(&r, &wares, rootfs.path(), &[]);
        let tool_dir = tempfile::tempdir().unwrap();
        fs::write(tool_dir.path().join("tool.txt"), "tool\n").unwrap();
        let tool = pack(&r, &wares, tool_dir.path(), &[]);
        let file = r.state.path().join("f.json");
        let json = serde_json::json!({
            "inputs": {"/": root, "/opt/tool": tool},
            "action": {"exec": ["/bin/sh", "-c", script]},
        });
        fs::write(&file, json.to_string()).unwrap();
        Formula { r, wares, root, tool, file }
    }

    fn cmd(&self) -> Command {
        let mut c = self.r.cmd();
        c.arg("-v").arg("run").arg(&self.file).arg("--warehouse").arg(&self.wares).stdin(Stdio::null());
        c
    }
}

fn key_of(ware: &str) -> String {
    ware.replace(':', "-")
}

/// How many entries this run unpacked into the cache (its -v log).
fn unpacks(out: &Output) -> usize {
    stderr(out).matches("into the cache:").count()
}

#[test]
fn a_ware_is_unpacked_once_for_two_runs() {
    if !require_root() {
        return;
    }
    let f = Formula::new("cat /opt/tool/tool.txt; echo changed > /opt/tool/tool.txt; echo x > /bulk");
    let first = f.cmd().output().unwrap();
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    assert_eq!(unpacks(&first), 2, "{}", stderr(&first));
    let want = vec![key_of(&f.root), key_of(&f.tool)];
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(entries(&f.r), want_sorted);
    let tree = f.r.cache_dir().join("entries").join(key_of(&f.root)).join("tree");
    let (ino, before) = (fs::metadata(&tree).unwrap().ino(), manifest(&tree));

    let second = f.cmd().output().unwrap();
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert_eq!(unpacks(&second), 0, "{}", stderr(&second));
    // The job's writes went to its own layer: the tool is as packed.
    assert!(stderr(&second).contains("tool\n"), "{}", stderr(&second));
    assert_eq!(fs::metadata(&tree).unwrap().ino(), ino, "the entry was made again");
    assert_eq!(manifest(&tree), before, "a job changed the cached tree");
    assert!(tmp_is_empty(&f.r));
}

#[test]
fn ten_concurrent_first_runs_unpack_once() {
    if !require_root() {
        return;
    }
    let f = Formula::new("test -f /opt/tool/tool.txt && test -s /bulk");
    let runners: Vec<Runner> =
        (0..10).map(|_| Runner::new(f.cmd().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())).collect();
    let outs: Vec<Output> = runners.into_iter().map(|r| r.into_inner().wait_with_output().unwrap()).collect();
    for o in &outs {
        assert_eq!(code(o), 0, "{}", stderr(o));
    }
    assert_eq!(outs.iter().map(unpacks).sum::<usize>(), 2, "one unpack per ware for 10 runs");
    assert_eq!(entries(&f.r).len(), 2);
    assert!(tmp_is_empty(&f.r));

    // The same for a --rootfs tar: ten first runs, one unpack.
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    fs::write(rootfs.path().join("bulk"), vec![3u8; 24 << 20]).unwrap();
    let tar = rootfs.to_tar(false);
    let runners: Vec<Runner> = (0..10)
        .map(|_| {
            let mut c = r.cmd();
            c.arg("-v").arg("run").arg("--net").arg("none").arg("--rootfs").arg(tar.path());
            c.args(["--", "/bin/sh", "-c", "test -s /bulk"]).stdin(Stdio::null());
            Runner::new(c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        })
        .collect();
    let outs: Vec<Output> = runners.into_iter().map(|r| r.into_inner().wait_with_output().unwrap()).collect();
    for o in &outs {
        assert_eq!(code(o), 0, "{}", stderr(o));
    }
    let hashed: usize = outs.iter().map(|o| stderr(o).matches("unpacking the rootfs tar").count()).sum();
    assert_eq!(hashed, 1, "ten first runs of one tar file unpacked it {hashed} times");
    assert_eq!(entries(&r).len(), 1);
}

#[test]
fn a_tar_rootfs_is_keyed_by_its_bytes_and_a_changed_file_is_noticed() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    fs::write(rootfs.path().join("marker"), "one\n").unwrap();
    let tar = rootfs.to_tar(true);
    // Older than a second: the index records it (see ware_cache::tar_root).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let run = |script: &str| {
        let mut c = r.cmd();
        c.arg("-v").args(["run", "--net", "none", "--rootfs"]).arg(tar.path()).args(["--", "/bin/sh", "-c", script]);
        c.stdin(Stdio::null()).output().unwrap()
    };
    let first = run("cat /marker");
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    assert!(stderr(&first).contains("unpacking the rootfs tar"));
    let key = bytes_key(tar.path());
    assert_eq!(entries(&r), vec![key.clone()]);
    let second = run("cat /marker");
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert!(!stderr(&second).contains("unpacking the rootfs tar"), "{}", stderr(&second));
    assert_eq!(stdout(&second), "one\n");

    // The same size and mtime, other bytes: the ctime gives it away.
    let meta = fs::metadata(tar.path()).unwrap();
    fs::write(rootfs.path().join("marker"), "two\n").unwrap();
    let other = rootfs.to_tar(true);
    let mut bytes = fs::read(other.path()).unwrap();
    bytes.resize(meta.len() as usize, 0);
    fs::write(tar.path(), &bytes).unwrap();
    let mtime = filetime_of(&meta);
    set_mtime(tar.path(), mtime);
    assert_eq!(fs::metadata(tar.path()).unwrap().len(), meta.len());
    assert_eq!(filetime_of(&fs::metadata(tar.path()).unwrap()), mtime);
    let third = run("cat /marker");
    assert_eq!(code(&third), 0, "{}", stderr(&third));
    assert_eq!(stdout(&third), "two\n", "the old tree was used: {}", stderr(&third));
    assert_eq!(entries(&r).len(), 2);

    // From stdin: hashed as it is read, the entry of the same bytes used.
    let mut c = r.cmd();
    c.args(["run", "--net", "none", "--rootfs", "-", "--", "/bin/sh", "-c", "cat /marker; cat"]);
    let out = c.stdin(fs::File::open(tar.path()).unwrap()).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "two\n", "{}", stderr(&out));
    assert_eq!(entries(&r).len(), 2);
}

/// The cache key of a tar file: the SHA-256 of its bytes.
fn bytes_key(tar: &Path) -> String {
    let digest: [u8; 32] = Sha256::digest(fs::read(tar).unwrap()).into();
    format!("bytes-{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn filetime_of(m: &fs::Metadata) -> (i64, i64) {
    (m.mtime(), m.mtime_nsec())
}

fn set_mtime(p: &Path, (s, ns): (i64, i64)) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(s as u64, ns as u32);
    fs::File::options().write(true).open(p).unwrap().set_modified(t).unwrap();
}

#[test]
fn a_corrupt_ware_never_enters_the_cache() {
    if !require_root() {
        return;
    }
    let f = Formula::new("true");
    let stored = f.wares.join("tar").join(format!("{}.tar", f.tool.strip_prefix("tar:").unwrap()));
    let mut bytes = fs::read(&stored).unwrap();
    let at = bytes.windows(5).position(|w| w == b"tool\n").unwrap();
    bytes[at] = b'T';
    fs::set_permissions(&stored, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&stored, &bytes).unwrap();
    let out = f.cmd().output().unwrap();
    assert_eq!(code(&out), 123, "{}", stderr(&out));
    assert!(!entries(&f.r).contains(&key_of(&f.tool)), "a corrupt ware was cached");
    assert!(tmp_is_empty(&f.r), "its unpack was left behind");
}

/// The trust model: an entry is immutable to all but root. A job (even
/// root in it with every capability) writes only to its own layer; no
/// other host user can reach the cache; a cache dir that lets them in
/// is refused.
#[test]
fn entries_are_immutable_to_all_but_root() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let tar = rootfs.to_tar(false);
    let out = r.sh(tar.path(), &[], "true");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let key = entries(&r).pop().unwrap();
    let tree = r.cache_dir().join("entries").join(&key).join("tree");
    let before = manifest(&tree);
    let out = r.sh(
        tar.path(),
        &["--cap-add", "SYS_ADMIN", "--cap-add", "MKNOD", "--security-opt", "seccomp=unconfined"],
        "echo evil > /bin/busybox.new && mv /bin/busybox.new /etc/passwd && chmod 4777 /bin && rm -rf /tmp && \
         echo pwned >> /etc/passwd && mount -o remount,rw / 2>/dev/null; echo done",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(manifest(&tree), before, "a job changed the cached tree");

    // Nobody but root gets in: the cache is 0700 root.
    let nobody = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--", "/bin/cat"])
        .arg(tree.join("etc/passwd"))
        .output()
        .unwrap();
    assert!(!nobody.status.success(), "another user read a cache entry");
    fs::set_permissions(r.cache_dir(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = r.sh(tar.path(), &[], "true");
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(stderr(&out).contains("lets others in"), "{}", stderr(&out));
    fs::set_permissions(r.cache_dir(), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn gc_evicts_unused_entries_over_budget_and_keeps_those_in_use() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let config = r.state.path().join("default.toml");
    let mut text = fs::read_to_string(&config).unwrap();
    assert!(text.trim_end().ends_with(&format!("dir = \"{}\"", r.cache_dir().display())));
    text += "max_size = \"1k\"\n";
    fs::write(&config, text).unwrap();
    let rootfs = Rootfs::busybox();
    let mut tars = Vec::new();
    for n in 0..3 {
        fs::write(rootfs.path().join("n"), format!("{n}\n")).unwrap();
        let tar = rootfs.to_tar(false);
        let out = r.sh(tar.path(), &[], "true");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        tars.push(tar);
    }
    assert_eq!(entries(&r).len(), 3);
    let busy = bytes_key(tars[1].path());
    let mut job = r.spawn_sh(tars[1].path(), "echo up; sleep 30");
    wait_for_line(&mut job, "up");

    let gc = |dry: bool| {
        let mut c = r.cmd();
        c.args(["gc", "--cache", "--json"]);
        if dry {
            c.arg("--dry-run");
        }
        let out = c.output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let keys = |v: &serde_json::Value, field: &str| -> Vec<String> {
        v[field].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_string()).collect()
    };
    let dry = gc(true);
    assert_eq!(keys(&dry, "evicted").len(), 2, "{dry}");
    assert_eq!(keys(&dry, "in_use"), vec![busy.clone()], "{dry}");
    assert_eq!(entries(&r).len(), 3, "a dry run evicted");

    let done = gc(false);
    assert_eq!(keys(&done, "evicted").len(), 2, "{done}");
    assert_eq!(entries(&r), vec![busy.clone()], "the entry in use went, or others stayed");
    // The job still works on its tree.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(job.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let out = job.into_inner().wait_with_output().unwrap();
    assert!(out.status.code().is_some() || out.status.signal_code().is_some());
    let after = gc(false);
    assert_eq!(keys(&after, "evicted"), vec![busy], "{after}");
    assert!(entries(&r).is_empty());
    // An evicted tar runs again (unpacked anew).
    let out = r.sh(tars[0].path(), &[], "cat /n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "0\n");
}

trait SignalCode {
    fn signal_code(&self) -> Option<i32>;
}

impl SignalCode for std::process::ExitStatus {
    fn signal_code(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(self)
    }
}

/// readdir's d_ino and stat's st_ino agree in every kind of root, for
/// files and directories at several depths, before and after a copy-up
/// (tests/probes/inoprobe.c).
#[test]
fn readdir_and_stat_agree_on_inode_numbers() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let built = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(rootfs.path().join("bin/inoprobe"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probes/inoprobe.c"))
        .status()
        .expect("gcc");
    assert!(built.success());
    let deep = rootfs.path().join("usr/share/a/b/c/d");
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f"), "f\n").unwrap();
    fs::write(rootfs.path().join("usr/share/a/g"), "g\n").unwrap();
    let tar = rootfs.to_tar(false);
    for (what, root) in [("directory", rootfs.path()), ("tar", tar.path())] {
        for arg in ["", "write"] {
            let out = r.run(root, &[], &["/bin/inoprobe", arg]);
            assert_eq!(code(&out), 0, "{what} root {arg}: {}{}", stdout(&out), stderr(&out));
            assert!(stdout(&out).contains(" 0 mismatches"), "{}", stdout(&out));
        }
    }
    let wares = r.state.path().join("wares");
    let root = pack(&r, &wares, rootfs.path(), &[]);
    let tool = pack(&r, &wares, &rootfs.path().join("usr/share"), &[]);
    let file = r.state.path().join("ino.json");
    let json = serde_json::json!({
        "inputs": {"/": root, "/opt/share": tool},
        "action": {"exec": ["/bin/inoprobe", "write"]},
    });
    fs::write(&file, json.to_string()).unwrap();
    let out = r.cmd().arg("run").arg(&file).arg("--warehouse").arg(&wares).stdin(Stdio::null()).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains(" 0 mismatches"), "{}", stderr(&out));
}

#[test]
fn the_writable_layer_of_a_cached_root_follows_rootfs_size() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let tar = Rootfs::busybox().to_tar(false);
    let script = "dd if=/dev/zero of=/big bs=1M count=4 2>/dev/null && echo small-ok; \
                  dd if=/dev/zero of=/big2 bs=1M count=40 2>&1; df -k / | tail -1";
    let out = r.sh(tar.path(), &["--rootfs-size", "16m"], script);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("small-ok"), "{text}");
    assert!(text.contains("No space left"), "{text}");
}

/// Issue 14 item 4: every problem at once, then the preset packs it.
#[test]
fn pack_lists_every_refused_entry_and_the_rootfs_preset_packs_it() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let wares = r.state.path().join("wares");
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    for d in ["dev", "usr/bin", "usr/sbin", "home/odd"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for (name, minor) in [("full", 7), ("null", 3), ("zero", 5), ("random", 8)] {
        nix::sys::stat::mknod(
            &root.join("dev").join(name),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, minor),
        )
        .unwrap();
    }
    fs::write(root.join("usr/bin/su"), "su\n").unwrap();
    fs::write(root.join("usr/sbin/unix_chkpwd"), "chk\n").unwrap();
    fs::write(root.join("home/odd/file"), "odd\n").unwrap();
    std::os::unix::fs::chown(root.join("home/odd"), Some(4242), Some(4343)).unwrap();
    std::os::unix::fs::chown(root.join("home/odd/file"), Some(4242), Some(4343)).unwrap();
    std::os::unix::fs::chown(root.join("usr/sbin/unix_chkpwd"), Some(0), Some(42)).unwrap();
    fs::set_permissions(root.join("usr/bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(root.join("usr/sbin/unix_chkpwd"), fs::Permissions::from_mode(0o2755)).unwrap();

    let out = r.cmd().arg("pack").arg(root).arg("--warehouse").arg(&wares).output().unwrap();
    assert_eq!(code(&out), 121, "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("refuse 6 entries"), "{err}");
    assert!(err.contains("device files 4") && err.contains("`dev/full`") && err.contains(", ...)"), "{err}");
    assert!(err.contains("`usr/bin/su`") && err.contains("`usr/sbin/unix_chkpwd`"), "{err}");
    assert!(err.contains("--filter dev=keep|ignore") && err.contains("--filter setid=keep|ignore"), "{err}");
    assert!(err.contains("--filter preset=rootfs"), "{err}");

    let id = pack(&r, &wares, root, &["preset=rootfs"]);
    // A key given beside the preset overrides it.
    let flattened = pack(&r, &wares, root, &["preset=rootfs", "uid=1000"]);
    assert_ne!(id, flattened);
    let dest = t.path().join("out");
    fs::create_dir(&dest).unwrap();
    let out = r.cmd().arg("unpack").arg(&id).arg(&dest).arg("--warehouse").arg(&wares).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("4242:4343 (2)") && stderr(&out).contains("0:0"), "{}", stderr(&out));
    let su = fs::metadata(dest.join("usr/bin/su")).unwrap();
    assert_eq!((su.mode() & 0o7777, su.uid()), (0o4755, 0));
    assert_eq!(fs::metadata(dest.join("usr/sbin/unix_chkpwd")).unwrap().gid(), 42);
    assert!(!dest.join("dev/full").exists(), "the preset leaves device files out");
}
