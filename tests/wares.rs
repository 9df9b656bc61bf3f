//! Wares: hashing, filters, the warehouse and the `pack` / `unpack`
//! commands, on real files (as root where ownership matters).

mod common;
mod tamper;
use common::require_root;
use tamper::{CAP_SETUID_EP, edit_header, flip, insert_pax, offset_of};

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use repeatr::error::Error;
use repeatr::formula::{Filters, IdFilter, MtimeFilter, Policy, WareError, WareId, Warehouse, hash_path};
use tar::{Builder, EntryType, Header};

fn set_mtime(path: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 123_456_789);
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
        .unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// A small tree: files, a subdirectory, a symlink, a hardlink, an empty file,
/// names that sort differently as whole paths than depth-first.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/deep")).unwrap();
    fs::write(root.join("a.txt"), "a dot txt\n").unwrap();
    fs::write(root.join("a/deep/data.bin"), vec![7u8; 70_000]).unwrap();
    fs::write(root.join("empty"), "").unwrap();
    fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("../a.txt", root.join("a/link")).unwrap();
    fs::hard_link(root.join("a.txt"), root.join("a/hard")).unwrap();
    for dir in ["", "a", "a/deep"] {
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// The same tree as `make_tree`, as a tar written in another order, with
/// other owners and mtimes, no directory entries at all (they are implied)
/// and `a/hard` as a hardlink entry.
fn tree_tar() -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    let file = |b: &mut Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32| {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(4242);
        h.set_gid(99);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, path, data).unwrap();
    };
    file(&mut b, "./run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    file(&mut b, "a/deep/data.bin", &vec![7u8; 70_000], 0o644);
    file(&mut b, "a.txt", b"a dot txt\n", 0o644);
    file(&mut b, "empty", b"", 0o644);
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "a/hard", "./a.txt").unwrap();
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_uid(1);
    h.set_gid(1);
    h.set_mtime(1);
    b.append_link(&mut h, "a/link", "../a.txt").unwrap();
    b.into_inner().unwrap()
}

fn id_of(path: &Path) -> WareId {
    hash_path(path, &Filters::default(), false).unwrap().0
}

/// `make_tree` at T/src (then `tweak`), packed with the default filters
/// into the warehouse T/wh: the tree, the warehouse and the ware's id.
fn packed(t: &tempfile::TempDir, tweak: impl FnOnce(&Path)) -> (PathBuf, Warehouse, WareId) {
    let src = t.path().join("src");
    make_tree(&src);
    tweak(&src);
    let wh = Warehouse::new(t.path().join("wh"));
    let id = wh.pack(&src, &Filters::default()).unwrap();
    (src, wh, id)
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("rpt-ware-").tempdir().unwrap()
}

#[test]
fn dir_and_tars_of_it_hash_the_same() {
    if !require_root() {
        return;
    }
    let t = tmp();
    let src = t.path().join("src");
    make_tree(&src);
    // Owners and mtimes that the default filters must flatten away.
    chown(&src.join("a.txt"), 12, 34);
    chown(&src.join("a/link"), 0, 0);
    set_mtime(&src.join("a/deep/data.bin"), 5);
    set_mtime(&src.join("a/link"), 99_999);
    let from_dir = id_of(&src);

    let tar_path = t.path().join("src.tar");
    fs::write(&tar_path, tree_tar()).unwrap();
    assert_eq!(id_of(&tar_path), from_dir);

    // GNU tar's own output, gzip-compressed, with the real owners and times.
    let tgz = t.path().join("src.tgz");
    let st = Command::new("tar").args(["-C"]).arg(&src).args(["-czf"]).arg(&tgz).arg(".").status().unwrap();
    assert!(st.success());
    assert_eq!(id_of(&tgz), from_dir);

    // And both stored in a warehouse give one ware.
    let wh = Warehouse::new(t.path().join("wh"));
    assert_eq!(wh.pack(&src, &Filters::default()).unwrap(), from_dir);
    assert_eq!(wh.pack(&tar_path, &Filters::default()).unwrap(), from_dir);
    assert_eq!(fs::read_dir(t.path().join("wh/tar")).unwrap().count(), 1);
    wh.verify(&from_dir).unwrap();
}

