//! A job's published ports (`--publish`) between the state store, which
//! decides who holds a host port, and the map elements in the bridge's
//! NAT table (`network::port_map`).

use std::collections::BTreeMap;

use crate::network::port_map::{self, Element};
use crate::state::PublishedPort;

/// The map elements of `ports`, by the bridge whose table holds them.
fn by_bridge(ports: &[PublishedPort]) -> BTreeMap<&str, Vec<Element>> {
    let mut out: BTreeMap<&str, Vec<Element>> = BTreeMap::new();
    for p in ports {
        out.entry(p.bridge.as_str()).or_default().push(Element { port: p.port, ip: p.ip });
    }
    out
}

/// Takes out the map elements of dead jobs' ports, which the state store
/// just gave up (under the state lock, see `StateDir::acquire_publishing`);
/// one line per failure, for the caller to report.
pub fn unpublish_dead(ports: &[PublishedPort]) -> Vec<String> {
    let mut errors = Vec::new();
    for (bridge, elements) in by_bridge(ports) {
        match port_map::unpublish(bridge, &elements) {
            Ok(()) => log::debug!("unpublished {} port(s) of dead jobs on {bridge}", elements.len()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}
