//! Cross-crate end-to-end tests for dmq live beside this file as `[[test]]` targets.
