//! The state dir is root's alone (issue 9 item 5). A local user who can
//! create the state dir first can plant symlinks (`slots/B/.0.json.tmp`,
//! `state.gen`, `state.lock`) through which a root runner would overwrite
//! and create root-owned files elsewhere. These tests do what the red team
//! did, as root on the real kernel, with uid 65534 as the other user:
//! repeatr must refuse, in one line naming the path, and touch nothing.

mod common;

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use repeatr::state::{LeaseRequest, StateDir, StateError};

const NOBODY: u32 = 65534;
const BRIDGE: &str = "B";

/// A temp dir that uid 65534 can reach, with a world-writable sticky
/// `public/` (as /tmp is), a root-owned victim file, and the path of a
/// file that must never come to exist.
struct Scene {
    tmp: tempfile::TempDir,
    public: PathBuf,
    victim: PathBuf,
    absent: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let tmp = tempfile::Builder::new().prefix("rpt-statedir-").tempdir().unwrap();
        chmod(tmp.path(), 0o755);
        let public = tmp.path().join("public");
        fs::create_dir(&public).unwrap();
        chmod(&public, 0o1777);
        let victim = tmp.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        chmod(&victim, 0o644);
        let absent = tmp.path().join("created-by-root");
        Scene { tmp, public, victim, absent }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A directory `name`, root's, 0700: what a state dir should be.
    fn root_dir(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        dir
    }

    /// The victim is as it was and nothing was created at `absent`.
    fn assert_untouched(&self) {
        assert_eq!(fs::read_to_string(&self.victim).unwrap(), "precious\n", "the victim was overwritten");
        let m = fs::metadata(&self.victim).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.nlink()), (0o644, 0, 1), "the victim was changed");
        assert!(fs::symlink_metadata(&self.absent).is_err(), "root created {}", self.absent.display());
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `script` as uid/gid 65534, the local user of the attack.
fn as_nobody(script: &str) {
    let status = Command::new("/bin/sh").args(["-c", script]).uid(NOBODY).gid(NOBODY).status().unwrap();
    assert!(status.success(), "as nobody: {script}");
}

/// What the red team planted, as uid 65534, before root's first run: the
/// state dir itself, and links at the names root writes.
fn plant(state: &Path, s: &Scene) {
    let (st, v, a) = (state.display(), s.victim.display(), s.absent.display());
    as_nobody(&format!(
        "mkdir -p {st}/slots/{BRIDGE} && ln -s {v} {st}/slots/{BRIDGE}/.0.json.tmp && ln -s {v} {st}/state.gen \
         && ln -s {a} {st}/state.lock && ln -s {v} {st}/state.db-wal && chmod -R a+rwx {st}"
    ));
}

fn req(job: &str) -> LeaseRequest {
    LeaseRequest {
        job: job.to_string(),
        bridge: BRIDGE.to_string(),
        subnet: "198.18.40.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(198, 18, 40, 1),
        ip: None,
        command: format!("test {job}"),
        named: true,
        pid: std::process::id(),
        slots_per_bridge: repeatr::state::PORTS_PER_BRIDGE,
    }
}

/// The refusal: an `Unsafe` error whose one-line message names `path` and
/// contains every piece of `wants`.
fn assert_refused(result: Result<StateDir, StateError>, path: &Path, wants: &[&str]) {
    let e = result.expect_err("an unsafe state dir was accepted");
    assert!(matches!(e, StateError::Unsafe { .. }), "{e:?}");
    assert_refusal_text(&e.to_string(), path, wants);
}

fn assert_refusal_text(msg: &str, path: &Path, wants: &[&str]) {
    let msg = msg.trim_end();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(msg.contains(&format!("{} ", path.display())), "does not name {}: {msg}", path.display());
    for want in wants {
        assert!(msg.contains(want), "no {want:?} in: {msg}");
    }
}

fn repeatr(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repeatr"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env("REPEATR_CONFIG", "/nonexistent/repeatr-test.toml")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn run_true(state: &Path, rootfs: &Rootfs) -> Output {
    let root = rootfs.path().to_str().unwrap();
    repeatr(state, &["run", "--net", "none", "--rootfs", root, "--", "/bin/true"])
}

// ---- the attack ------------------------------------------------------------

#[test]
fn a_state_dir_planted_by_another_user_is_refused_and_nothing_is_followed() {
    if !require_root() {
        return;
    }
    let s = Scene::new();
    let state = s.public.join("state");
    plant(&state, &s);
    let before = manifest(&state);
    let rootfs = Rootfs::busybox();

    let out = run_true(&state, &rootfs);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert_refusal_text(&stderr(&out), &state, &["owned by uid 65534", "chown root:root", "--state-dir"]);
    for args in [&["leases"][..], &["gc"], &["gc", "--rebuild"]] {
        let out = repeatr(&state, args);
        assert_eq!(code(&out), 125, "{args:?}: {}", stderr(&out));
        assert_refusal_text(&stderr(&out), &state, &["owned by uid 65534"]);
    }
    assert_refused(StateDir::open(&state), &state, &["owned by uid 65534"]);
    assert!(StateDir::rebuild(&state).is_err());

    s.assert_untouched();
    assert_eq!(manifest(&state), before, "repeatr changed the planted state dir");
}