#[test]
fn hash_changes_with_content_mode_and_link_target() {
    let t = tmp();
    let src = t.path().join("src");
    make_tree(&src);
    let base = id_of(&src);
    assert_eq!(id_of(&src), base, "hashing is deterministic");

    fs::write(src.join("empty"), "x").unwrap();
    let content = id_of(&src);
    assert_ne!(content, base);
    fs::write(src.join("empty"), "").unwrap();
    assert_eq!(id_of(&src), base);

    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    let mode = id_of(&src);
    assert_ne!(mode, base);
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();

    fs::remove_file(src.join("a/link")).unwrap();
    symlink("../a.txt2", src.join("a/link")).unwrap();
    let target = id_of(&src);
    assert_ne!(target, base);

    fs::remove_file(src.join("a/link")).unwrap();
    symlink("../a.txt", src.join("a/link")).unwrap();
    fs::rename(src.join("empty"), src.join("empty2")).unwrap();
    assert_ne!(id_of(&src), base, "a rename changes the hash");
}

#[test]
fn filters_flatten_owners_and_times_in_the_stored_tar() {
    if !require_root() {
        return;
    }
    let t = tmp();
    let (src, wh, id) = packed(&t, |src| {
        chown(&src.join("a.txt"), 12, 34);
        set_mtime(&src.join("run.sh"), 7);
    });
    let mut archive = tar::Archive::new(File::open(wh.ware_path(&id)).unwrap());
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1000, 1000));
        assert_eq!(h.mtime().unwrap(), 1_262_304_000);
        assert!(h.username().unwrap().unwrap_or("").is_empty());
        names.push(String::from_utf8(entry.path_bytes().into_owned()).unwrap());
    }
    // Byte order of whole paths ("a" < "a.txt" < "a/deep": not depth
    // first); the hardlink is a file.
    assert_eq!(
        names,
        ["./", "./a/", "./a.txt", "./a/deep/", "./a/deep/data.bin", "./a/hard", "./a/link", "./empty", "./run.sh"]
    );

    // Keeping the owner and times: they are in the hash and the tar.
    let keep = Filters { uid: IdFilter::Keep, gid: IdFilter::Keep, mtime: MtimeFilter::Keep, ..Filters::default() };
    let kept = wh.pack(&src, &keep).unwrap();
    assert_ne!(kept, id);
    let mut archive = tar::Archive::new(File::open(wh.ware_path(&kept)).unwrap());
    let entry = archive.entries().unwrap().map(|e| e.unwrap()).find(|e| &*e.path_bytes() == b"./a.txt").unwrap();
    assert_eq!(entry.header().uid().unwrap(), 12);
    assert_eq!(entry.header().gid().unwrap(), 34);
    wh.verify(&kept).unwrap();
}

#[test]
fn setid_is_rejected_by_default_and_kept_on_request() {
    if !require_root() {
        return;
    }
    let t = tmp();
    let src = t.path().join("src");
    make_tree(&src);
    let plain = id_of(&src);
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
    let err = hash_path(&src, &Filters::default(), false).unwrap_err();
    assert!(matches!(&err, WareError::Rejected { filters, .. } if filters == &["setid"]), "{err}");
    assert!(err.to_string().contains("run.sh"), "{err}");
    assert_eq!(Error::from(err).exit_code(), 121);

    let keep = Filters { setid: Policy::Keep, ..Filters::default() };
    let wh = Warehouse::new(t.path().join("wh"));
    let kept = wh.pack(&src, &keep).unwrap();
    assert_ne!(kept, plain);
    wh.verify(&kept).unwrap();
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    wh.unpack(&kept, &out).unwrap();
    assert_eq!(fs::metadata(out.join("run.sh")).unwrap().mode() & 0o7777, 0o4755);

    let ignore = Filters { setid: Policy::Ignore, ..Filters::default() };
    assert_eq!(hash_path(&src, &ignore, false).unwrap().0, plain);
}

