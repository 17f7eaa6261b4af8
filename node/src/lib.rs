//! btfs-node: the btfs daemon and command line.
//!
//! Code map: `repo` owns the on-disk repo (config, identity, RocksDB block store, pins); `add` imports files
//! and directories; `read` resolves paths and reads UnixFS back out; `blocks` holds the block, pin, CAR
//! and repo-maintenance commands; `tar` writes and safely extracts the tar streams of `get` over HTTP;
//! `api::Node` is the facade every front end calls; `rpc` serves it as kubo's RPC API; `client` calls that
//! API for the CLI's remote mode; `cli` parses arguments and prints results for the `btfs` binary.

pub mod add;
pub mod api;
pub mod bittorrent;
pub mod blocks;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod gateway;
pub mod market;
pub mod net;
pub mod online;
pub mod read;
pub mod repo;
pub mod rpc;
pub mod tar;

pub use api::Node;
