//! The container: rootfs, mounts, spawn, signals.
pub mod tar;
