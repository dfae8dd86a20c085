//! Pins what `#[task]` accepts and the errors a user sees for what it refuses.
//!
//! After changing a message on purpose, regenerate the expected output with
//! `TRYBUILD=overwrite cargo test -p dmq-core --test trybuild` and read the diff.

#[test]
fn task_attribute() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
