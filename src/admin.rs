//! `repeatr leases` and `repeatr gc`: looking at and cleaning up the state
//! that runners share. Neither blocks a run for longer than a read or one
//! short transaction.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::error::Error;
use crate::network::{self, Deletion, LinkOwner};
use crate::state::{LeaseInfo, LeaseRecord, LeaseState, RebuildReport, StateDir, domain_bridges, uplink_names};

/// Prints the lease table (or JSON array) and returns the exit code.
pub fn leases(state_dir: &Path, json: bool) -> Result<i32, Error> {
    let state = StateDir::open(state_dir)?;
    let list = state.list()?;
    if json {
        println!("{}", crate::output::json(&list)?);
    } else {
        print!("{}", table(&list));
    }
    Ok(0)
}

fn table(list: &[LeaseInfo]) -> String {
    let header = ["JOB", "IP", "SLOT", "IFACE", "PID", "STARTED", "STATE", "PORTS", "COMMAND"];
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            let l = &i.lease;
            let state =
                serde_json::to_value(i.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            vec![
                crate::escape::escaped(l.job.as_bytes()),
                l.ip.to_string(),
                l.slot.to_string(),
                l.iface.clone(),
                l.pid.to_string(),
                l.started_at.clone(),
                state,
                ports(&i.published),
                crate::escape::escaped(l.command.as_bytes()),
            ]
        })
        .collect();
    crate::output::table(&header, &rows)
}

