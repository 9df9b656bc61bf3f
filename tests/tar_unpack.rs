//! Unpacking real (and hostile) tars into a temp dir, as root.

mod common;
use common::require_root;

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use repeatr::archive::{TarError, UnpackStats, decompressed, unpack};
use tar::{Builder, EntryType, Header};

/// `base/root` is the unpack target; `base/outside` is where escapes would land.
struct Target {
    base: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Target {
    fn new() -> Target {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        Target { base, root, outside }
    }

    fn base(&self) -> &Path {
        self.base.path()
    }

    fn unpack(&self, tar: &[u8]) -> Result<UnpackStats, TarError> {
        let fd = OwnedFd::from(File::open(&self.root).unwrap());
        unpack(tar, fd.as_fd())
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// A header whose name bytes are written raw: `set_path` refuses `..` and
/// absolute paths, which is exactly what a hostile tar contains.
fn header(kind: EntryType, name: &[u8], mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    h
}

fn link_header(kind: EntryType, name: &[u8], target: &[u8]) -> Header {
    let mut h = header(kind, name, 0o777, 0);
    h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
    h.set_cksum();
    h
}

fn file(b: &mut Builder<Vec<u8>>, name: &[u8], data: &[u8]) {
    b.append(&header(EntryType::Regular, name, 0o644, data.len() as u64), data).unwrap();
}

fn dir(b: &mut Builder<Vec<u8>>, name: &[u8]) {
    b.append(&header(EntryType::Directory, name, 0o755, 0), &[][..]).unwrap();
}

fn link(b: &mut Builder<Vec<u8>>, kind: EntryType, name: &[u8], target: &[u8]) {
    b.append(&link_header(kind, name, target), &[][..]).unwrap();
}

fn tar(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer whose length we pass.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

// ---- path traversal ------------------------------------------------------

#[test]
fn dotdot_and_absolute_names_fail_the_whole_unpack() {
    if !require_root() {
        return;
    }
    let t = Target::new();
    let absolute = format!("{}/evil", t.base().display());
    for name in [&b"../evil"[..], b"a/../../evil", b"./../evil", absolute.as_bytes()] {
        let bytes = tar(|b| {
            file(b, b"ok", b"fine");
            file(b, name, b"pwned");
        });
        let err = t.unpack(&bytes).unwrap_err();
        assert!(matches!(err, TarError::UnsafePath { .. }), "{name:?}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(&String::from_utf8_lossy(name).to_string()), "{msg}");
        assert!(!msg.contains('\n'));
        assert!(!exists(&t.base().join("evil")), "{name:?} escaped");
    }
}

// ---- symlink escapes -----------------------------------------------------

#[test]
fn writing_through_an_absolute_symlink_out_of_the_root_fails() {
    if !require_root() {
        return;
    }
    let t = Target::new();
    let outside = t.outside.as_os_str().as_bytes().to_vec();
    let bytes = tar(|b| {
        link(b, EntryType::Symlink, b"link", &outside);
        file(b, b"link/file", b"pwned");
    });
    let err = t.unpack(&bytes).unwrap_err();
    assert!(matches!(err, TarError::Escape { .. }), "{err}");
    assert!(err.to_string().contains("link/file"), "{err}");
    assert!(!exists(&t.outside.join("file")));
    // The symlink itself is only data and stays as written.
    assert_eq!(fs::read_link(t.at("link")).unwrap(), t.outside);
}

#[test]
fn writing_through_a_relative_symlink_out_of_the_root_fails() {
    if !require_root() {
        return;
    }
    let t = Target::new();
    for entry in [&b"sub/link/file"[..], b"sub/link/newdir/", b"sub/link/deep/er/file"] {
        let bytes = tar(|b| {
            dir(b, b"sub/");
            link(b, EntryType::Symlink, b"sub/link", b"../../outside");
            let kind = if entry.ends_with(b"/") { EntryType::Directory } else { EntryType::Regular };
            b.append(&header(kind, entry, 0o755, 0), &[][..]).unwrap();
        });
        let err = t.unpack(&bytes).unwrap_err();
        assert!(matches!(err, TarError::Escape { .. }), "{entry:?}: {err}");
        assert_eq!(fs::read_dir(&t.outside).unwrap().count(), 0, "{entry:?} escaped");
    }
}

#[test]
fn a_later_file_replaces_a_symlink_instead_of_writing_through_it() {
    if !require_root() {
        return;
    }
    let t = Target::new();
    let target = t.outside.join("victim");
    let bytes = tar(|b| {
        link(b, EntryType::Symlink, b"x", target.as_os_str().as_bytes());
        file(b, b"x", b"data");
    });
    t.unpack(&bytes).unwrap();
    assert!(!exists(&target));
    assert!(fs::symlink_metadata(t.at("x")).unwrap().is_file());
    assert_eq!(fs::read(t.at("x")).unwrap(), b"data");
}

// ---- hardlink escapes ----------------------------------------------------

#[test]
fn hardlinks_out_of_the_root_fail() {
    if !require_root() {
        return;
    }
    let t = Target::new();
    fs::write(t.outside.join("secret"), b"host secret").unwrap();
    let absolute = t.outside.join("secret");
    for target in [&b"../outside/secret"[..], absolute.as_os_str().as_bytes()] {
        let bytes = tar(|b| link(b, EntryType::Link, b"h", target));
        let err = t.unpack(&bytes).unwrap_err();
        assert!(matches!(err, TarError::UnsafePath { .. }), "{target:?}: {err}");
        assert!(err.to_string().contains("`h`"), "{err}");
        assert!(!exists(&t.at("h")));
    }

    let outside = t.outside.as_os_str().as_bytes().to_vec();
    let bytes = tar(|b| {
        link(b, EntryType::Symlink, b"link", &outside);
        link(b, EntryType::Link, b"h", b"link/secret");
    });
    let err = t.unpack(&bytes).unwrap_err();
    assert!(matches!(err, TarError::Escape { .. }), "{err}");
    assert!(!exists(&t.at("h")));
    assert_eq!(fs::metadata(t.outside.join("secret")).unwrap().nlink(), 1);
}

// ---- faithfulness --------------------------------------------------------

#[test]
fn metadata_links_xattrs_and_special_files_are_kept() {
    if !require_root() {
        return;
    }
    let t = Target::new();
    let bytes = tar(|b| {
        let mut root = header(EntryType::Directory, b"./", 0o750, 0);
        root.set_mtime(42);
        root.set_cksum();
        b.append(&root, &[][..]).unwrap();

        let mut d = header(EntryType::Directory, b"tmp/", 0o1777, 0);
        d.set_mtime(1_000_000);
        d.set_cksum();
        b.append(&d, &[][..]).unwrap();
        file(b, b"tmp/child", b"written after the directory entry");

        let mut suid = header(EntryType::Regular, b"bin/su", 0o4755, 5);
        suid.set_uid(1234);
        suid.set_gid(5678);
        suid.set_mtime(1_234_567_890);
        suid.set_cksum();
        b.append(&suid, &b"hello"[..]).unwrap();

        let mut sgid = header(EntryType::Directory, b"shared/", 0o2775, 0);
        sgid.set_gid(5678);
        sgid.set_cksum();
        b.append(&sgid, &[][..]).unwrap();

        link(b, EntryType::Symlink, b"passwd", b"/etc/passwd");
        link(b, EntryType::Link, b"bin/su-again", b"bin/su");

        b.append_pax_extensions([
            ("SCHILY.xattr.user.test", &b"v\x00\x01"[..]),
            ("SCHILY.xattr.trusted.test", &b"t"[..]),
            ("mtime", &b"1500000000.5"[..]),
        ])
        .unwrap();
        file(b, b"xattr", b"x");

        b.append(&header(EntryType::Fifo, b"run/fifo", 0o640, 0), &[][..]).unwrap();

        let mut null = header(EntryType::Char, b"dev/null", 0o666, 0);
        null.set_device_major(1).unwrap();
        null.set_device_minor(3).unwrap();
        null.set_cksum();
        b.append(&null, &[][..]).unwrap();
    });
    let stats = t.unpack(&bytes).unwrap();
    assert_eq!(stats.skipped_devices, 1);
    assert_eq!(stats.entries, 10);
    assert_eq!(stats.bytes, 5 + 1 + "written after the directory entry".len() as u64);

    let root = fs::metadata(&t.root).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o750);
    assert_eq!(root.mtime(), 42);

    let tmp = fs::metadata(t.at("tmp")).unwrap();
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    assert_eq!(tmp.mtime(), 1_000_000, "directory mtime must survive its children");

    let su = fs::metadata(t.at("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid must survive chown");
    assert_eq!((su.uid(), su.gid()), (1234, 5678));
    assert_eq!(su.mtime(), 1_234_567_890);
    assert_eq!(fs::read(t.at("bin/su")).unwrap(), b"hello");

    let shared = fs::metadata(t.at("shared")).unwrap();
    assert_eq!(shared.mode() & 0o7777, 0o2775);
    assert_eq!(shared.gid(), 5678);

    assert_eq!(fs::read_link(t.at("passwd")).unwrap(), Path::new("/etc/passwd"));
    let again = fs::metadata(t.at("bin/su-again")).unwrap();
    assert_eq!(again.ino(), su.ino());
    assert_eq!(again.nlink(), 2);

    assert_eq!(lgetxattr(&t.at("xattr"), "user.test").as_deref(), Some(&b"v\x00\x01"[..]));
    // Never restored from any tar (security_and_trusted_xattrs_are_never_restored).
    assert_eq!(lgetxattr(&t.at("xattr"), "trusted.test"), None);
    let x = fs::metadata(t.at("xattr")).unwrap();
    assert_eq!((x.mtime(), x.mtime_nsec()), (1_500_000_000, 500_000_000));

    let fifo = fs::symlink_metadata(t.at("run/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o640);

    assert!(!exists(&t.at("dev/null")), "device nodes are never created");
    // Parents the tar never listed are created 0755.
    assert_eq!(fs::metadata(t.at("bin")).unwrap().permissions().mode() & 0o7777, 0o755);
}

/// Issue 9, item 4: `security.*` (file capabilities, LSM labels) and
/// `trusted.*` (overlayfs and admin metadata) xattrs are never restored, on
/// files, directories or the root; `user.*` ones are.
#[test]
fn security_and_trusted_xattrs_are_never_restored() {
    if !require_root() {
        return;
    }
    let t = Target::new();
    let cap = [0x01, 0, 0, 0x02, 0xC0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let records: [(&str, &[u8]); 5] = [
        ("SCHILY.xattr.security.capability", &cap),
        ("SCHILY.xattr.security.selinux", b"system_u:object_r:shadow_t:s0"),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.trusted.x", b"1"),
        ("SCHILY.xattr.user.kept", b"yes"),
    ];
    let bytes = tar(|b| {
        b.append_pax_extensions(records).unwrap();
        dir(b, b"./");
        b.append_pax_extensions(records).unwrap();
        dir(b, b"d/");
        b.append_pax_extensions(records).unwrap();
        b.append(&header(EntryType::Regular, b"d/ping", 0o755, 4), &b"ping"[..]).unwrap();
    });
    let stats = t.unpack(&bytes).unwrap();
    assert_eq!(stats.skipped_xattrs, 12);
    for path in [t.root.clone(), t.at("d"), t.at("d/ping")] {
        for (key, _) in &records[..4] {
            let name = key.strip_prefix("SCHILY.xattr.").unwrap();
            assert_eq!(lgetxattr(&path, name), None, "{name} restored on {path:?}");
        }
        assert_eq!(lgetxattr(&path, "user.kept").as_deref(), Some(&b"yes"[..]), "{path:?}");
    }
}

/// Issue 9, item 8: names from a tar reach messages with control characters
/// and bytes that are not UTF-8 escaped, including names the tar crate puts
/// into its own errors.
#[test]
fn names_in_errors_are_escaped() {
    if !require_root() {
        return;
    }
    let t = Target::new();
    let name = b"a\x1b]0;owned\x07\xff\r/../evil";
    let err = t.unpack(&tar(|b| file(b, name, b"x"))).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(r"a\u{1b}]0;owned\u{7}\xff\r/../evil"), "{msg}");
    assert!(!msg.chars().any(|c| c.is_control()), "{msg:?}");

    // A mode field the tar crate cannot parse: its error names the entry.
    let mut h = header(EntryType::Regular, b"bad\x1b[2Jmode", 0o644, 0);
    h.as_old_mut().mode = *b"zzzzzzz\0";
    h.set_cksum();
    let bytes = tar(|b| b.append(&h, &[][..]).unwrap());
    let err = t.unpack(&bytes).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TarError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(r"bad\u{1b}[2Jmode"), "{msg}");
    assert!(!msg.chars().any(|c| c.is_control()), "{msg:?}");
}

#[test]
fn docker_export_quirks_and_long_names_unpack() {
    if !require_root() {
        return;
    }
    let t = Target::new();
    let gnu_long = format!("usr/share/{}/file", "g".repeat(120));
    let pax_long = format!("usr/lib/{}/file", "p".repeat(150));
    let bytes = tar(|b| {
        file(b, b".dockerenv", b"");
        dir(b, b"dev/");
        file(b, b"dev/console", b"");
        dir(b, b"etc/");
        file(b, b"etc/hosts", b"");
        link(b, EntryType::Symlink, b"etc/mtab", b"/proc/mounts");
        let mut h = header(EntryType::Regular, b"", 0o644, 4);
        b.append_data(&mut h, &gnu_long, &b"long"[..]).unwrap();
        b.append_pax_extensions([("path", pax_long.as_bytes())]).unwrap();
        file(b, b"truncated-name-ignored", b"pax");
        dir(b, b"etc/");
    });
    let stats = t.unpack(&bytes).unwrap();
    assert_eq!(stats.skipped_devices, 0);
    assert_eq!(fs::metadata(t.at(".dockerenv")).unwrap().len(), 0);
    assert!(fs::metadata(t.at("dev/console")).unwrap().is_file());
    assert_eq!(fs::read(t.at("etc/hosts")).unwrap(), b"");
    assert_eq!(fs::read_link(t.at("etc/mtab")).unwrap(), Path::new("/proc/mounts"));
    assert_eq!(fs::read(t.at(&gnu_long)).unwrap(), b"long");
    assert_eq!(fs::read(t.at(&pax_long)).unwrap(), b"pax");
    assert!(!exists(&t.at("truncated-name-ignored")));
    // The duplicate directory entry kept its contents.
    assert!(exists(&t.at("etc/hosts")));
}

// ---- compression ---------------------------------------------------------

fn read_all(mut r: Box<dyn Read>) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn gzip_is_detected_from_content_and_plain_passes_through() {
    let plain = tar(|b| file(b, b"hello", b"world"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(read_all(decompressed(Box::new(std::io::Cursor::new(gz))).unwrap()), plain);
    assert_eq!(read_all(decompressed(Box::new(std::io::Cursor::new(plain.clone()))).unwrap()), plain);
    assert!(read_all(decompressed(Box::new(std::io::empty())).unwrap()).is_empty());
}

#[test]
fn gzip_tar_unpacks() {
    if !require_root() {
        return;
    }
    let t = Target::new();
    let plain = tar(|b| file(b, b"etc/os-release", b"ID=test\n"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let reader = decompressed(Box::new(std::io::Cursor::new(gz.finish().unwrap()))).unwrap();
    let fd = OwnedFd::from(File::open(&t.root).unwrap());
    let stats = unpack(reader, fd.as_fd()).unwrap();
    assert_eq!(stats.bytes, 8);
    assert_eq!(fs::read(t.at("etc/os-release")).unwrap(), b"ID=test\n");
}

#[test]
fn xz_zstd_and_bzip2_are_refused_with_advice() {
    let cases: [(&[u8], &str); 3] = [
        (&[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00, 0, 0], "xz -d"),
        (&[0x28, 0xB5, 0x2F, 0xFD, 0, 0], "zstd -d"),
        (b"BZh91AY&SY", "bzip2 -d"),
    ];
    for (bytes, advice) in cases {
        let err = match decompressed(Box::new(std::io::Cursor::new(bytes.to_vec()))) {
            Err(e) => e,
            Ok(_) => panic!("{advice}: accepted"),
        };
        let msg = err.to_string();
        assert!(matches!(err, TarError::UnsupportedCompression { .. }), "{msg}");
        assert!(msg.contains(advice) && msg.contains("decompress it first"), "{msg}");
        assert!(!msg.contains('\n'));
    }
}

#[test]
fn garbage_is_a_read_error() {
    if !require_root() {
        return;
    }
    let t = Target::new();
    let err = t.unpack(&[0x55; 1024]).unwrap_err();
    assert!(matches!(err, TarError::Read(_)), "{err}");
}

/// Smoke test against a real tar, e.g. `docker export` output or
/// `tar --xattrs --numeric-owner -C / -cpf /tmp/etc.tar etc`:
/// `REPEATR_SMOKE_TAR=/tmp/etc.tar REPEATR_SMOKE_OUT=/tmp/out cargo test --test tar_unpack -- --ignored`
#[test]
#[ignore]
fn smoke_real_tar() {
    let (Ok(tar), Ok(out)) = (std::env::var("REPEATR_SMOKE_TAR"), std::env::var("REPEATR_SMOKE_OUT")) else {
        eprintln!("set REPEATR_SMOKE_TAR and REPEATR_SMOKE_OUT (an empty directory)");
        return;
    };
    let reader = decompressed(Box::new(File::open(tar).unwrap())).unwrap();
    let fd = OwnedFd::from(File::open(out).unwrap());
    eprintln!("{:?}", unpack(reader, fd.as_fd()).unwrap());
}
