//! The broker conformance suite, unchanged, against `RedisBroker` on a real Redis
//! Cluster (three masters, three replicas; `scripts/ensure-redis-cluster` starts it).

mod common;

dmq_core::broker_conformance_tests!(common::ClusterFixture);
