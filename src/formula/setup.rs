//! Formula types: what a job consumes (`inputs`), does (`action`) and
//! produces (`outputs`), and the *setup hash* that names it. Running a
//! formula is not here (the launcher does that); where wares are fetched
//! from or saved to is deliberately not part of a formula: identity is not
//! location.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::error::WareError;
use super::filter::Filters;
use super::ware_id::{Digest, WareId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Formula {
    /// Absolute path in the container -> what goes there; placed in path
    /// order (`/` first).
    pub inputs: BTreeMap<String, Input>,
    pub action: Action,
    /// Absolute path in the container -> how to pack it after the job.
    #[serde(default)]
    pub outputs: BTreeMap<String, Output>,
}

/// An input slot: a ware (`tar:<hash>`) or a host mount (`mount:ro:/path`,
/// `mount:rw:/path`), one string in JSON as in the original repeatr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Ware(WareId),
    Mount { host_path: String, writable: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// argv; the first element is an absolute path.
    pub exec: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_cwd")]
    pub cwd: String,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Also accepted as `user` (as the formulas issue spells it).
    #[serde(default, alias = "user")]
    pub userinfo: UserInfo,
    #[serde(default)]
    pub policy: Privileges,
    #[serde(default)]
    pub helpers: Helpers,
    /// `none` (the default: a job that needs no network is more likely to
    /// be reproducible) or `bridge`.
    #[serde(default)]
    pub network: Network,
    /// `memory`, `cpus`, `pids-limit`, as the flags take them. Not part of
    /// the setup hash (never serialized, so not in the canonical form):
    /// a limit does not change what a job that succeeds computes, only
    /// whether it gets to succeed on this host, and a job stopped by one
    /// fails and yields no results to compare.
    #[serde(default, skip_serializing)]
    pub limits: crate::limits::LimitStrings,
    /// `"30s"`, `"2h"`: past this the job is stopped as `run --timeout`
    /// stops one. Not part of the setup hash: it does not change what a
    /// job that finishes computes, only whether it is given the time to.
    #[serde(default, skip_serializing, deserialize_with = "duration_text")]
    pub timeout: Option<Duration>,
}

fn duration_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    crate::duration::parse(&text).map(Some).map_err(serde::de::Error::custom)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    None,
    Bridge,
}

fn default_cwd() -> String {
    "/task".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserInfo {
    pub uid: u32,
    pub gid: u32,
    pub username: String,
    pub homedir: String,
}

impl Default for UserInfo {
    fn default() -> UserInfo {
        UserInfo { uid: 1000, gid: 1000, username: "reuser".into(), homedir: "/home/reuser".into() }
    }
}

/// The capability set the job gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privileges {
    /// No capabilities.
    #[default]
    Routine,
    /// Docker's default set.
    Governor,
    /// Every capability.
    Sysad,
}

/// Conveniences a formula gets unless it switches them off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Helpers {
    /// Create `cwd`, owned by the job user.
    pub make_cwd: bool,
    /// Create the job user's home directory.
    pub make_home: bool,
    /// Make `/tmp` exist with mode 1777.
    pub make_tmp: bool,
    /// Set HOME, USER and PATH when `env` does not.
    pub set_env: bool,
}

impl Default for Helpers {
    fn default() -> Helpers {
        Helpers { make_cwd: true, make_home: true, make_tmp: true, set_env: true }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    #[serde(default = "default_packtype")]
    pub packtype: String,
    #[serde(default)]
    pub filters: Filters,
}

fn default_packtype() -> String {
    WareId::PACKTYPE.into()
}

/// A formula's setup hash (its id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetupHash(pub Digest);

impl fmt::Display for SetupHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// First line of the hashed text: a new canonical form gets a new version.
const SETUP_MAGIC: &[u8] = b"repeatr-formula-v1\n";

impl Formula {
    /// Parses and validates formula JSON.
    pub fn from_json(text: &str) -> Result<Formula, WareError> {
        let formula: Formula = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        formula.validate()?;
        Ok(formula)
    }

    pub fn validate(&self) -> Result<(), WareError> {
        for path in self.inputs.keys().chain(self.outputs.keys()) {
            if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return Err(invalid(format!("input/output path {path:?} must be absolute, without `..`")));
            }
        }
        match self.action.exec.first() {
            None => {
                return Err(invalid("action.exec is empty; give the command to run".into()));
            }
            Some(cmd) if !cmd.starts_with('/') => {
                return Err(invalid(format!("action.exec[0] {cmd:?} must be an absolute path")));
            }
            Some(_) => {}
        }
        if !self.action.cwd.starts_with('/') {
            return Err(invalid(format!("action.cwd {:?} must be absolute", self.action.cwd)));
        }
        for (path, out) in &self.outputs {
            if out.packtype != WareId::PACKTYPE {
                return Err(invalid(format!("output {path:?} has packtype {:?}; only \"tar\" exists", out.packtype)));
            }
        }
        Ok(())
    }

