//! Filters: what packing does to ownership, times and special bits so that
//! a tree hashes the same on every machine. Defaults flatten: uid and gid
//! 1000, every mtime 2010-01-01T00:00:00Z (deliberately not the epoch, which
//! tools treat as "unset"), and setid bits or device files are refused.
//!
//! JSON (unknown keys are errors): `{"uid": 1000 | "keep", "gid": ...,
//! "mtime": "2010-01-01T00:00:00Z" | "@1262304000" | "keep",
//! "sticky": "keep", "setid": "reject", "dev": "reject"}`, every key
//! optional; a policy is `keep`, `ignore` or `reject`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::WareError;
use super::tree::{Entry, Kind};
use crate::civil_time::{format_utc, parse_utc};

/// 2010-01-01T00:00:00Z.
pub const DEFAULT_MTIME: i64 = 1_262_304_000;
pub const DEFAULT_ID: u32 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filters {
    pub uid: IdFilter,
    pub gid: IdFilter,
    pub mtime: MtimeFilter,
    /// The sticky bit (o+t): `ignore` clears it.
    pub sticky: Policy,
    /// setuid and setgid bits: `ignore` clears them.
    pub setid: Policy,
    /// Character and block devices: `ignore` leaves them out of the ware.
    pub dev: Policy,
}

impl Default for Filters {
    fn default() -> Filters {
        Filters {
            uid: IdFilter::Set(DEFAULT_ID),
            gid: IdFilter::Set(DEFAULT_ID),
            mtime: MtimeFilter::Set(DEFAULT_MTIME),
            sticky: Policy::Keep,
            setid: Policy::Reject,
            dev: Policy::Reject,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Keep,
    Ignore,
    Reject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawValue", into = "RawValue")]
pub enum IdFilter {
    Keep,
    Set(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawValue", into = "RawValue")]
pub enum MtimeFilter {
    Keep,
    /// Seconds since the epoch.
    Set(i64),
}

/// A number or a string: what the value of a filter key looks like in JSON.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawValue {
    Num(i64),
    Str(String),
}

impl TryFrom<RawValue> for IdFilter {
    type Error = String;
    fn try_from(raw: RawValue) -> Result<IdFilter, String> {
        match raw {
            RawValue::Str(s) if s == "keep" => Ok(IdFilter::Keep),
            RawValue::Num(n) => {
                u32::try_from(n).map(IdFilter::Set).map_err(|_| format!("id {n} is not between 0 and 4294967295"))
            }
            RawValue::Str(s) => Err(format!("expected a numeric id or \"keep\", got {s:?}")),
        }
    }
}

impl From<IdFilter> for RawValue {
    fn from(f: IdFilter) -> RawValue {
        match f {
            IdFilter::Keep => RawValue::Str("keep".into()),
            IdFilter::Set(id) => RawValue::Num(id.into()),
        }
    }
}

impl TryFrom<RawValue> for MtimeFilter {
    type Error = String;
    fn try_from(raw: RawValue) -> Result<MtimeFilter, String> {
        let bad =
            |s: &str| format!("expected \"keep\", a UTC time like \"2010-01-01T00:00:00Z\" or \"@SECONDS\", got {s:?}");
        match raw {
            RawValue::Num(n) => Err(bad(&n.to_string())),
            RawValue::Str(s) if s == "keep" => Ok(MtimeFilter::Keep),
            RawValue::Str(s) => match s.strip_prefix('@') {
                Some(secs) => secs.parse().map(MtimeFilter::Set).map_err(|_| bad(&s)),
                None => parse_utc(&s).map(MtimeFilter::Set).ok_or_else(|| bad(&s)),
            },
        }
    }
}

impl From<MtimeFilter> for RawValue {
    fn from(f: MtimeFilter) -> RawValue {
        match f {
            MtimeFilter::Keep => RawValue::Str("keep".into()),
            MtimeFilter::Set(secs) => RawValue::Str(format_utc(secs)),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Keep => "keep",
            Policy::Ignore => "ignore",
            Policy::Reject => "reject",
        })
    }
}

impl Filters {
    /// Changes nothing and refuses nothing: for re-hashing a stored ware,
    /// whose metadata was filtered when it was packed.
    pub fn keep_all() -> Filters {
        Filters {
            uid: IdFilter::Keep,
            gid: IdFilter::Keep,
            mtime: MtimeFilter::Keep,
            sticky: Policy::Keep,
            setid: Policy::Keep,
            dev: Policy::Keep,
        }
    }

    /// Parses `KEY=VALUE` command-line filters over the defaults, through
    /// the same JSON rules as a formula (so both accept the same things).
    pub fn from_args<S: AsRef<str>>(args: &[S]) -> Result<Filters, WareError> {
        let mut map = serde_json::Map::new();
        let mut preset = serde_json::Map::new();
        for arg in args {
            let arg = arg.as_ref();
            let bad = |problem: String| WareError::BadFilter { spec: format!("`{arg}`"), problem };
            let (key, value) = arg.split_once('=').ok_or_else(|| bad("expected KEY=VALUE, e.g. uid=keep".into()))?;
            if key == "preset" {
                if value != "rootfs" || !preset.is_empty() {
                    return Err(bad("the one preset is `rootfs`, given once (--filter preset=rootfs)".into()));
                }
                preset.extend(ROOTFS_PRESET.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))));
                continue;
            }
            let value = match value.parse::<i64>() {
                Ok(n) => serde_json::Value::from(n),
                Err(_) => serde_json::Value::from(value),
            };
            if map.insert(key.to_string(), value).is_some() {
                return Err(bad(format!("`{key}` is given twice")));
            }
        }
        // A key given on its own overrides the preset's.
        preset.extend(map);
        serde_json::from_value(serde_json::Value::Object(preset))
            .map_err(|e| WareError::BadFilter { spec: "given with --filter".into(), problem: e.to_string() })
    }

