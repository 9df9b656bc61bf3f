//! Bridge networking over synchronous netlink (owned by the network work).