/// The same plant, in a state dir the admin then gave to root without
/// `-R`: the links are still there, and still never followed. A link at
/// a name repeatr owns is refused; at a temp file's name it is removed.
#[test]
fn links_left_in_a_root_state_dir_are_refused_or_removed_never_followed() {
    if !require_root() {
        return;
    }
    let s = Scene::new();
    let state = s.public.join("state");
    plant(&state, &s);
    for dir in [state.clone(), state.join("slots"), state.join("slots").join(BRIDGE)] {
        std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
        chmod(&dir, 0o700);
    }

    assert_refused(StateDir::open(&state), &state.join("state.gen"), &["state file", "is a symlink"]);
    fs::remove_file(state.join("state.gen")).unwrap();
    assert_refused(StateDir::open(&state), &state.join("state.lock"), &["is a symlink"]);
    fs::remove_file(state.join("state.lock")).unwrap();
    assert_refused(StateDir::open(&state), &state.join("state.db-wal"), &["is a symlink"]);
    fs::remove_file(state.join("state.db-wal")).unwrap();
    s.assert_untouched();

    // The stale temp file's name: unlinked, then created O_EXCL.
    let dir = StateDir::open(&state).unwrap();
    let lease = dir.acquire(&req("after-cleanup")).unwrap();
    s.assert_untouched();
    let bridge = state.join("slots").join(BRIDGE);
    assert!(fs::symlink_metadata(bridge.join(".0.json.tmp")).is_err());
    let sidecar = fs::symlink_metadata(bridge.join("0.json")).unwrap();
    assert!(sidecar.is_file() && sidecar.mode() & 0o777 == 0o600, "{sidecar:?}");
    dir.release(lease).unwrap();
}

#[test]
fn a_link_at_a_slot_lock_or_a_subdir_is_refused() {
    if !require_root() {
        return;
    }
    let s = Scene::new();
    let state = s.path("state");
    let dir = StateDir::open(&state).unwrap();
    let bridge = state.join("slots").join(BRIDGE);
    fs::create_dir(&bridge).unwrap();
    symlink(&s.absent, bridge.join("0.lock")).unwrap();
    let e = dir.acquire(&req("j")).unwrap_err();
    assert!(matches!(e, StateError::Unsafe { .. }), "{e}");
    assert_refusal_text(&e.to_string(), &bridge.join("0.lock"), &["is a symlink"]);
    drop(dir);
    s.assert_untouched();

    // slots/ itself a link to a dir of the other user's.
    fs::remove_dir_all(state.join("slots")).unwrap();
    let elsewhere = s.public.join("elsewhere");
    as_nobody(&format!("mkdir -p {}/{BRIDGE}", elsewhere.display()));
    symlink(&elsewhere, state.join("slots")).unwrap();
    assert_refused(StateDir::open(&state), &state.join("slots"), &["is a symlink, not a directory"]);
    assert!(fs::read_dir(elsewhere.join(BRIDGE)).unwrap().next().is_none(), "root wrote into the link's target");
}

#[test]
fn a_hard_link_at_state_gen_is_refused() {
    if !require_root() {
        return;
    }
    let s = Scene::new();
    let state = s.path("state");
    drop(StateDir::open(&state).unwrap());
    fs::remove_file(state.join("state.gen")).ok();
    // Same filesystem as the victim: what fs.protected_hardlinks only stops
    // for files the linker does not own.
    fs::hard_link(&s.victim, state.join("state.gen")).unwrap();
    assert_refused(StateDir::open(&state), &state.join("state.gen"), &["has 2 hard links"]);
    assert_eq!(fs::read_to_string(&s.victim).unwrap(), "precious\n");
}

// ---- whose dir, which mode -------------------------------------------------

#[test]
fn a_state_dir_writable_by_group_or_others_is_refused() {
    if !require_root() {
        return;
    }
    let s = Scene::new();
    for mode in [0o777, 0o770, 0o1777, 0o702] {
        let state = s.path(&format!("state-{mode:o}"));
        fs::create_dir(&state).unwrap();
        chmod(&state, mode);
        assert_refused(StateDir::open(&state), &state, &["writable by group or others", "chmod 700"]);
        assert!(fs::read_dir(&state).unwrap().next().is_none(), "mode {mode:o}: something was created");
    }
    let rootfs = Rootfs::busybox();
    let out = run_true(&s.path("state-777"), &rootfs);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert_refusal_text(&stderr(&out), &s.path("state-777"), &["writable by group or others"]);
}

