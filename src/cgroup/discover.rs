//! Which hierarchy holds which controller, and where the runner's own
//! cgroup is in each: from /proc/self/cgroup and /proc/self/mountinfo,
//! never from assumed paths. A host is pure cgroup v2 (the usual today), a
//! v1/v2 hybrid (v1 controllers under /sys/fs/cgroup/<name>, an empty
//! cgroup2 at /sys/fs/cgroup/unified), or pure v1.

use std::path::{Path, PathBuf};

use super::error::CgroupError;
use super::files;

/// The v1 controllers a job's cgroup uses: memory, cpu and pids for its
/// limits, devices for its allowlist, freezer to kill it as a whole where
/// there is no cgroup v2 `cgroup.kill`.
pub const V1_USED: [&str; 5] = ["memory", "cpu", "pids", "devices", "freezer"];

/// A v1 hierarchy the runner is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1 {
    /// Its controllers, e.g. `["cpu", "cpuacct"]`.
    pub controllers: Vec<String>,
    /// The runner's own cgroup there, as a directory.
    pub own: PathBuf,
}

impl V1 {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Where the runner is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// The runner's own cgroup2 directory, if cgroup2 is mounted.
    pub v2: Option<PathBuf>,
    /// The v1 hierarchies that hold a controller of [`V1_USED`].
    pub v1: Vec<V1>,
}

impl Hierarchies {
    pub fn v1_with(&self, controller: &str) -> Option<&V1> {
        self.v1.iter().find(|h| h.has(controller))
    }
}

/// Reads this process's hierarchies.
pub fn discover() -> Result<Hierarchies, CgroupError> {
    let read = |p: &'static str| {
        files::read_text(Path::new(p)).map_err(|err| CgroupError::Read { path: PathBuf::from(p), err })
    };
    Ok(parse(&read("/proc/self/cgroup")?, &read("/proc/self/mountinfo")?))
}

/// A cgroup mount: its root inside the hierarchy, where it is mounted,
/// and (v1) its controllers.
struct Mount<'a> {
    root: &'a str,
    point: PathBuf,
    v2: bool,
    controllers: Vec<&'a str>,
}

/// `/proc/self/cgroup` and `/proc/self/mountinfo` as text: pure, so every
/// host shape is a unit test.
pub fn parse(proc_cgroup: &str, mountinfo: &str) -> Hierarchies {
    let mounts: Vec<Mount<'_>> = mountinfo.lines().filter_map(parse_mount).collect();
    let mut out = Hierarchies::default();
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(list), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        if id == "0" && list.is_empty() {
            out.v2 = mounts.iter().filter(|m| m.v2).find_map(|m| own_dir(m, path));
            continue;
        }
        let controllers: Vec<&str> = list.split(',').filter(|c| !c.is_empty()).collect();
        if !controllers.iter().any(|c| V1_USED.contains(c)) {
            continue;
        }
        let own = mounts
            .iter()
            .filter(|m| !m.v2 && controllers.iter().all(|c| m.controllers.contains(c)))
            .find_map(|m| own_dir(m, path));
        if let Some(own) = own {
            out.v1.push(V1 { controllers: controllers.iter().map(|c| c.to_string()).collect(), own });
        }
    }
    out
}

/// The directory of the cgroup at `path` (as /proc/self/cgroup names it)
/// under mount `m`, if the mount reaches it.
fn own_dir(m: &Mount<'_>, path: &str) -> Option<PathBuf> {
    let rel = if m.root == "/" { Some(path) } else { path.strip_prefix(m.root) }?;
    if !(rel.is_empty() || rel.starts_with('/')) {
        return None;
    }
    let rel = rel.trim_start_matches('/');
    // A cgroup path never holds `..`; one that did would lead out of the mount.
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if rel.is_empty() { m.point.clone() } else { m.point.join(rel) })
}

/// One mountinfo line, if it is a cgroup mount.
fn parse_mount(line: &str) -> Option<Mount<'_>> {
    let (head, tail) = line.split_once(" - ")?;
    let head: Vec<&str> = head.split(' ').collect();
    let mut tail = tail.split(' ');
    let fstype = tail.next()?;
    let _source = tail.next()?;
    let super_opts = tail.next().unwrap_or("");
    let (root, point) = (*head.get(3)?, *head.get(4)?);
    let v2 = match fstype {
        "cgroup2" => true,
        "cgroup" => false,
        _ => return None,
    };
    let controllers = if v2 { Vec::new() } else { super_opts.split(',').collect() };
    Some(Mount { root, point: unescape(point), v2, controllers })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(o) => {
                out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Where the cgroup hierarchies a job uses are mounted (cgroup2, and v1
/// mounts holding a controller of [`V1_USED`]): where `repeatr gc` looks.
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(parse_mount)
        .filter(|m| m.root == "/" && (m.v2 || m.controllers.iter().any(|c| V1_USED.contains(c))))
        .map(|m| m.point)
        .collect();
    points.sort();
    points.dedup();
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n\
        4:memory:/process_api/1668e6\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_hybrid_host() {
        let h = parse(HYBRID_CGROUP, HYBRID_MOUNTS);
        assert_eq!(h.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(h.v1_with("memory").unwrap().own, Path::new("/sys/fs/cgroup/memory/process_api/1668e6"));
        assert_eq!(h.v1_with("cpu").unwrap().own, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(h.v1_with("freezer").unwrap().own, Path::new("/sys/fs/cgroup/freezer"));
        // cpuset, blkio, cpuacct and the named systemd hierarchy are not used.
        assert_eq!(h.v1.len(), 5);
        assert!(h.v1_with("cpuacct").is_none());
    }

    #[test]
    fn a_pure_v2_host_under_systemd() {
        let h = parse(
            "0::/user.slice/user-0.slice/session-3.scope\n",
            "25 20 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        assert_eq!(h.v2, Some(PathBuf::from("/sys/fs/cgroup/user.slice/user-0.slice/session-3.scope")));
        assert!(h.v1.is_empty());
    }

    #[test]
    fn a_v1_host_with_joined_controllers_and_a_mount_of_a_subtree() {
        let h = parse(
            "4:cpu,cpuacct:/slurm/job_7\n3:memory:/slurm/job_7/step_0\n",
            "1 0 0:1 / /c/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             2 0 0:2 /slurm /c/mem\\040x rw - cgroup cgroup rw,memory\n",
        );
        assert_eq!(h.v1_with("cpu").unwrap().own, Path::new("/c/cpu,cpuacct/slurm/job_7"));
        assert_eq!(h.v1_with("memory").unwrap().own, Path::new("/c/mem x/job_7/step_0"));
        assert_eq!(h.v2, None);
    }

    #[test]
    fn a_cgroup_the_mount_does_not_reach_is_not_used() {
        let h = parse("3:memory:/other\n", "2 0 0:2 /slurm /c/mem rw - cgroup cgroup rw,memory\n");
        assert!(h.v1.is_empty());
        let h = parse("3:memory:/slurmx\n", "2 0 0:2 /slurm /c/mem rw - cgroup cgroup rw,memory\n");
        assert!(h.v1.is_empty());
    }
}
