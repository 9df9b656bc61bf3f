//! The state store's record of published ports (`--publish`): one live job
//! per host port across bridges, a dead job's taken over and handed back
//! for its map element, on release and gc too. No root needed: a state dir
//! in a temp dir, no network objects.

use std::cell::RefCell;

use repeatr::publish::{Proto, Publish};
use repeatr::state::{LeaseRequest, PublishedPort, StateDir, StateError};

fn req(job: &str, bridge: &str, net: u8) -> LeaseRequest {
    LeaseRequest {
        job: job.into(),
        bridge: bridge.into(),
        subnet: format!("198.19.{net}.0/24").parse().unwrap(),
        gateway: format!("198.19.{net}.1").parse().unwrap(),
        ip: None,
        command: "test".into(),
        named: true,
        pid: std::process::id(),
        slots_per_bridge: repeatr::state::PORTS_PER_BRIDGE,
    }
}

const WEB: Publish = Publish { proto: Proto::Tcp, host_port: 18080, job_port: 80 };

#[test]
fn a_host_port_is_one_live_jobs_and_a_dead_ones_is_handed_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let gone = RefCell::new(Vec::new());
    let unpublish = |dead: &[PublishedPort]| gone.borrow_mut().extend(dead.iter().map(|p| p.job.clone()));
    let a = state.acquire_publishing(&req("a", "rq0", 40), &[WEB], unpublish).unwrap();
    assert_eq!(a.published.len(), 1);
    assert_eq!((a.published[0].ip, a.published[0].bridge.as_str()), (a.record.ip, "rq0"));
    // `leases` shows them.
    let listed = state.list().unwrap();
    assert_eq!(
        listed.iter().map(|i| (i.lease.job.as_str(), i.published.clone())).collect::<Vec<_>>(),
        [("a", vec![WEB])]
    );

    // Live on another bridge: refused with its name; udp is another port.
    let e = state.acquire_publishing(&req("b", "rq1", 41), &[WEB], unpublish).unwrap_err();
    assert!(matches!(&e, StateError::PortTaken { job, .. } if job == "a"), "{e}");
    assert!(e.to_string().contains("host port 18080/tcp is published by job a"), "{e}");
    let udp = Publish { proto: Proto::Udp, ..WEB };
    let b = state.acquire_publishing(&req("b", "rq1", 41), &[udp], unpublish).unwrap();
    assert!(gone.borrow().is_empty());

    // a's runner dies (its slot lock goes): its port is taken over, and
    // its row handed back for its element.
    drop(a);
    let c = state.acquire_publishing(&req("c", "rq1", 41), &[WEB], unpublish).unwrap();
    assert_eq!(*gone.borrow(), ["a"]);
    state.release(c).unwrap();
    let d = state.acquire_publishing(&req("d", "rq1", 41), &[WEB], unpublish).unwrap();
    assert_eq!(*gone.borrow(), ["a"], "c released its port itself");

    // A dead publisher's ports go at the next lease on any bridge, one that
    // asks for none and does not reclaim that lease too.
    let e = state.acquire_publishing(&req("e", "rq0", 40), &[Publish { host_port: 18082, ..WEB }], unpublish).unwrap();
    drop(e);
    let f = state.acquire_publishing(&req("f", "rq1", 41), &[], unpublish).unwrap();
    assert_eq!(*gone.borrow(), ["a", "e"]);
    state.release(f).unwrap();

    // gc hands back the dead jobs' rows too; a dry run only reports them.
    let g = state.acquire_publishing(&req("g", "rq0", 40), &[Publish { host_port: 18083, ..WEB }], unpublish).unwrap();
    drop((b, d));
    let dry = state.gc_with(true, |_| panic!("a dry run unpublishes nothing")).unwrap();
    let mut would: Vec<Publish> = dry.ports_unpublished.iter().map(|p| p.port).collect();
    would.sort();
    assert_eq!(would, [WEB, udp], "the live job's port is not among them");
    state.release(g).unwrap();
    let mut by_gc = Vec::new();
    let report = state.gc_with(false, |dead| by_gc.extend(dead.iter().map(|p| p.port))).unwrap();
    by_gc.sort();
    assert_eq!(by_gc, [WEB, udp]);
    assert_eq!(report.ports_unpublished.len(), 2);
}

/// A rebuild (state.db lost) restores the ports of live jobs from their
/// sidecars: without them, the next job to ask for a live job's host port
/// would get it while the live job's map element still forwards it.
#[test]
fn a_rebuild_restores_the_ports_of_live_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let state = StateDir::open(&root).unwrap();
    let udp = Publish { proto: Proto::Udp, ..WEB };
    let a = state.acquire_publishing(&req("a", "rq0", 42), &[WEB, udp], |_| {}).unwrap();
    let sidecar = std::fs::read_to_string(root.join("slots/rq0").join(format!("{}.json", a.record.slot))).unwrap();
    assert!(sidecar.contains("\"published\"") && sidecar.contains("18080"), "{sidecar}");
    // No ports, no `published` field: sidecars of jobs without ports are
    // as they were.
    let b = state.acquire_publishing(&req("b", "rq0", 42), &[], |_| {}).unwrap();
    let plain = std::fs::read_to_string(root.join("slots/rq0").join(format!("{}.json", b.record.slot))).unwrap();
    assert!(!plain.contains("published"), "{plain}");
    drop(state);

    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(root.join(name));
    }
    let report = StateDir::rebuild(&root).unwrap();
    assert_eq!(report.restored.len(), 2, "{report:?}");

    let state = StateDir::open(&root).unwrap();
    let e = state.acquire_publishing(&req("c", "rq1", 43), &[WEB], |_| {}).unwrap_err();
    assert!(matches!(&e, StateError::PortTaken { job, .. } if job == "a"), "{e}");
    let e = state.acquire_publishing(&req("c", "rq1", 43), &[udp], |_| {}).unwrap_err();
    assert!(matches!(&e, StateError::PortTaken { job, .. } if job == "a"), "{e}");
    // Restored as a's: its release frees them.
    state.release(a).unwrap();
    let c = state.acquire_publishing(&req("c", "rq1", 43), &[WEB, udp], |_| {}).unwrap();
    assert_eq!(c.published.len(), 2);
    state.release(c).unwrap();
    state.release(b).unwrap();
}