    /// Applies the filters to one entry; `false`: leave the entry out. An
    /// entry a filter refuses goes to `refused` (and is kept as it is), so
    /// that one pass finds every problem of a tree.
    pub fn apply(&self, entry: &mut Entry, refused: &mut Refused) -> bool {
        if let IdFilter::Set(uid) = self.uid {
            if entry.uid != uid {
                refused.owners_changed += 1;
            }
            entry.uid = uid;
        }
        if let IdFilter::Set(gid) = self.gid {
            entry.gid = gid;
        }
        if let MtimeFilter::Set(mtime) = self.mtime {
            entry.mtime = mtime;
        }
        if matches!(entry.kind, Kind::CharDev { .. } | Kind::BlockDev { .. }) {
            match self.dev {
                Policy::Keep => {}
                Policy::Ignore => return false,
                Policy::Reject => refused.add(entry, "device files", "dev"),
            }
        }
        for (bits, what, filter, policy) in
            [(0o6000, "setuid/setgid entries", "setid", self.setid), (0o1000, "sticky entries", "sticky", self.sticky)]
        {
            if entry.mode & bits != 0 {
                match policy {
                    Policy::Keep => {}
                    Policy::Ignore => entry.mode &= !bits,
                    Policy::Reject => refused.add(entry, what, filter),
                }
            }
        }
        true
    }
}

/// `--filter preset=rootfs`: a whole root filesystem as it is, owners,
/// times, setuid/setgid and sticky bits kept. Device files are left out:
/// a job gets its own /dev, and a root is mounted `nodev` (and unpacked
/// without device nodes) anyway, so they could never be opened.
pub const ROOTFS_PRESET: [(&str, &str); 6] =
    [("uid", "keep"), ("gid", "keep"), ("mtime", "keep"), ("setid", "keep"), ("sticky", "keep"), ("dev", "ignore")];

/// How many paths a refusal names per filter.
const SHOWN: usize = 3;

/// What the filters refused in one tree, gathered so that one pack
/// reports all of it; and how many owners the uid filter changed.
#[derive(Debug, Default)]
pub struct Refused {
    /// filter -> (what it refuses, how many, the first few paths).
    found: std::collections::BTreeMap<&'static str, (&'static str, u64, Vec<String>)>,
    /// Entries whose uid the uid filter changed.
    pub owners_changed: u64,
}

