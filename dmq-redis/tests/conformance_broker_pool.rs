//! The broker conformance suite, unchanged, against a `RedisBroker` made from an
//! application's deadpool-redis pool.

mod common;

dmq_core::broker_conformance_tests!(common::PooledFixture);