#[test]
fn devices_follow_the_dev_filter() {
    if !require_root() {
        return;
    }
    let t = tmp();
    let src = t.path().join("src");
    make_tree(&src);
    let plain = id_of(&src);
    nix::sys::stat::mknod(
        &src.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    fs::set_permissions(src.join("null"), fs::Permissions::from_mode(0o666)).unwrap();
    let err = hash_path(&src, &Filters::default(), false).unwrap_err();
    assert!(matches!(&err, WareError::Rejected { filters, .. } if filters == &["dev"]), "{err}");
    let with = |dev| Filters { dev, ..Filters::default() };
    assert_eq!(hash_path(&src, &with(Policy::Ignore), false).unwrap().0, plain);
    let (kept, manifest) = hash_path(&src, &with(Policy::Keep), true).unwrap();
    assert_ne!(kept, plain);
    let manifest = String::from_utf8(manifest.unwrap()).unwrap();
    assert!(manifest.contains("4:null c 0666 1000 1000 1262304000 1,3\n"), "{manifest}");
    let wh = Warehouse::new(t.path().join("wh"));
    assert_eq!(wh.pack(&src, &with(Policy::Keep)).unwrap(), kept);
    wh.verify(&kept).unwrap();
}

#[test]
fn corrupt_and_missing_wares_are_told_apart() {
    if !require_root() {
        return;
    }
    let t = tmp();
    let (_, wh, id) = packed(&t, |_| {});
    let path = wh.ware_path(&id);
    let pristine = fs::read(&path).unwrap();

    // A byte of file content: the tar still reads, the hash differs.
    flip(&path, offset_of(&pristine, b"a dot txt"));
    let err = wh.verify(&id).unwrap_err();
    assert!(matches!(err, WareError::HashMismatch { .. }), "{err}");
    assert_eq!(Error::from(err).exit_code(), 123);
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let err = wh.unpack(&id, &out).unwrap_err();
    assert!(matches!(err, WareError::HashMismatch { .. }), "{err}");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "nothing unpacked");

    // A byte of a header: the tar itself is damaged (checksum).
    fs::write(&path, &pristine).unwrap();
    wh.verify(&id).unwrap();
    flip(&path, offset_of(&pristine, b"./run.sh"));
    let err = wh.verify(&id).unwrap_err();
    assert!(matches!(err, WareError::Corrupt { .. } | WareError::HashMismatch { .. }), "{err}");
    assert!(err.to_string().contains("delete that file"), "{err}");
    assert_eq!(Error::from(err).exit_code(), 123);

    fs::remove_file(&path).unwrap();
    let err = wh.verify(&id).unwrap_err();
    assert!(matches!(err, WareError::NotFound { .. }), "{err}");
    assert_eq!(Error::from(err).exit_code(), 122);
}

#[test]
fn pack_unpack_pack_round_trips() {
    if !require_root() {
        return;
    }
    let t = tmp();
    let src = t.path().join("src");
    make_tree(&src);
    // A name and a symlink target too long for a tar header field.
    let long = "n".repeat(150);
    fs::write(src.join(&long), "long").unwrap();
    symlink("t".repeat(200), src.join("a/longlink")).unwrap();
    // An mtime before the epoch, kept: needs a PAX record.
    set_mtime(&src.join("empty"), -1_000);
    let keep_time = Filters { mtime: MtimeFilter::Keep, ..Filters::default() };
    for filters in [Filters::default(), keep_time] {
        let wh = Warehouse::new(t.path().join("wh"));
        let id = wh.pack(&src, &filters).unwrap();
        let out = t.path().join(format!("out-{}", id.hash));
        fs::create_dir(&out).unwrap();
        let stats = wh.unpack(&id, &out).unwrap();
        assert!(stats.entries >= 10);
        assert_eq!(fs::read_link(out.join("a/longlink")).unwrap(), PathBuf::from("t".repeat(200)));
        assert_eq!(fs::read(out.join(&long)).unwrap(), b"long");
        assert_eq!(fs::metadata(out.join("a.txt")).unwrap().uid(), 1000);
        // Packing what was unpacked, filtering nothing, gives the same ware.
        let again = wh.pack(&out, &Filters::keep_all()).unwrap();
        assert_eq!(again, id);
        assert_eq!(hash_path(&out, &filters, false).unwrap().0, id);
        assert_eq!(hash_path(&wh.ware_path(&id), &Filters::keep_all(), false).unwrap().0, id);
    }
}

