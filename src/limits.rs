//! What one job may use of the host: memory, CPU, processes. Parsed and
//! checked here, before anything is created, from the flags, the config's
//! `[limits]` or a formula's `action.limits`; applied by `crate::cgroup`.

/// The pids limit a job gets unless told otherwise (podman's default is
/// 2048, docker's none; 4096 leaves room for a parallel build).
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;
/// The CFS period every CPU quota is a share of (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest memory limit accepted: below it the job's own start (the
/// exec, the dynamic loader) is killed before the command runs. Docker
/// refuses less than 6 MiB for the same reason.
pub const MIN_MEMORY: u64 = 6 << 20;
/// docker's /dev/shm.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;
/// The most a writable root gets by default, whatever the host's RAM.
pub const MAX_DEFAULT_ROOTFS_SIZE: u64 = 8 << 30;
/// The smallest tmpfs size accepted: an empty root still needs its
/// directories (lower, upper, work, merged) and the job's /etc files.
const MIN_TMPFS: u64 = 1 << 20;
/// The kernel refuses a CFS quota below 1 ms.
const MIN_CPU_QUOTA_US: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("bad {key} {value:?}: expected a size such as 512m, 2g, 100k or a number of bytes")]
    Size { key: &'static str, value: String },
    #[error("bad {key} {value:?}: {value} is below {min} MiB, too little for a job to start; give at least 6m")]
    MemoryTooSmall { key: &'static str, value: String, min: u64 },
    #[error("bad {key} {value:?}: a job's tmpfs needs at least 1m")]
    TmpfsTooSmall { key: &'static str, value: String },
    #[error("bad {key} {value:?}: expected a number of CPUs such as 0.5 or 2, at least 0.01")]
    Cpus { key: &'static str, value: String },
    #[error(
        "bad {key} {value:?}: expected a whole number of processes, at least 2 (the job's first process and one it starts), or max for none"
    )]
    Pids { key: &'static str, value: String },
}

/// A job's limits; `None` is "no limit of its own" (the runner's own
/// cgroup still bounds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory; swap is off for the job when set.
    pub memory: Option<u64>,
    /// CFS quota in microseconds per [`CPU_PERIOD_US`].
    pub cpu_quota_us: Option<u64>,
    pub pids: Option<u64>,
    /// `pids` is [`DEFAULT_PIDS_LIMIT`], not asked for: on a cgroup v1
    /// pids controller it is then left out (see `cgroup::job`).
    pub pids_default: bool,
    /// The writable root's tmpfs; `None`: [`default_rootfs_size`].
    pub rootfs_size: Option<u64>,
    /// /dev/shm; `None`: [`DEFAULT_SHM_SIZE`].
    pub shm_size: Option<u64>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: None,
            cpu_quota_us: None,
            pids: Some(DEFAULT_PIDS_LIMIT),
            pids_default: true,
            rootfs_size: None,
            shm_size: None,
        }
    }
}

/// The writable root's default size: an eighth of the host's RAM, at most
/// [`MAX_DEFAULT_ROOTFS_SIZE`] (a tmpfs's own default is half of RAM, which
/// lets a few jobs that fill their root take the host's memory). 1 GiB if
/// /proc/meminfo cannot say.
pub fn default_rootfs_size() -> u64 {
    let ram = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    });
    ram.map_or(1 << 30, |r| (r / 8).clamp(MIN_TMPFS, MAX_DEFAULT_ROOTFS_SIZE))
}

/// Limits as given (flags, a config section, a formula): each `None` is
/// "not said here", to be filled from the next source.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitStrings {
    #[serde(default, deserialize_with = "text_or_number", skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, deserialize_with = "text_or_number", skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    #[serde(
        default,
        rename = "pids-limit",
        alias = "pids_limit",
        deserialize_with = "text_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub pids_limit: Option<String>,
    #[serde(default, rename = "rootfs-size", alias = "rootfs_size", skip_serializing_if = "Option::is_none")]
    pub rootfs_size: Option<String>,
    #[serde(default, rename = "shm-size", alias = "shm_size", skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<String>,
}

