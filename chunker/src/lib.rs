//! The btfs content model: bytes to blocks and back.
//!
//! Chunkers, UnixFS encode/decode, balanced and trickle DAG builders, directories and HAMT sharding, CIDs and
//! CAR files, and BitTorrent metainfo. This crate is pure: no filesystem, network, database or async runtime.
//! Callers hand it bytes and receive blocks; where the blocks go is theirs to decide.

pub mod bitswap;
pub mod block;
pub mod car;
pub mod chunk;
pub mod dagpb;
pub mod dir;
pub mod erasure;
pub mod file;
pub mod hash;
pub mod import;
pub mod links;
pub mod manifest;
pub mod proof;
pub mod recipe;
pub mod tar;
#[cfg(test)]
mod testdata;
pub mod torrent;
pub mod unixfs;
pub mod varint;
pub mod walk;

pub use block::{Block, CidParams, CidVersion, Link};
pub use cid::Cid;
