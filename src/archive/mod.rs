//! Tar archives, which both the container (rootfs tars) and the formula
//! code (wares and the tars packed into them) read.
//!
//! - `read`: gzip or plain streams (other compressions refused), entry
//!   names and PAX times read one way for every caller;
//! - `unpack`: safe, faithful unpacking below a directory fd;
//! - `tee`: one read of a stream for two consumers on two threads;
//! - `error`: what goes wrong, one line each.

mod error;
mod read;
pub mod tee;
mod unpack;

pub use error::TarError;
pub use read::decompressed;
pub(crate) use read::{clean, pax_time};
pub use unpack::{DATA_CHUNK, UnpackStats, unpack};
