//! Whose links these are. Every bridge and host veth repeatr makes carries
//! a marker in its alias (IFLA_IFALIAS), `repeatr:<id> <state dir>`, and a
//! runner or `gc` changes or deletes only links that carry its own state
//! dir's id: two state dirs configured with one bridge would otherwise
//! hand one address to two jobs and delete each other's veths.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::UNIX_EPOCH;

use sha2::{Digest as _, Sha256};

/// The alias's first bytes on every link repeatr makes.
const TAG: &str = "repeatr:";

/// IFLA_IFALIAS holds at most IFALIASZ - 1 = 255 bytes, and the kernel
/// counts the NUL that netlink-packet-route appends to a string attribute.
const ALIAS_MAX: usize = 254;

/// The state dir a runner or `gc` works for, as its links are marked: an
/// id that names the directory itself, and its path for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkOwner {
    id: String,
    label: String,
}

impl LinkOwner {
    /// The owner that the directory `dir` is. The id hashes the directory's
    /// device, inode and birth time: one statx, no file to keep or race to
    /// create. It names this directory and no other: a state dir deleted and
    /// made again at the same path (ext4 hands the freed inode out again,
    /// the birth time differs) or another one at the same path in another
    /// mount namespace (systemd's PrivateTmp, a container's /run) gets
    /// another id, while the jobs the first one leased may still run; the
    /// same directory reached by another path (a bind mount, a symlink) keeps
    /// its id. A reboot empties /run and removes the bridges with it, so a
    /// changed id there never meets its old links. A filesystem without
    /// birth times leaves device and inode, which a re-made dir may reuse.
    pub fn of_dir(dir: &Path) -> io::Result<LinkOwner> {
        let m = std::fs::metadata(dir)?;
        let born = m.created().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        let digest = Sha256::digest(format!("repeatr state dir {}:{}:{born}", m.dev(), m.ino()));
        // 64 bits: collisions among the few state dirs of one host are out
        // of reach, and the alias stays readable.
        let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let label = truncate(&dir.display().to_string(), ALIAS_MAX - TAG.len() - id.len() - 1).to_string();
        Ok(LinkOwner { id, label })
    }

    /// The state dir's id (16 hex digits), which also names its jobs' cgroups.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The state dir's path, as written into its links' aliases.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The alias that marks a link as this state dir's.
    pub fn alias(&self) -> String {
        format!("{TAG}{} {}", self.id, self.label)
    }

    /// Whether a link with this alias is ours; if not, whose it is.
    pub fn check(&self, alias: Option<&str>) -> Result<(), OtherOwner> {
        let Some((id, label)) = alias.and_then(parse) else {
            return Err(OtherOwner::NotRepeatr { alias: alias.filter(|a| !a.is_empty()).map(str::to_string) });
        };
        if id == self.id {
            Ok(())
        } else if label == self.label {
            Err(OtherOwner::SamePath { label: label.to_string() })
        } else {
            Err(OtherOwner::StateDir { label: label.to_string() })
        }
    }
}

/// `repeatr:<id> <label>` as (id, label); the label may be empty.
fn parse(alias: &str) -> Option<(&str, &str)> {
    let rest = alias.strip_prefix(TAG)?;
    let (id, label) = rest.split_once(' ').unwrap_or((rest, ""));
    (!id.is_empty()).then_some((id, label))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Who owns a link that is not ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtherOwner {
    /// Another state dir, at `label`.
    StateDir { label: String },
    /// Another state dir at our own path: ours deleted and made again while
    /// the link lived, or one in another mount namespace.
    SamePath { label: String },
    /// No repeatr marker at all (made by hand or by another tool).
    NotRepeatr { alias: Option<String> },
}

impl fmt::Display for OtherOwner {
    /// The link "{self}": what `gc` prints for a link it leaves alone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OtherOwner::StateDir { label } => write!(f, "belongs to the state dir {label}"),
            OtherOwner::SamePath { label } => write!(
                f,
                "belongs to another state dir at {label} (one deleted and made again since, or one in another mount namespace)"
            ),
            OtherOwner::NotRepeatr { alias: None } => f.write_str("was not made by repeatr (it has no alias)"),
            OtherOwner::NotRepeatr { alias: Some(a) } => write!(f, "was not made by repeatr (its alias is {a:?})"),
        }
    }
}

/// A link set-up refused to touch: what it is, whose, and what to do.
#[derive(Debug)]
pub struct Foreign {
    pub name: String,
    pub role: Role,
    pub owner: OtherOwner,
    /// Our state dir's label.
    pub ours: String,
}

