#!/usr/bin/env node
// Benchmark reference: imports one file with the IPFS project's JavaScript importer into an in-memory
// blockstore (as NOTES.md measured it) and prints `{ "cid", "seconds" }`. Usage:
//   node bench-import.mjs <file> <unixfs-v0-2015|unixfs-v1-2025>
import { createReadStream } from 'node:fs'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { MemoryBlockstore } from 'blockstore-core/memory'

const [file, profile = 'unixfs-v0-2015'] = process.argv.slice(2)
if (!file) {
  console.error('usage: bench-import.mjs <file> [profile]')
  process.exit(2)
}
const v1 = profile === 'unixfs-v1-2025'
const options = {
  profile,
  cidVersion: v1 ? 1 : 0,
  rawLeaves: v1,
  chunker: fixedSize({ chunkSize: v1 ? 1_048_576 : 262_144 }),
  layout: balanced({ maxChildrenPerNode: v1 ? 1024 : 174 }),
  leafType: 'file'
}
const started = process.hrtime.bigint()
let root
for await (const entry of importer([{ content: createReadStream(file, { highWaterMark: 1 << 20 }) }], new MemoryBlockstore(), options)) {
  root = entry
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9
console.log(JSON.stringify({ cid: root.cid.toString(), seconds }))
