//! Runnable dmq examples live beside this file; see the `[[example]]` entries in Cargo.toml.