/// What the runner wanted the refused link for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The configured bridge.
    Bridge,
    /// The name its lease gives the job's host veth.
    Veth,
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Foreign { name, role, owner, ours } = self;
        match (role, owner) {
            (Role::Bridge, OtherOwner::StateDir { label }) => write!(
                f,
                "bridge {name} {owner}, not to {ours}: run with --state-dir {label}, or give {ours} a network.bridge of \
                 its own (if {label} is gone, delete the bridge: ip link del {name})"
            ),
            (Role::Bridge, OtherOwner::SamePath { .. }) => write!(
                f,
                "bridge {name} {owner}, not to this one: give this state dir a network.bridge of its own, or once no \
                 job of the other runs (ip link show master {name}), delete the bridge: ip link del {name}"
            ),
            (Role::Bridge, OtherOwner::NotRepeatr { .. }) => write!(
                f,
                "bridge {name} {owner}, so it is left alone: give repeatr a network.bridge of its own, or delete this \
                 one (ip link del {name}) for repeatr to make it"
            ),
            (Role::Veth, OtherOwner::StateDir { .. } | OtherOwner::SamePath { .. }) => write!(
                f,
                "host veth {name} {owner}, not to {ours}, so it is left alone: give each state dir a network.bridge \
                 of its own"
            ),
            (Role::Veth, OtherOwner::NotRepeatr { .. }) => write!(
                f,
                "a link named {name} is in the way of the job's host veth and {owner}, so it is left alone: rename or \
                 delete it (ip link del {name})"
            ),
        }
    }
}

/// The owner of a temp dir, kept for the test's life.
#[cfg(test)]
pub(crate) fn test_owner() -> (tempfile::TempDir, LinkOwner) {
    let dir = tempfile::tempdir().unwrap();
    let owner = LinkOwner::of_dir(dir.path()).unwrap();
    (dir, owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(dir: &Path) -> LinkOwner {
        LinkOwner::of_dir(dir).unwrap()
    }

    #[test]
    fn a_dir_knows_its_own_links_only() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (oa, ob) = (owner(a.path()), owner(b.path()));
        assert_eq!(oa, owner(a.path()), "the same dir, the same owner");
        assert_eq!(oa.id.len(), 16);
        assert!(oa.check(Some(&oa.alias())).is_ok());
        let label = b.path().display().to_string();
        assert_eq!(oa.check(Some(&ob.alias())), Err(OtherOwner::StateDir { label }));
        assert_eq!(oa.check(None), Err(OtherOwner::NotRepeatr { alias: None }));
        assert_eq!(oa.check(Some("")), Err(OtherOwner::NotRepeatr { alias: None }));
        assert_eq!(oa.check(Some("uplink")), Err(OtherOwner::NotRepeatr { alias: Some("uplink".into()) }));
        assert!(oa.check(Some("repeatr:")).is_err());
    }

    /// A state dir deleted and made again at its path is another owner
    /// (the jobs of the first may still run), and says so.
    #[test]
    fn a_dir_made_again_at_the_same_path_is_another_owner() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        let first = owner(&dir);
        std::fs::remove_dir(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let second = owner(&dir);
        assert_eq!(second.check(Some(&first.alias())), Err(OtherOwner::SamePath { label: first.label.clone() }));
        let e = Foreign {
            name: "rb0".into(),
            role: Role::Bridge,
            owner: OtherOwner::SamePath { label: first.label.clone() },
            ours: second.label.clone(),
        };
        let s = e.to_string();
        assert!(s.contains("ip link del rb0") && s.contains("deleted and made again"), "{s}");
    }

    #[test]
    fn aliases_fit_the_kernel_limit() {
        let parent = tempfile::tempdir().unwrap();
        let mut dir = parent.path().to_path_buf();
        for _ in 0..4 {
            dir.push(format!("{}é", "d".repeat(60)));
        }
        std::fs::create_dir_all(&dir).unwrap();
        let o = owner(&dir);
        assert!(o.alias().len() <= ALIAS_MAX, "{}", o.alias().len());
        assert!(o.check(Some(&o.alias())).is_ok());
        assert_eq!(truncate("aé", 2), "a");
    }

    #[test]
    fn refusals_name_the_owner_and_the_fix_in_one_line() {
        let refusal = |role, owner| Foreign { name: "rb0".into(), role, owner, ours: "/run/b".into() };
        let other = OtherOwner::StateDir { label: "/run/a".into() };
        let s = refusal(Role::Bridge, other.clone()).to_string();
        assert!(s.contains("/run/a") && s.contains("--state-dir /run/a") && s.contains("network.bridge"), "{s}");
        let s = refusal(Role::Bridge, OtherOwner::NotRepeatr { alias: None }).to_string();
        assert!(s.contains("not made by repeatr") && s.contains("ip link del rb0"), "{s}");
        let s = refusal(Role::Veth, other).to_string();
        assert!(s.contains("host veth rb0") && s.contains("/run/a") && s.contains("left alone"), "{s}");
        let s = refusal(Role::Veth, OtherOwner::NotRepeatr { alias: Some("mine".into()) }).to_string();
        assert!(s.contains("\"mine\"") && s.contains("ip link del rb0"), "{s}");
        for role in [Role::Bridge, Role::Veth] {
            assert!(!refusal(role, OtherOwner::SamePath { label: "/run/b".into() }).to_string().contains('\n'));
        }
    }
}
