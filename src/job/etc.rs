//! The job's /etc/hosts and /etc/resolv.conf, for every kind of job. The
//! child creates both files in the job's view only; their text comes with
//! the runner's go, once a bridged job's address is leased.

use std::net::Ipv4Addr;

use crate::config::{Egress, NetworkConfig};

/// The job's own name resolves to its own address; a job with no address
/// of its own (`--net none`) finds its name on the loopback, so that a
/// program looking itself up (hostname -f, many test suites) still works.
/// The live jobs on its bridge when it leased (`peers`: /etc/hosts lines,
/// see `Lease::peers`) follow, each by its id, so that "start `web`, then
/// a client of `http://web:8000`" needs no DNS server; a peer whose id is
/// the job's own hostname is left out (the job's own line wins).
pub fn hosts(hostname: &str, ip: Option<Ipv4Addr>, peers: &str) -> String {
    let v6 = "::1\tlocalhost ip6-localhost ip6-loopback\n";
    let mut text = match ip {
        Some(ip) => format!("127.0.0.1\tlocalhost\n{v6}{ip}\t{hostname}\n"),
        None => format!("127.0.0.1\tlocalhost {hostname}\n{v6}"),
    };
    text.reserve(peers.len());
    for line in peers.split_inclusive('\n') {
        if line.split_once('\t').is_some_and(|(_, name)| name.trim_end() != hostname) {
            text.push_str(line);
        }
    }
    text
}

/// Nameservers for a bridged job (`network.dns`, else with egress the
/// host's: see `config::host_nameservers`); where there are none, a
/// comment saying why and what to set (an empty file would make resolvers
/// try 127.0.0.1, which is nobody in the job's netns). A bridge without
/// egress gets no server by default: one outside the host could not
/// answer it.
pub fn resolv_conf(net: Option<&NetworkConfig>) -> String {
    match net {
        None => "# no network: this job has only lo\n".to_string(),
        Some(c) if c.dns.is_empty() && c.egress == Egress::None => format!(
            "# no DNS: network.egress is \"none\" in {}, so no nameserver beyond this host is reachable; set network.dns to one on the bridge or the host\n",
            c.source.display()
        ),
        Some(c) if c.dns.is_empty() => format!("# no nameservers: set network.dns in {}\n", c.source.display()),
        Some(c) => c.dns.iter().map(|ns| format!("nameserver {ns}\n")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_names_the_job_on_its_address_or_the_loopback() {
        let bridged = hosts("web", Some(Ipv4Addr::new(198, 18, 0, 7)), "");
        assert!(bridged.ends_with("198.18.0.7\tweb\n") && bridged.starts_with("127.0.0.1\tlocalhost\n"), "{bridged}");
        let none = hosts("web", None, "");
        assert!(none.starts_with("127.0.0.1\tlocalhost web\n") && !none.contains("198."), "{none}");
    }

    #[test]
    fn hosts_lists_the_jobs_before_it_by_name() {
        let peers = "198.18.0.2\tweb\n198.18.0.9\tclient\n";
        let text = hosts("client", Some(Ipv4Addr::new(198, 18, 0, 3)), peers);
        assert!(text.ends_with("198.18.0.3\tclient\n198.18.0.2\tweb\n"), "{text}");
    }

    #[test]
    fn resolv_conf_lists_the_configured_nameservers() {
        let mut c =
            crate::config::Config::parse("", std::path::Path::new("/etc/repeatr/config.toml"), "").unwrap().network;
        assert!(resolv_conf(None).starts_with('#'));
        assert!(resolv_conf(Some(&c)).contains("set network.dns in /etc/repeatr/config.toml"));
        c.dns = vec![Ipv4Addr::new(198, 18, 0, 53), Ipv4Addr::new(198, 18, 0, 54)];
        assert_eq!(resolv_conf(Some(&c)), "nameserver 198.18.0.53\nnameserver 198.18.0.54\n");
        c.egress = Egress::None;
        assert_eq!(resolv_conf(Some(&c)), "nameserver 198.18.0.53\nnameserver 198.18.0.54\n", "dns still wins");
        c.dns.clear();
        let none = resolv_conf(Some(&c));
        assert!(
            none.starts_with("# no DNS: network.egress is \"none\"")
                && !none.lines().any(|l| l.starts_with("nameserver")),
            "{none}"
        );
    }
}
