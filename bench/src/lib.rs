//! `ferry bench`'s engine, independent of the lab that runs it: the report model with its
//! versioned JSON schema ([`model`]), the built-in load generator ([`loadgen`]), the statistics
//! ([`stats`]), the Service sweep's prober ([`probe`]) and the outputs and comparison
//! ([`report`]). The CLI (`cli/src/bench/net/`) builds the paths, runs the rounds and fills a
//! [`model::Report`].

pub mod loadgen;
pub mod model;
pub mod probe;
pub mod report;
pub mod stats;