/// `18080:80/tcp,53:53/udp`, as `--publish` takes them; `-` for none.
fn ports(published: &[crate::publish::Publish]) -> String {
    if published.is_empty() {
        return "-".into();
    }
    published.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// What `gc` did, as printed.
#[derive(Serialize, Default)]
struct GcOutput {
    dry_run: bool,
    rebuilt: Option<RebuildReport>,
    reclaimed: Vec<LeaseRecord>,
    sidecars_removed: Vec<std::path::PathBuf>,
    /// Host ports dead jobs published (`--publish`), with their map elements.
    ports_unpublished: Vec<crate::state::PublishedPort>,
    veths_deleted: Vec<String>,
    /// Bridges a runner died making (`rpt+…`, see `network::HostLinks::stale_pending_bridges`).
    bridges_deleted: Vec<String>,
    /// Links gc would have deleted but that are not this state dir's.
    links_kept: Vec<KeptLink>,
    /// Output dirs of formula runs whose runner died (`STATE/outputs/<job>`).
    outputs_removed: Vec<std::path::PathBuf>,
    /// Cgroups of jobs (and runner leaves) whose runner died (`repeatr-job.…`, `repeatr-runner.…`).
    cgroups_removed: Vec<std::path::PathBuf>,
    /// Records of jobs whose runner died (`STATE/jobs/<job>.lock`).
    job_records_removed: Vec<std::path::PathBuf>,
    /// `--all`: bridges with no job, deleted with their NAT.
    bridges_removed: Vec<String>,
    /// `--all`: the nftables tables of those bridges (`ip repeatr-<bridge>`).
    nat_removed: Vec<String>,
    /// `--all`: IPv4 forwarding turned off (this state dir had turned it on).
    forwarding_turned_off: bool,
    errors: Vec<String>,
    /// The ware cache's eviction (`gc_cache`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<crate::ware_cache::Eviction>,
}

/// A link left alone, and whose it is.
#[derive(Serialize)]
struct KeptLink {
    name: String,
    /// "belongs to the state dir /run/other", "was not made by repeatr", ...
    owner: String,
}

/// What `gc` is asked to do.
#[derive(Clone, Copy, Debug, Default)]
pub struct GcOptions {
    /// Say what would be done, change nothing.
    pub dry_run: bool,
    pub json: bool,
    /// Rebuild a damaged or lost state.db from the live jobs first.
    pub rebuild: bool,
    /// Also delete the bridges no job uses, with their NAT.
    pub all: bool,
}

/// Reclaims stale leases, deletes leftover host veths of free slots, and
/// optionally rebuilds a damaged database first.
pub fn gc(state_dir: &Path, config: Option<&Path>, opts: GcOptions) -> Result<i32, Error> {
    let GcOptions { dry_run, json, rebuild, all } = opts;
    let mut out = GcOutput { dry_run, ..Default::default() };
    if rebuild && !dry_run {
        out.rebuilt = Some(StateDir::rebuild(state_dir)?);
    }
    let state = StateDir::open(state_dir)?;
    let mut unpublish_errors = Vec::new();
    let report = state.gc_with(dry_run, |dead| unpublish_errors = crate::job::publish::unpublish_dead(dead))?;
    out.reclaimed = report.reclaimed;
    out.sidecars_removed = report.sidecars_removed;
    out.ports_unpublished = report.ports_unpublished;
    out.errors.extend(unpublish_errors);

    // Leftover veths: those of reclaimed leases, and any `{bridge}-N` of the
    // configured bridge and its leaves whose slot nobody holds. Each is deleted only while
    // we hold its slot lock, so a job starting right now cannot lose its
    // own, and only if it carries this state dir's marker: a live job of
    // another state dir holds no slot lock here.
    let mut candidates: Vec<(String, u16)> = out.reclaimed.iter().map(|r| (r.bridge.clone(), r.slot)).collect();
    let bridge = match Config::load(config) {
        Ok(config) => Some(config.network.bridge),
        Err(e) => {
            out.errors.push(e.to_string());
            None
        }
    };
    // One dump of the host's links for every question below: a dead job's
    // veth is usually gone with its netns already, and one that is not
    // there needs neither its slot lock nor a netlink lookup (10,000 of
    // those made gc take seconds). A link made after the dump is a live
    // job's, whose slot lock would keep it anyway. A veth the kernel is
    // taking down with its job's netns counts as gone: it is not left behind.
    let host_links = network::HostLinks::dump()?;
    let links = host_links.not_dying();
    let present: std::collections::HashSet<&str> = links.iter().map(String::as_str).collect();
    // The hub and those of its leaves that exist.
    let domain: Vec<String> = match &bridge {
        Some(hub) => {
            let mut d = domain_bridges(hub);
            d.retain(|b| b == hub || present.contains(b.as_str()));
            d
        }
        None => Vec::new(),
    };
    for bridge in &domain {
        let prefix = format!("{bridge}-");
        for name in links.iter().filter(|n| n.starts_with(&prefix)) {
            if let Some(slot) = name.strip_prefix(&prefix).and_then(|s| s.parse::<u16>().ok()) {
                candidates.push((bridge.clone(), slot));
            }
        }
    }
    candidates.retain(|(bridge, slot)| present.contains(crate::state::iface_name(bridge, *slot).as_str()));
    candidates.sort();
    candidates.dedup();
    let owner = LinkOwner::of_dir(state_dir).map_err(|err| Error::StateDir { path: state_dir.to_path_buf(), err })?;
    // Host veths retired at teardown (`rpt~<ifindex>`) are normally
    // destroyed with their job's netns within milliseconds; one still on
    // the bridge has a netns something else keeps alive. No job owns it.
    let mut retired = Vec::new();
    for bridge in &domain {
        retired.extend(host_links.retired_ports(bridge));
    }
    for name in retired {
        if let Some(name) = delete_own(name, &owner, dry_run, &mut out) {
            out.veths_deleted.push(name);
        }
    }
    for name in host_links.stale_pending_bridges() {
        if let Some(name) = delete_own(name, &owner, dry_run, &mut out) {
            out.bridges_deleted.push(name);
        }
    }
    for (bridge, slot) in candidates {
        let iface = crate::state::iface_name(&bridge, slot);
        // A dry run takes no lock: taking one may create its file.
        let free = if dry_run {
            state.slot_is_free(&bridge, slot).map(|free| free.then_some(None))
        } else {
            state.try_lock_slot(&bridge, slot).map(|lock| lock.map(Some))
        };
        match free {
            Ok(Some(_lock)) => {
                if let Some(name) = delete_own(iface, &owner, dry_run, &mut out) {
                    out.veths_deleted.push(name);
                }
            }
            Ok(None) => {}
            Err(e) => out.errors.push(e.to_string()),
        }
    }

    let outputs = crate::formula_run::outputs::reclaim_dead(state_dir, dry_run);
    out.outputs_removed = outputs.removed;
    out.errors.extend(outputs.errors);
    let records = crate::job::record::reclaim_dead(state_dir, dry_run);
    out.job_records_removed = records.removed;
    out.errors.extend(records.errors);
    if all {
        remove_idle_bridges(&state, bridge.as_deref(), &present, &owner, dry_run, &mut out);
    }

    let cgroups = crate::cgroup::reclaim_all(owner.id(), dry_run);
    out.cgroups_removed = cgroups.removed;
    out.errors.extend(cgroups.errors);
    out.cache = evict_cache(config, dry_run).map_err(|e| out.errors.push(e.to_string())).ok().flatten();

    if json {
        println!("{}", crate::output::json(&out)?);
    } else {
        print!("{}", summary(&out));
        // Only what the cache's eviction did or could not do: a cache within
        // its budget is nothing to report here (`gc --cache` says its size).
        if let Some(e) = out.cache.as_ref().filter(|e| !e.evicted.is_empty() || !e.in_use.is_empty()) {
            print!("{}", cache_summary(e));
        }
    }
    Ok(if out.errors.is_empty() { 0 } else { crate::error::EXIT_RUNNER_ERROR })
}

/// `gc --all`: the configured bridge and every bridge with NAT set up by
/// this state dir, each if no live lease is on it or on its leaves: the
/// leaves and their uplinks (of those in `present`, the host's links), the
/// bridge (each if ours) and its NAT (`job::egress::take_down`). A run
/// that is starting on the bridge and has no lease yet loses its bridge
/// (its set-up then fails): run it when no job starts.
fn remove_idle_bridges(
    state: &StateDir,
    configured: Option<&str>,
    present: &std::collections::HashSet<&str>,
    owner: &LinkOwner,
    dry_run: bool,
    out: &mut GcOutput,
) {
    let dir = state.root().to_path_buf();
    let mut bridges: Vec<String> = match crate::state::egress_marks(&dir) {
        Ok(b) => b,
        Err(e) => {
            out.errors.push(e.to_string());
            Vec::new()
        }
    };
    bridges.extend(configured.map(String::from));
    bridges.sort();
    bridges.dedup();
    let leases = match state.list() {
        Ok(l) => l,
        Err(e) => return out.errors.push(e.to_string()),
    };
    for bridge in bridges {
        let domain = domain_bridges(&bridge);
        let running =
            leases.iter().filter(|l| domain.contains(&l.lease.bridge) && l.state == LeaseState::Running).count();
        if running > 0 {
            out.links_kept.push(KeptLink { name: bridge, owner: format!("has {running} running job(s)") });
            continue;
        }
        // Forgotten first: the next job goes on the hub, not on a leaf
        // about to go.
        if !dry_run {
            match state.forget_leaves(&bridge) {
                Ok(true) => {}
                Ok(false) => {
                    out.links_kept.push(KeptLink { name: bridge, owner: "has leases on its leaves".into() });
                    continue;
                }
                Err(e) => {
                    out.errors.push(e.to_string());
                    continue;
                }
            }
        }
        for leaf in domain[1..].iter().filter(|l| present.contains(l.as_str())) {
            let (on_hub, _) = uplink_names(leaf);
            if present.contains(on_hub.as_str()) {
                // Either end takes the pair with it.
                delete_own(on_hub, owner, dry_run, out);
            }
            if let Some(name) = delete_own(leaf.clone(), owner, dry_run, out) {
                out.bridges_removed.push(name);
            }
        }
        if let Some(name) = delete_own(bridge.clone(), owner, dry_run, out) {
            out.bridges_removed.push(name);
        }
        match crate::job::egress::take_down(&dir, &bridge, dry_run) {
            Ok(done) => {
                out.nat_removed.extend(done.table);
                out.forwarding_turned_off |= done.forwarding_off;
            }
            Err(e) => out.errors.push(format!("NAT of {bridge}: {e}")),
        }
    }
}

/// Deletes the link `name` if it is `owner`'s (see
/// [`network::delete_own_link`]) and returns its name if it did (or would);
/// a link that is not ours goes to `links_kept`, a failure to `errors`.
fn delete_own(name: String, owner: &LinkOwner, dry_run: bool, out: &mut GcOutput) -> Option<String> {
    match network::delete_own_link(&name, owner, dry_run) {
        Ok(Deletion::Deleted) => return Some(name),
        Ok(Deletion::Missing) => {}
        Ok(Deletion::Kept(other)) => out.links_kept.push(KeptLink { name, owner: other.to_string() }),
        Err(e) => out.errors.push(format!("{name}: {e}")),
    }
    None
}

/// What `gc` prints, a line per thing done. Writing to a `String` cannot
/// fail: the results of `write!` are ignored.
fn summary(o: &GcOutput) -> String {
    let verb = if o.dry_run { "would reclaim" } else { "reclaimed" };
    let mut s = String::new();
    if let Some(r) = &o.rebuilt {
        if let Some(p) = &r.moved_aside {
            let _ = writeln!(s, "moved the old database aside to {}", p.display());
        }
        let _ = writeln!(
            s,
            "rebuilt: {} live lease(s) restored, {} dead record(s) dropped",
            r.restored.len(),
            r.dropped.len()
        );
        for p in &r.unrestorable {
            let _ = writeln!(s, "could not restore {} (stop that job, then rebuild again)", p.display());
        }
    }
    for r in &o.reclaimed {
        let _ = writeln!(s, "{verb} lease of job {} ({} slot {} on {}, pid {})", r.job, r.ip, r.slot, r.bridge, r.pid);
    }
    for p in &o.sidecars_removed {
        let _ = writeln!(s, "removed dead lease record {}", p.display());
    }
    for p in &o.ports_unpublished {
        let verb = if o.dry_run { "would unpublish" } else { "unpublished" };
        let _ = writeln!(s, "{verb} host port {} of dead job {} (bridge {})", p.port.host_side(), p.job, p.bridge);
    }
    let vverb = if o.dry_run { "would delete" } else { "deleted" };
    for v in &o.veths_deleted {
        let _ = writeln!(s, "{vverb} leftover veth {v}");
    }
    for b in &o.bridges_deleted {
        let _ = writeln!(s, "{vverb} half-made bridge {b}");
    }
    for k in &o.links_kept {
        let _ = writeln!(s, "left {} alone: it {}", k.name, k.owner);
    }
    for d in &o.outputs_removed {
        let _ = writeln!(s, "{} leftover outputs {}", if o.dry_run { "would remove" } else { "removed" }, d.display());
    }
    for d in &o.cgroups_removed {
        let _ = writeln!(s, "{} dead job's cgroup {}", if o.dry_run { "would remove" } else { "removed" }, d.display());
    }
    for r in &o.job_records_removed {
        let _ = writeln!(s, "{} dead job record {}", if o.dry_run { "would remove" } else { "removed" }, r.display());
    }
    for b in &o.bridges_removed {
        let _ = writeln!(s, "{vverb} bridge {b} (no job on it)");
    }
    for t in &o.nat_removed {
        let _ = writeln!(s, "{} nftables table {t}", if o.dry_run { "would remove" } else { "removed" });
    }
    if o.forwarding_turned_off {
        let _ = writeln!(
            s,
            "{} IPv4 forwarding (repeatr had turned it on)",
            if o.dry_run { "would turn off" } else { "turned off" }
        );
    }
    for e in &o.errors {
        let _ = writeln!(s, "error: {e}");
    }
    if o.reclaimed.is_empty()
        && o.sidecars_removed.is_empty()
        && o.ports_unpublished.is_empty()
        && o.veths_deleted.is_empty()
        && o.bridges_deleted.is_empty()
        && o.links_kept.is_empty()
        && o.outputs_removed.is_empty()
        && o.cgroups_removed.is_empty()
        && o.job_records_removed.is_empty()
        && o.bridges_removed.is_empty()
        && o.nat_removed.is_empty()
        && !o.forwarding_turned_off
        && o.rebuilt.is_none()
    {
        s += "nothing to clean\n";
    }
    s
}

/// `gc --cache`: only the ware cache's eviction, printed.
pub fn gc_cache(config: Option<&Path>, dry_run: bool, json: bool) -> Result<i32, Error> {
    let eviction = evict_cache(config, dry_run)?.unwrap_or_default();
    if json {
        println!("{}", crate::output::json(&eviction)?);
    } else {
        print!("{}", cache_summary(&eviction));
    }
    Ok(0)
}

/// The least recently used entries of the configured ware cache out, down
/// to `[cache] max_size` (never one in use); then what stays is synced and
/// marked durable, so a reboot keeps it (see `ware_cache`). `None`: there
/// is no cache (none is made).
fn evict_cache(config: Option<&Path>, dry_run: bool) -> Result<Option<crate::ware_cache::Eviction>, Error> {
    let Some(cache) = crate::ware_cache::Cache::existing_from_config(config)? else {
        return Ok(None);
    };
    let eviction = cache.evict(cache.max_size, dry_run)?;
    if !dry_run {
        cache.mark_durable()?;
    }
    Ok(Some(eviction))
}

fn cache_summary(e: &crate::ware_cache::Eviction) -> String {
    use crate::limits::human_size;
    let verb = if e.dry_run { "would evict" } else { "evicted" };
    let mut s = String::new();
    for x in &e.evicted {
        s += &format!("cache: {verb} {} ({})\n", x.key, human_size(x.bytes));
    }
    for x in &e.in_use {
        s += &format!("cache: kept {} ({}): in use\n", x.key, human_size(x.bytes));
    }
    s += &format!(
        "cache: {} of {} budget ({} before)\n",
        human_size(e.bytes_after),
        human_size(e.budget),
        human_size(e.bytes_before)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_control_characters_escaped() {
        let lease = LeaseRecord {
            job: "j\u{1b}[1m".into(),
            command: "sh -c 'printf \"\u{1b}[2J\"'\nforged line".into(),
            ..crate::state::example_record()
        };
        let web = crate::publish::Publish { proto: crate::publish::Proto::Tcp, host_port: 18080, job_port: 80 };
        let out = table(&[LeaseInfo { lease, state: LeaseState::Running, published: vec![web] }]);
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert_eq!(out.lines().count(), 2, "one header and one row: {out}");
        assert!(out.contains("j\\u{1b}[1m") && out.contains("\\nforged line"), "{out}");
        assert!(out.lines().next().is_some_and(|h| h.contains("PORTS")) && out.contains(" 18080:80/tcp "), "{out}");
    }
}