#[test]
fn hostile_and_odd_tars_are_refused() {
    let t = tmp();
    let write = |name: &str, entries: &[(&str, EntryType, &str)]| -> PathBuf {
        let mut b = Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut h = Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(0);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            // Raw names: the builder refuses `..` itself.
            let bytes = path.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            let lb = link.as_bytes();
            h.as_old_mut().linkname[..lb.len()].copy_from_slice(lb);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        }
        let p = t.path().join(name);
        fs::write(&p, b.into_inner().unwrap()).unwrap();
        p
    };
    let cases = [
        (write("dotdot.tar", &[("../evil", EntryType::Regular, "")]), "`..`"),
        (write("abs.tar", &[("/etc/x", EntryType::Regular, "")]), "absolute"),
        (
            write("through.tar", &[("l", EntryType::Symlink, "/etc"), ("l/passwd", EntryType::Regular, "")]),
            "not a directory",
        ),
        (write("hard.tar", &[("h", EntryType::Link, "nope")]), "hardlink"),
    ];
    for (path, want) in cases {
        let err = hash_path(&path, &Filters::default(), false).unwrap_err();
        assert!(matches!(err, WareError::SourceTar { .. }), "{err}");
        assert!(err.to_string().contains(want), "{path:?}: {err}");
        assert_eq!(Error::from(err).exit_code(), 121);
    }
}

fn repeatr(args: &[&str], warehouse: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repeatr"));
    cmd.args(args).env_remove("REPEATR_WAREHOUSE");
    if let Some(w) = warehouse {
        cmd.env("REPEATR_WAREHOUSE", w);
    }
    cmd.output().unwrap()
}

#[test]
fn cli_pack_and_unpack_with_exit_codes() {
    if !require_root() {
        return;
    }
    let t = tmp();
    let src = t.path().join("src");
    make_tree(&src);
    let wh = t.path().join("wh");
    let src_s = src.to_str().unwrap();

    let out = repeatr(&["pack", src_s], None);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REPEATR_WAREHOUSE"));

    let out = repeatr(&["pack", src_s], Some(&wh));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(id, id_of(&src).to_string());

    let out = repeatr(&["pack", src_s, "--filter", "uid=keep", "--filter", "nope=1"], Some(&wh));
    assert_eq!(out.status.code(), Some(121));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `nope`"));

    let dest = t.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let dest_s = dest.to_str().unwrap();
    let out = repeatr(&["unpack", &id, dest_s, "--warehouse", wh.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read(dest.join("a/hard")).unwrap(), b"a dot txt\n");

    let out = repeatr(&["unpack", "tar:xyz", dest_s], Some(&wh));
    assert_eq!(out.status.code(), Some(121));
    let missing = format!("tar:{}", "0".repeat(64));
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = repeatr(&["unpack", &missing, empty.to_str().unwrap()], Some(&wh));
    assert_eq!(out.status.code(), Some(122));
    let stored = Warehouse::new(&wh).ware_path(&id.parse().unwrap());
    let bytes = fs::read(&stored).unwrap();
    flip(&stored, offset_of(&bytes, b"a dot txt"));
    let out = repeatr(&["unpack", &id, empty.to_str().unwrap()], Some(&wh));
    assert_eq!(out.status.code(), Some(123));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

/// Asserts that the ware `id` stored at `stored` is refused as corrupt by
/// every reader (exit 123, one line naming the file) and that an unpack
/// writes nothing.
fn assert_refused(wh: &Warehouse, id: &WareId, stored: &Path, out: &Path, what: &str) -> String {
    let res = wh.unpack(id, out);
    assert!(matches!(res, Err(WareError::Corrupt { .. })), "{what}: accepted or wrong error: {res:?}");
    assert_eq!(fs::read_dir(out).unwrap().count(), 0, "{what}: something was unpacked");
    let err = res.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{:?}", stored)), "{what}: {msg}");
    assert!(!msg.contains('\n'), "{what}: {msg}");
    assert_eq!(Error::from(err).exit_code(), 123, "{what}");
    let err = wh.verify(id).unwrap_err();
    assert!(matches!(err, WareError::Corrupt { .. }), "{what}: {err}");
    let err = wh.open_verified(id).unwrap_err();
    assert!(matches!(err, WareError::Corrupt { .. }), "{what}: {err}");
    msg
}

/// Issue 9, item 4, as it was done: a PAX `SCHILY.xattr.security.capability`
/// record inserted in front of `./run.sh` in the stored ware, whose file name
/// (the old id) is kept. The tree hash does not see xattrs, and an unpack
/// that restored the record gave the binary cap_setuid for whoever ran it.
#[test]
fn a_stored_ware_with_an_added_xattr_is_refused() {
    if !require_root() {
        return;
    }
    let t = tmp();
    let (_, wh, id) = packed(&t, |_| {});
    let wh_dir = t.path().join("wh");
    let stored = wh.ware_path(&id);
    insert_pax(&stored, "./run.sh", &[("SCHILY.xattr.security.capability", &CAP_SETUID_EP)]);
    // A tar reader sees the same tree: only the stored bytes changed.
    assert_eq!(hash_path(&stored, &Filters::keep_all(), false).unwrap().0, id);

    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let msg = assert_refused(&wh, &id, &stored, &out, "security.capability");
    assert!(msg.contains("SCHILY.xattr.security.capability") && msg.contains("run.sh"), "{msg}");

    let cli = repeatr(&["unpack", &id.to_string(), out.to_str().unwrap()], Some(&wh_dir));
    assert_eq!(cli.status.code(), Some(123), "{}", String::from_utf8_lossy(&cli.stderr));
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(stored.to_str().unwrap()), "{stderr}");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "the CLI unpacked something");
}