#[test]
fn an_existing_root_state_dir_is_accepted() {
    if !require_root() {
        return;
    }
    let s = Scene::new();
    for mode in [0o700, 0o755] {
        let state = s.path(&format!("state-{mode:o}"));
        fs::create_dir(&state).unwrap();
        chmod(&state, mode);
        let dir = StateDir::open(&state).unwrap();
        let lease = dir.acquire(&req("ok")).unwrap();
        dir.release(lease).unwrap();
        assert_eq!(fs::metadata(&state).unwrap().mode() & 0o7777, mode, "the dir's mode is left alone");
    }
    // Created by repeatr: 0700, and so is every dir it makes on the way.
    let deep = s.path("new/deeper/state");
    drop(StateDir::open(&deep).unwrap());
    for d in [s.path("new"), s.path("new/deeper"), deep.clone(), deep.join("slots")] {
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o7777, 0o700, "{}", d.display());
    }
}

#[test]
fn the_database_and_its_wal_and_shm_are_0600() {
    if !require_root() {
        return;
    }
    let s = Scene::new();
    let state = s.path("state");
    let dir = StateDir::open(&state).unwrap();
    let lease = dir.acquire(&req("j")).unwrap();
    for name in ["state.db", "state.db-wal", "state.db-shm", "state.gen", "state.lock"] {
        let m = fs::symlink_metadata(state.join(name)).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o600, 0), "{name}");
    }
    dir.release(lease).unwrap();
    drop(dir);
    // One SQLite made with its default mode is narrowed on the next open.
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        chmod(&state.join(name), 0o644);
    }
    drop(StateDir::open(&state).unwrap());
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        assert_eq!(fs::metadata(state.join(name)).unwrap().mode() & 0o7777, 0o600, "{name}");
    }
}

// ---- the path to it ----------------------------------------------------------

#[test]
fn a_state_dir_behind_a_root_symlink_works() {
    if !require_root() {
        return;
    }
    let s = Scene::new();
    let real = s.root_dir("real");
    // As /var/run -> /run: a root's link in a root's dir, and one in a
    // sticky dir (which nobody else can rename there).
    symlink(&real, s.path("link")).unwrap();
    symlink(&real, s.public.join("root-link")).unwrap();
    for link in [s.path("link"), s.public.join("root-link")] {
        let state = link.join("state");
        let dir = StateDir::open(&state).unwrap();
        assert_eq!(dir.root(), real.join("state"), "the path is resolved once, to the real dir");
        let lease = dir.acquire(&req("linked")).unwrap();
        dir.release(lease).unwrap();
    }
    let rootfs = Rootfs::busybox();
    let out = run_true(&s.path("link").join("state"), &rootfs);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_symlink_of_another_users_on_the_path_is_refused() {
    if !require_root() {
        return;
    }
    let s = Scene::new();
    let real = s.root_dir("real");
    let link = s.public.join("link");
    as_nobody(&format!("ln -s {} {}", real.display(), link.display()));
    assert_refused(StateDir::open(&link.join("state")), &link, &["symlink", "owned by uid 65534"]);
    assert!(fs::read_dir(&real).unwrap().next().is_none(), "something was created through the link");
}

#[test]
fn a_dir_above_that_another_user_could_swap_is_refused() {
    if !require_root() {
        return;
    }
    let s = Scene::new();
    // Owned by the other user: they could rename the state dir away.
    let theirs = s.path("theirs");
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    assert_refused(StateDir::open(&theirs.join("state")), &theirs, &["directory", "owned by uid 65534"]);
    assert!(fs::read_dir(&theirs).unwrap().next().is_none());
    // Root's, but writable by all without the sticky bit.
    let open = s.path("open");
    fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    assert_refused(StateDir::open(&open.join("state")), &open, &["without the sticky bit"]);
    // Sticky (as /tmp): nobody else can rename root's state dir in it.
    let dir = StateDir::open(&s.public.join("state")).unwrap();
    assert_eq!(dir.root(), s.public.join("state"));
}

#[test]
fn a_linked_mnt_or_outputs_is_refused_and_its_target_untouched() {
    if !require_root() {
        return;
    }
    let s = Scene::new();
    let state = s.path("state");
    drop(StateDir::open(&state).unwrap());
    let elsewhere = s.path("elsewhere");
    fs::create_dir(&elsewhere).unwrap();

    symlink(&elsewhere, state.join("mnt")).unwrap();
    let rootfs = Rootfs::busybox();
    let out = run_true(&state, &rootfs);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert_refusal_text(&stderr(&out), &state.join("mnt"), &["is a symlink"]);
    assert!(host_mounts_mentioning(elsewhere.to_str().unwrap()).is_empty());

    // A dead run's outputs, as `gc` would remove them, behind a link.
    fs::write(elsewhere.join("victim.lock"), "").unwrap();
    fs::create_dir(elsewhere.join("victim")).unwrap();
    fs::write(elsewhere.join("victim").join("keep"), "keep").unwrap();
    symlink(&elsewhere, state.join("outputs")).unwrap();
    let out = repeatr(&state, &["gc"]);
    assert_ne!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains("is a symlink"), "{}", stdout(&out));
    assert!(elsewhere.join("victim.lock").exists() && elsewhere.join("victim/keep").exists(), "gc removed them");
}
