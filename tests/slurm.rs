//! repeatr under Slurm: runs examples/slurm/test.sh, which brings up a
//! Slurm of its own from Debian's packages (slurm-wlm, munge), runs formula
//! arrays, scancels running tasks and looks at the jobs' addresses, leases,
//! cgroups and usage, on a single node and on two (the second in network and
//! UTS namespaces of its own). Ignored by default: it needs those packages
//! and takes a minute or two.
//!   cargo test --test slurm -- --ignored      (or: cargo test -- --ignored slurm)

mod common;

use std::process::Command;

#[test]
#[ignore = "needs slurm-wlm and munge; a minute or two: cargo test -- --ignored slurm"]
fn slurm_arrays_scancel_cgroups_and_two_nodes() {
    if !common::require_root() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/slurm/test.sh");
    let status =
        Command::new(script).env("REPEATR", env!("CARGO_BIN_EXE_repeatr")).env("SLURM_NODES", "2").status().unwrap();
    assert!(status.success(), "{script} failed ({status}); its output says which check");
}