impl Refused {
    fn add(&mut self, entry: &Entry, what: &'static str, filter: &'static str) {
        let (_, count, paths) = self.found.entry(filter).or_insert((what, 0, Vec::new()));
        *count += 1;
        if paths.len() < SHOWN {
            paths.push(entry.display_path());
        }
    }

    /// `Rejected`, naming every filter that refused something, if one did.
    pub fn check(&self) -> Result<(), WareError> {
        if self.found.is_empty() {
            return Ok(());
        }
        let count = self.found.values().map(|(_, n, _)| n).sum();
        let problems: Vec<String> = self
            .found
            .iter()
            .map(|(filter, (what, n, paths))| {
                let shown: Vec<String> = paths.iter().map(|p| format!("`{p}`")).collect();
                let more = if *n > paths.len() as u64 { ", ..." } else { "" };
                format!("{what} {n} ({filter}=reject: {}{more})", shown.join(", "))
            })
            .collect();
        let filters: Vec<&'static str> = self.found.keys().copied().collect();
        let flags: Vec<String> = filters.iter().map(|f| format!("--filter {f}=keep|ignore")).collect();
        Err(WareError::Rejected { count, problems: problems.join(", "), flags: flags.join(" "), filters })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mtime_is_2010() {
        assert_eq!(parse_utc("2010-01-01T00:00:00Z"), Some(DEFAULT_MTIME));
        assert_eq!(format_utc(DEFAULT_MTIME), "2010-01-01T00:00:00Z");
    }

    #[test]
    fn json_defaults_and_errors() {
        let f: Filters = serde_json::from_str("{}").unwrap();
        assert_eq!(f, Filters::default());
        let f: Filters =
            serde_json::from_str(r#"{"uid":"keep","gid":0,"mtime":"@5","setid":"keep","dev":"ignore"}"#).unwrap();
        assert_eq!(f.uid, IdFilter::Keep);
        assert_eq!(f.gid, IdFilter::Set(0));
        assert_eq!(f.mtime, MtimeFilter::Set(5));
        assert_eq!(f.dev, Policy::Ignore);
        let json = serde_json::to_string(&Filters::default()).unwrap();
        assert_eq!(
            json,
            r#"{"uid":1000,"gid":1000,"mtime":"2010-01-01T00:00:00Z","sticky":"keep","setid":"reject","dev":"reject"}"#
        );
        assert_eq!(serde_json::from_str::<Filters>(&json).unwrap(), Filters::default());

        let err = serde_json::from_str::<Filters>(r#"{"uidd":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `uidd`"), "{err}");
        let err = serde_json::from_str::<Filters>(r#"{"uid":-1}"#).unwrap_err();
        assert!(err.to_string().contains("between 0 and"), "{err}");
        let err = serde_json::from_str::<Filters>(r#"{"mtime":"yesterday"}"#).unwrap_err();
        assert!(err.to_string().contains("2010-01-01T00:00:00Z"), "{err}");
        let err = serde_json::from_str::<Filters>(r#"{"setid":"maybe"}"#).unwrap_err();
        assert!(err.to_string().contains("keep"), "{err}");
    }

    #[test]
    fn command_line_filters() {
        let f = Filters::from_args(&["uid=0", "mtime=keep", "setid=keep"]).unwrap();
        assert_eq!(f.uid, IdFilter::Set(0));
        assert_eq!(f.gid, IdFilter::Set(1000));
        assert_eq!(f.mtime, MtimeFilter::Keep);
        assert_eq!(f.setid, Policy::Keep);
        for (args, want) in [
            (&["uid"][..], "KEY=VALUE"),
            (&["uid=1", "uid=2"][..], "twice"),
            (&["colour=red"][..], "unknown field `colour`"),
        ] {
            let err = Filters::from_args(args).unwrap_err();
            assert!(matches!(err, WareError::BadFilter { .. }));
            assert!(err.to_string().contains(want), "{err}");
        }
    }
}
