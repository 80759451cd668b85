//! Integration tests of `ferry-store`: one conformance suite run against both backends (SQLite
//! in a temp dir, etcd as a real `etcd` process on loopback), plus backend-specific tests, the
//! SQLite kill -9 test and a throughput measurement.
//!
//! One test binary on purpose: the crash test re-executes it as its child process.

#[macro_use]
mod conformance;
mod bench;
mod crash;
mod etcd;
mod etcd_server;
mod sqlite;
