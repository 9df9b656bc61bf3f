//! Configuration: /etc/repeatr/config.toml (owned by the state/config work).