/// `cpus = 0.5` and `pids-limit = 100` as well as `"0.5"`, `"100"`: the
/// same parser reads all of them. A visitor, not an untagged enum: that
/// would buffer the value through serde's generic content code, pages
/// every waiting runner would map.
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Text).map(Some)
}

impl LimitStrings {
    /// `self` where it says something, `defaults` elsewhere.
    pub fn or(self, defaults: &LimitStrings) -> LimitStrings {
        LimitStrings {
            memory: self.memory.or_else(|| defaults.memory.clone()),
            cpus: self.cpus.or_else(|| defaults.cpus.clone()),
            pids_limit: self.pids_limit.or_else(|| defaults.pids_limit.clone()),
            rootfs_size: self.rootfs_size.or_else(|| defaults.rootfs_size.clone()),
            shm_size: self.shm_size.or_else(|| defaults.shm_size.clone()),
        }
    }

    /// Checks every value; `flags` says whether to name them as flags
    /// (`--memory`) or as keys (`limits.memory`) in messages.
    pub fn parse(&self, flags: bool) -> Result<Limits, LimitsError> {
        let key = |flag: &'static str, conf: &'static str| if flags { flag } else { conf };
        let mut limits = Limits::default();
        if let Some(v) = &self.memory {
            let k = key("--memory", "limits.memory");
            let bytes = parse_size(k, v)?;
            if bytes < MIN_MEMORY {
                return Err(LimitsError::MemoryTooSmall { key: k, value: v.clone(), min: MIN_MEMORY >> 20 });
            }
            limits.memory = Some(bytes);
        }
        if let Some(v) = &self.cpus {
            limits.cpu_quota_us = Some(parse_cpus(key("--cpus", "limits.cpus"), v)?);
        }
        if let Some(v) = &self.pids_limit {
            limits.pids = parse_pids(key("--pids-limit", "limits.pids-limit"), v)?;
            limits.pids_default = false;
        }
        for (v, k, to) in [
            (&self.rootfs_size, key("--rootfs-size", "limits.rootfs-size"), &mut limits.rootfs_size),
            (&self.shm_size, key("--shm-size", "limits.shm-size"), &mut limits.shm_size),
        ] {
            if let Some(v) = v {
                let bytes = parse_size(k, v)?;
                if bytes < MIN_TMPFS {
                    return Err(LimitsError::TmpfsTooSmall { key: k, value: v.clone() });
                }
                *to = Some(bytes);
            }
        }
        Ok(limits)
    }
}