/// A change made to a stored ware in place.
type Tamper<'a> = Box<dyn Fn(&Path) + 'a>;

/// Every change to the stored bytes that a tar reader does not see as a
/// change of the tree is refused all the same: the stored ware must be
/// exactly what `pack` writes for its tree.
#[test]
fn stored_bytes_other_than_what_pack_writes_are_refused() {
    if !require_root() {
        return;
    }
    let t = tmp();
    // A name long enough for a PAX `path` record of the packer's own.
    let long = "n".repeat(150);
    let (_, wh, id) = packed(&t, |src| fs::write(src.join(&long), "long").unwrap());
    let stored = wh.ware_path(&id);
    let pristine = fs::read(&stored).unwrap();
    let append = |bytes: &'static [u8]| {
        move |p: &Path| {
            let mut v = fs::read(p).unwrap();
            v.extend_from_slice(bytes);
            fs::write(p, v).unwrap();
        }
    };
    let padding = offset_of(&pristine, b"a dot txt\n") + 10;
    let cases: Vec<(&str, Tamper<'_>)> = vec![
        ("trailing garbage", Box::new(append(b"garbage"))),
        ("a third zero block", Box::new(append(&[0u8; 512]))),
        ("a user name", Box::new(|p| edit_header(p, "./a.txt", |h| h.set_username("root").unwrap()))),
        ("an atime", Box::new(|p| edit_header(p, "./a.txt", |h| h.as_gnu_mut().unwrap().set_atime(5)))),
        (
            "a mode spelled another way",
            Box::new(|p| edit_header(p, "./run.sh", |h| h.as_old_mut().mode = *b"    755\0")),
        ),
        ("a file-type bit in the mode", Box::new(|p| edit_header(p, "./run.sh", |h| h.set_mode(0o100755)))),
        (
            "non-zero padding",
            Box::new(move |p| {
                let mut v = fs::read(p).unwrap();
                v[padding as usize] = b'x';
                fs::write(p, v).unwrap();
            }),
        ),
        ("a PAX comment", Box::new(|p| insert_pax(p, "./a.txt", &[("comment", b"hi")]))),
        ("a PAX path equal to the name", Box::new(|p| insert_pax(p, "./a.txt", &[("path", b"./a.txt")]))),
        ("a user.* xattr", Box::new(|p| insert_pax(p, "./a.txt", &[("SCHILY.xattr.user.x", b"1")]))),
        ("a trusted.* xattr on the root", Box::new(|p| insert_pax(p, "./", &[("SCHILY.xattr.trusted.x", b"1")]))),
        ("a truncated end block", Box::new(|p| fs::write(p, &fs::read(p).unwrap()[..pristine.len() - 512]).unwrap())),
    ];
    for (i, (what, tamper)) in cases.iter().enumerate() {
        fs::write(&stored, &pristine).unwrap();
        tamper(&stored);
        assert_ne!(fs::read(&stored).unwrap(), pristine, "{what}: nothing changed");
        if *what != "a truncated end block" {
            assert_eq!(hash_path(&stored, &Filters::keep_all(), false).unwrap().0, id, "{what}: the tree changed");
        }
        let out = t.path().join(format!("out-{i}"));
        fs::create_dir(&out).unwrap();
        assert_refused(&wh, &id, &stored, &out, what);
    }
    fs::write(&stored, &pristine).unwrap();
    wh.verify(&id).unwrap();
}