    /// The canonical form: compact JSON of the formula with every default
    /// filled in, object keys in a fixed order (struct fields as declared,
    /// maps sorted by key bytes), serde_json's string escaping. So a formula
    /// that spells a default out and one that leaves it out hash the same.
    pub fn canonical_json(&self) -> Result<Vec<u8>, WareError> {
        // An empty text in its place would give every formula one hash.
        serde_json::to_vec(self).map_err(WareError::Canonical)
    }

    /// SHA-256 of `repeatr-formula-v1\n` + the canonical JSON.
    pub fn setup_hash(&self) -> Result<SetupHash, WareError> {
        let mut sha = Sha256::new();
        sha.update(SETUP_MAGIC);
        sha.update(self.canonical_json()?);
        Ok(SetupHash(Digest(sha.finalize().into())))
    }
}

fn invalid(problem: String) -> WareError {
    WareError::BadFormula { problem }
}

impl FromStr for Input {
    type Err = String;
    fn from_str(s: &str) -> Result<Input, String> {
        if let Some(rest) = s.strip_prefix("mount:") {
            let (mode, path) = rest.split_once(':').unwrap_or(("", rest));
            let writable = match mode {
                "ro" => false,
                "rw" => true,
                _ => {
                    return Err(format!("mount input {s:?}: expected mount:ro:/path or mount:rw:/path"));
                }
            };
            if !path.starts_with('/') {
                return Err(format!("mount input {s:?}: the host path must be absolute"));
            }
            return Ok(Input::Mount { host_path: path.into(), writable });
        }
        s.parse().map(Input::Ware).map_err(|e: WareError| e.to_string())
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Ware(id) => id.fmt(f),
            Input::Mount { host_path, writable } => {
                write!(f, "mount:{}:{host_path}", if *writable { "rw" } else { "ro" })
            }
        }
    }
}

impl Serialize for Input {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Input, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formula::error::WareClass;

    const WARE: &str = "tar:7dbffef49d6640402ace7ecdebc0fc29378dd15e007c31663f151d722bba0009";

    fn minimal() -> String {
        format!(
            r#"{{"inputs":{{"/":"{WARE}","/src":"mount:ro:/home/me/src"}},"action":{{"exec":["/bin/sh","-c","make"]}},"outputs":{{"/out":{{}}}}}}"#
        )
    }

    #[test]
    fn defaults_are_filled_in_and_hash_the_same_as_spelled_out() {
        let f = Formula::from_json(&minimal()).unwrap();
        assert_eq!(f.action.cwd, "/task");
        assert_eq!(f.action.userinfo.uid, 1000);
        assert_eq!(f.outputs["/out"].filters, Filters::default());
        let explicit = String::from_utf8(f.canonical_json().unwrap()).unwrap();
        let g = Formula::from_json(&explicit).unwrap();
        assert_eq!(g, f);
        assert_eq!(g.setup_hash().unwrap(), f.setup_hash().unwrap());
        assert_eq!(f.setup_hash().unwrap().to_string().len(), 64);

        let mut h = f.clone();
        h.action.exec.push("-j4".into());
        assert_ne!(h.setup_hash().unwrap(), f.setup_hash().unwrap());
    }

    #[test]
    fn invalid_formulas_say_why() {
        let cases = [
            (minimal().replace("\"exec\"", "\"exe\""), "unknown field `exe`"),
            (minimal().replace("/bin/sh", "sh"), "absolute path"),
            (minimal().replace("mount:ro:", "mount:xx:"), "mount:ro:/path"),
            (minimal().replace(WARE, "tar:abc"), "64 hex digits"),
            (minimal().replace("\"/out\"", "\"out\""), "must be absolute"),
            (minimal().replace("{}}}", "{\"filters\":{\"uidd\":1}}}}"), "unknown field `uidd`"),
        ];
        for (text, want) in cases {
            let err = Formula::from_json(&text).unwrap_err();
            assert_eq!(err.class(), WareClass::Invalid);
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
    }
}

#[cfg(test)]
mod alias_tests {
    use super::*;

    #[test]
    fn user_is_an_alias_of_userinfo_with_one_setup_hash() {
        let ware = "tar:7dbffef49d6640402ace7ecdebc0fc29378dd15e007c31663f151d722bba0009";
        let json = |key: &str| {
            format!(
                r#"{{"inputs":{{"/":"{ware}"}},"action":{{"exec":["/bin/true"],"{key}":{{"uid":5,"gid":6}},"network":"bridge"}}}}"#
            )
        };
        let a = Formula::from_json(&json("user")).unwrap();
        let b = Formula::from_json(&json("userinfo")).unwrap();
        assert_eq!(a.action.userinfo.uid, 5);
        assert_eq!(a.action.network, Network::Bridge);
        assert_eq!(a.setup_hash().unwrap(), b.setup_hash().unwrap());
    }
}
