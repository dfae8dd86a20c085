//! The broker conformance suite, unchanged, against `RedisBroker` on a real Redis.

mod common;

dmq_core::broker_conformance_tests!(common::RedisFixture);
