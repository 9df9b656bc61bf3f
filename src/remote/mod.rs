//! Warehouses by URL: local directories, `file://`, `http(s)://` (read
//! only) and `s3://BUCKET/PREFIX`, searched in order for a formula's
//! inputs, one of them marked for saving outputs. A remote ware is
//! downloaded once per host into the download area, a local warehouse of
//! verified wares (`download`), from which runs read it as from any other
//! local warehouse. Only the remote path touches this code: a `--rootfs`
//! run never does (its waiting runner maps none of it).
//!
//! - `location`: what a `--warehouse` value names
//! - `settings`: the `[warehouse]` config keys and the `AWS_*` variables
//! - `client`: one synchronous HTTP client (ureq) and its errors
//! - `sigv4`: AWS Signature Version 4, for S3-compatible stores
//! - `store`: a remote warehouse's objects (`PREFIX/tar/<hash>.tar`)
//! - `download`: the download area: verified, once, under a lock
//! - `warehouses`: the facade formula runs and commands use
//! - `error`: what goes wrong, and its class

mod client;
pub mod download;
pub mod error;
pub mod location;
pub mod settings;
mod sigv4;
mod store;
pub mod warehouses;

pub use error::RemoteError;
pub use location::Location;
pub use settings::WarehouseConfig;
pub use warehouses::Warehouses;