/// A stored file that someone else owns could be rewritten in place after
/// the check (the open file sees the change): it is checked and handed out
/// as a private copy; one that we own is used as it is.
#[test]
fn a_ware_someone_else_owns_is_used_through_a_private_copy() {
    if !require_root() {
        return;
    }
    let t = tmp();
    let (_, wh, id) = packed(&t, |_| {});
    let stored = wh.ware_path(&id);
    let pristine = fs::read(&stored).unwrap();
    let ino = fs::metadata(&stored).unwrap().ino();
    assert_eq!(wh.open_verified(&id).unwrap().metadata().unwrap().ino(), ino);

    chown(&stored, 4242, 4242);
    let mut file = wh.open_verified(&id).unwrap();
    assert_ne!(file.metadata().unwrap().ino(), ino);
    // Its owner changes it after the check: what was checked is handed out.
    flip(&stored, offset_of(&pristine, b"a dot txt"));
    let mut got = Vec::new();
    file.read_to_end(&mut got).unwrap();
    assert!(got == pristine, "the file handed out is not the one checked");
    assert!(matches!(wh.open_verified(&id), Err(WareError::HashMismatch { .. })));
}

/// A tar's PAX records are split on newlines by the tar reader the unpacker
/// uses, so a name that needs one (over 100 bytes) cannot hold a newline in
/// a ware; shorter names with newlines are plain header fields and round trip.
#[test]
fn newlines_in_names_round_trip_unless_they_need_a_pax_record() {
    if !require_root() {
        return;
    }
    let t = tmp();
    let (src, wh, id) = packed(&t, |src| fs::write(src.join("two\nlines"), "nl").unwrap());
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    wh.unpack(&id, &out).unwrap();
    assert_eq!(fs::read(out.join("two\nlines")).unwrap(), b"nl");

    fs::write(src.join(format!("{}\nx", "n".repeat(120))), "long").unwrap();
    let err = wh.pack(&src, &Filters::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{}\\nx", "n".repeat(120))) && !msg.contains('\n'), "{msg}");
    assert_eq!(Error::from(err).exit_code(), 121);
}

/// The worked example of docs/ware-hash.md: if this fails, the format
/// changed and the document (and every stored ware id) with it.
#[test]
fn docs_worked_example() {
    let t = tmp();
    let root = t.path().join("example");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("hello.txt"), "hello\n").unwrap();
    fs::write(root.join("bin/run"), "#!/bin/sh\necho hello\n").unwrap();
    symlink("../hello.txt", root.join("bin/hi")).unwrap();
    for (path, mode) in [("", 0o755), ("bin", 0o755), ("hello.txt", 0o644), ("bin/run", 0o755)] {
        fs::set_permissions(root.join(path), fs::Permissions::from_mode(mode)).unwrap();
    }
    let (id, manifest) = hash_path(&root, &Filters::default(), true).unwrap();
    let manifest = String::from_utf8(manifest.unwrap()).unwrap();
    println!("{manifest}{id}");
    assert_eq!(manifest, EXAMPLE_MANIFEST);
    assert_eq!(id.to_string(), EXAMPLE_ID);
}

const EXAMPLE_MANIFEST: &str = "repeatr-ware-v1
0: d 0755 1000 1000 1262304000 -
3:bin d 0755 1000 1000 1262304000 -
6:bin/hi l 0777 1000 1000 1262304000 12:../hello.txt
7:bin/run f 0755 1000 1000 1262304000 21 bfdeaeb08cffb6a36438bcd12dda25417e3cdd36f1e7e482a2849d539225288b
9:hello.txt f 0644 1000 1000 1262304000 6 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
";
const EXAMPLE_ID: &str = "tar:7dbffef49d6640402ace7ecdebc0fc29378dd15e007c31663f151d722bba0009";
