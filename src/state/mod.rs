//! The state store: flocked SQLite file, schema migrations, leases (owned by the state work).