/// `512m`, `2g`, `100k`, `1t` (binary multiples, either case, an optional
/// trailing `b`), or plain bytes.
pub fn parse_size(key: &'static str, s: &str) -> Result<u64, LimitsError> {
    let bad = || LimitsError::Size { key, value: s.to_string() };
    let lower = s.trim().to_ascii_lowercase();
    let body = lower.strip_suffix('b').filter(|b| b.ends_with(['k', 'm', 'g', 't'])).unwrap_or(&lower);
    let (digits, shift) = match body.as_bytes().last() {
        Some(b'k') => (&body[..body.len() - 1], 10),
        Some(b'm') => (&body[..body.len() - 1], 20),
        Some(b'g') => (&body[..body.len() - 1], 30),
        Some(b't') => (&body[..body.len() - 1], 40),
        _ => (body, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(1u64 << shift).ok_or_else(bad)?;
    if bytes == 0 { Err(bad()) } else { Ok(bytes) }
}

/// A fractional number of CPUs as a CFS quota per [`CPU_PERIOD_US`].
pub fn parse_cpus(key: &'static str, s: &str) -> Result<u64, LimitsError> {
    let bad = || LimitsError::Cpus { key, value: s.to_string() };
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let cpus: f64 = t.parse().map_err(|_| bad())?;
    let quota = (cpus * CPU_PERIOD_US as f64).round();
    if !quota.is_finite() || quota < MIN_CPU_QUOTA_US as f64 || quota > 1e15 {
        return Err(bad());
    }
    Ok(quota as u64)
}

/// A whole number, at least 2, or `max` for no limit of the job's own.
pub fn parse_pids(key: &'static str, s: &str) -> Result<Option<u64>, LimitsError> {
    match s.trim() {
        "max" => Ok(None),
        t => match t.parse::<u64>() {
            Ok(n) if n >= 2 => Ok(Some(n)),
            _ => Err(LimitsError::Pids { key, value: s.to_string() }),
        },
    }
}

/// `512 MiB`, `1.5 GiB`, `100 KiB`: how a limit is shown back to the user.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        let one = 1u64 << shift;
        if bytes >= one {
            return if bytes.is_multiple_of(one) {
                format!("{} {unit}", bytes >> shift)
            } else {
                format!("{:.1} {unit}", bytes as f64 / one as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("k", "512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("k", "2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("k", "2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("k", "100k").unwrap(), 100 << 10);
        assert_eq!(parse_size("k", "100kb").unwrap(), 100 << 10);
        assert_eq!(parse_size("k", "1t").unwrap(), 1 << 40);
        assert_eq!(parse_size("k", "4096").unwrap(), 4096);
        for bad in ["", "m", "-1m", "1.5g", "0", "0m", "12x", "1 g", "99999999999999999999", "20000000000t", "b"] {
            assert!(parse_size("k", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("c", "0.5").unwrap(), 50_000);
        assert_eq!(parse_cpus("c", "2").unwrap(), 200_000);
        assert_eq!(parse_cpus("c", "0.01").unwrap(), 1000);
        for bad in ["", "0", "0.001", "-1", "abc", "1e3", "inf", "NaN", "1..2"] {
            assert!(parse_cpus("c", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pids() {
        assert_eq!(parse_pids("p", "50").unwrap(), Some(50));
        assert_eq!(parse_pids("p", "max").unwrap(), None);
        for bad in ["", "0", "1", "-5", "x", "2.5"] {
            assert!(parse_pids("p", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_override_the_config_and_defaults_stay() {
        let config = LimitStrings { memory: Some("1g".into()), cpus: Some("1".into()), ..Default::default() };
        let flags = LimitStrings { memory: Some("64m".into()), ..Default::default() };
        let l = flags.or(&config).parse(true).unwrap();
        assert_eq!(l, Limits { memory: Some(64 << 20), cpu_quota_us: Some(100_000), ..Limits::default() });
        let sizes = LimitStrings { rootfs_size: Some("10m".into()), shm_size: Some("1m".into()), ..Default::default() };
        let l = sizes.parse(true).unwrap();
        assert_eq!((l.rootfs_size, l.shm_size), (Some(10 << 20), Some(1 << 20)));
        let e = LimitStrings { shm_size: Some("100k".into()), ..Default::default() }.parse(true).unwrap_err();
        assert!(e.to_string().starts_with("bad --shm-size"), "{e}");
        let d = default_rootfs_size();
        assert!((MIN_TMPFS..=MAX_DEFAULT_ROOTFS_SIZE).contains(&d), "{d}");
        assert!(LimitStrings { memory: Some("1m".into()), ..Default::default() }.parse(true).is_err());
        let e = LimitStrings { cpus: Some("x".into()), ..Default::default() }.parse(false).unwrap_err();
        assert!(e.to_string().starts_with("bad limits.cpus"), "{e}");
    }

    #[test]
    fn numbers_and_text_both_read() {
        let l: LimitStrings = serde_json::from_str(r#"{"memory": "64m", "cpus": 0.5, "pids-limit": 50}"#).unwrap();
        assert_eq!(
            l.parse(false).unwrap(),
            Limits {
                memory: Some(64 << 20),
                cpu_quota_us: Some(50_000),
                pids: Some(50),
                pids_default: false,
                ..Limits::default()
            }
        );
        assert!(serde_json::from_str::<LimitStrings>(r#"{"swap": "1g"}"#).is_err());
    }

    #[test]
    fn human() {
        assert_eq!(human_size(512 << 20), "512 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(64 << 20), "64 MiB");
        assert_eq!(human_size(100), "100 bytes");
    }
}
