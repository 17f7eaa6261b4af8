//! btfs-node: the btfs daemon and command line.
//!
//! Code map: `repo` owns the on-disk repo (config, identity, RocksDB block store, pins); `add` imports files
//! and directories; `read` resolves paths and reads UnixFS back out; `blocks` holds the block, pin, CAR
//! and repo-maintenance commands; `api::Node` is the facade every front end calls; `cli` parses arguments
//! and prints results for the `btfs` binary.

pub mod add;
pub mod api;
pub mod blocks;
pub mod cli;
pub mod daemon;
pub mod net;
pub mod online;
pub mod read;
pub mod repo;

pub use api::Node;
