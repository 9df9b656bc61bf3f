//! The job id: made or checked here, for every kind of job. It names the
//! job's lease, its output directories, its log lines and, unless another
//! is given, its hostname, so it keeps to an alphabet that is safe in all
//! of those (a path component, a SQLite text, a log word).

use std::fmt;
use std::fs::File;
use std::io;

use crate::container::SpecError;
use crate::container::spec::check_hostname;
use crate::error::Error;

/// A checked job id, and whether the user gave it (`--name`) or it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobId {
    id: String,
    given: bool,
}

impl JobId {
    /// `name` checked, or a new id when none is given.
    pub fn new(name: Option<&str>) -> Result<JobId, Error> {
        match name {
            Some(n) if valid(n) => Ok(JobId { id: n.to_string(), given: true }),
            Some(n) => Err(SpecError::Name(n.to_string()).into()),
            None => generate()
                .map(|id| JobId { id, given: false })
                .map_err(Error::io("generating a job id from /dev/urandom")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// Whether the user named the job: only such a job is a name other
    /// jobs can look up (their `/etc/hosts`, see `state::LeaseRequest`).
    pub fn given(&self) -> bool {
        self.given
    }

    /// The job's hostname: `explicit` if given, else the id itself, which
    /// must then also be a valid hostname (an id may hold '_', a hostname
    /// may not): the error names the flag the user typed.
    pub fn hostname(&self, explicit: Option<&str>) -> Result<String, SpecError> {
        match explicit {
            Some(h) => check_hostname(h).map(|()| h.to_string()),
            None => check_hostname(&self.id)
                .map(|()| self.id.clone())
                .map_err(|_| SpecError::NameNotHostname(self.id.clone())),
        }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// 1-63 letters, digits, '_', '-' or '.', starting with a letter or digit:
/// never `.`, `..`, a hidden file or a path.
fn valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric()
}

/// 12 hex digits from the kernel's CSPRNG: unique enough among a host's
/// live jobs, and short enough to type.
fn generate() -> io::Result<String> {
    let mut buf = [0u8; 6];
    io::Read::read_exact(&mut File::open("/dev/urandom")?, &mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_or_made() {
        let given = JobId::new(Some("job-1.a_b")).unwrap();
        assert_eq!((given.as_str(), given.given()), ("job-1.a_b", true));
        for bad in ["-x", "a/b", "", ".", "..", ".hidden", &"x".repeat(64)] {
            assert!(JobId::new(Some(bad)).is_err(), "{bad:?}");
        }
        let made = JobId::new(None).unwrap();
        assert_eq!((made.as_str().len(), made.given()), (12, false));
        assert!(made.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn the_default_hostname_is_the_id_and_its_error_names_the_id() {
        let id = JobId::new(Some("a_b")).unwrap();
        let e = id.hostname(None).unwrap_err().to_string();
        assert!(e.contains("--name \"a_b\"") && e.contains("--hostname"), "{e}");
        assert!(!e.contains("bad --hostname"), "{e}");
        assert_eq!(id.hostname(Some("web")).unwrap(), "web");
        assert!(id.hostname(Some("a b")).unwrap_err().to_string().contains("bad --hostname"));
        assert_eq!(JobId::new(Some("web.1")).unwrap().hostname(None).unwrap(), "web.1");
    }
}
