//! The result-backend conformance suite, unchanged, against `RedisBackend` on a real
//! Redis Cluster (three masters, three replicas; `scripts/ensure-redis-cluster` starts
//! it).

mod common;

dmq_core::backend_conformance_tests!(common::ClusterFixture);
