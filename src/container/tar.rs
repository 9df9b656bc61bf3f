//! Safe, faithful unpacking of rootfs tars (owned by the tar work).
