//! A cgroup per job: where the job's processes are, what they may use
//! (memory, CPU, processes, devices), whether the OOM killer struck, and
//! how they are all killed at once. Nested under the runner's own cgroup
//! in every hierarchy, on cgroup v2, v1 and hybrids of both (see
//! state-layout.md, "Cgroups").

mod devices;
mod discover;
mod ebpf;
mod error;
mod files;
mod gc;
mod job;
mod live;
mod names;
mod v1;
mod v2;

pub use discover::{Hierarchies, discover};
pub use error::CgroupError;
pub use gc::reclaim_all;
pub use job::{Entered, JobCgroup};
pub use live::{LiveUsage, of_init as usage_of_init};
pub use names::{JOB_PREFIX, RUNNER_PREFIX};
