//! Fixed-size chunking over any `Read`, and a one-call importer for bytes already in memory.
//!
//! Chunks are exactly `ChunkSize` bytes except the last, as kubo's `size-N` splitter makes them (it reads
//! with `io.ReadFull`), so short reads from pipes never change the CIDs.

use std::io::{self, Read};

use crate::block::{Block, Link};
use crate::file::FileBuilder;
use crate::import::{ChunkSize, Params};

/// Splits a reader into fixed-size chunks.
#[derive(Debug)]
pub struct Chunker<R> {
    reader: R,
    size: usize,
    done: bool,
}

impl<R: Read> Chunker<R> {
    pub fn new(reader: R, size: ChunkSize) -> Self {
        Self { reader, size: size.get(), done: false }
    }

    /// The next chunk, or `None` at the end of input. A read error ends the stream with that error.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = vec![0u8; self.size];
        let mut filled = 0;
        while filled < self.size {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
        }
        if filled < self.size {
            self.done = true;
            if filled == 0 {
                return Ok(None);
            }
            buf.truncate(filled);
        }
        Ok(Some(buf))
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

/// Imports `data` as one file; returns the root link and every block, leaves first.
pub fn import_bytes(params: &Params, data: &[u8]) -> (Link, Vec<Block>) {
    let mut blocks = Vec::new();
    let mut builder = FileBuilder::new(params.file);
    for chunk in data.chunks(params.chunk_size.get()) {
        let (block, link) = params.file.leaf(chunk.to_vec());
        blocks.push(block);
        builder.push(link, &mut |b| blocks.push(b));
    }
    let root = builder.finish(&mut |b| blocks.push(b));
    (root, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most 7 bytes per call, like a slow pipe.
    struct Trickling<'a>(&'a [u8]);

    impl Read for Trickling<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn chunks_are_full_despite_short_reads() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
        let size = ChunkSize::new(100).expect("valid size");
        for len in [0, 1, 99, 100, 101, 1000] {
            let chunks: Vec<Vec<u8>> =
                Chunker::new(Trickling(&data[..len]), size).collect::<io::Result<_>>().expect("no io error");
            assert_eq!(chunks.concat(), &data[..len]);
            assert!(chunks.iter().rev().skip(1).all(|c| c.len() == 100), "len {len}");
            assert_eq!(chunks.len(), len.div_ceil(100));
        }
    }
}
