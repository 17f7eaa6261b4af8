#!/usr/bin/env node
// The CID oracle: the IPFS project's JavaScript UnixFS importer (`ipfs-unixfs-importer`), driven with the
// options kubo's `ipfs add` would use, so the `btfs-tests` crate can compare our CIDs with an outside
// implementation case by case.
//
// Input (stdin): a JSON array of cases `{ "id", "path", "opts" }`, `path` an absolute file or directory.
// Output (stdout): one JSON line per case, in input order: `{ "id", "cid" }` or `{ "id", "error" }`.
// Cases run one after another (the hash swap below is process-global).
//
// `opts` mirrors kubo's flags: cidVersion (0|1), rawLeaves (bool), chunkSize (int, `--chunker size-N`),
// trickle (bool), maxLinks (int, `--max-file-links`), profile ("unixfs-v0-2015"|"unixfs-v1-2025"|null,
// kubo's Import config profiles of IPIP-499), hash ("sha2-256"|"sha2-512"|"blake2b-256"|"blake3"),
// wrap (bool, `-w`). A directory is imported like `ipfs add -r <dir>`.

import { createReadStream, lstatSync, readdirSync, readFileSync } from 'node:fs'
import { basename } from 'node:path'
import { pathToFileURL } from 'node:url'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced, trickle } from 'ipfs-unixfs-importer/layout'
import { BlackHoleBlockstore } from 'blockstore-core/black-hole'
import { sha256, sha512 } from 'multiformats/hashes/sha2'
import { from as hasherFrom } from 'multiformats/hashes/hasher'
import { blake2b256 } from '@multiformats/blake2/blake2b'
import { blake3 as nobleBlake3 } from '@noble/hashes/blake3.js'

// There is no `@multiformats/blake3` on npm; this is the multicodec entry (blake3, 0x1e) over the audited
// @noble/hashes implementation, with kubo's default 32-byte digest.
const blake3 = hasherFrom({ name: 'blake3', code: 0x1e, encode: (input) => nobleBlake3(input) })

const HASHERS = new Map([
  ['sha2-256', sha256],
  ['sha2-512', sha512],
  ['blake2b-256', blake2b256],
  ['blake3', blake3]
])

// kubo's `Import` settings for each profile (kubo config/profile.go, test/cli/cid_profiles_test.go).
// `null` is kubo's implicit default, which is unixfs-v0-2015 except that CidVersion and UnixFSRawLeaves
// are unset rather than explicitly 0/false: that difference decides whether `--cid-version=1` implies
// raw leaves (it does by default; it does not under an explicit unixfs-v0-2015 profile).
const PROFILES = {
  default: {
    cidVersion: undefined,
    rawLeaves: undefined,
    chunkSize: 262_144,
    maxLinks: 174,
    // boxo's legacy "links" estimate: sum over links of (name bytes + CID bytes)
    shardSplitStrategy: 'links-bytes'
  },
  'unixfs-v0-2015': {
    cidVersion: 0,
    rawLeaves: false,
    chunkSize: 262_144,
    maxLinks: 174,
    shardSplitStrategy: 'links-bytes'
  },
  'unixfs-v1-2025': {
    cidVersion: 1,
    rawLeaves: true,
    chunkSize: 1_048_576,
    maxLinks: 1024,
    // boxo's "block" estimate: the exact serialized size of the dag-pb directory block
    shardSplitStrategy: 'block-bytes'
  }
}

// Both profiles shard a directory whose estimated size is strictly greater than 256 KiB, into a HAMT
// of fanout 256 (8 bits) keyed by murmur3-x64-64 (kubo's Import.UnixFSHAMTDirectorySizeThreshold and
// UnixFSHAMTDirectoryMaxFanout defaults).
const SHARD_SPLIT_THRESHOLD_BYTES = 262_144
const SHARD_FANOUT_BITS = 8

// kubo's trickle builder repeats each layer this many times (boxo ipld/unixfs/importer/trickle).
const TRICKLE_LAYER_REPEAT = 4

/**
 * Resolve kubo's flag logic (kubo core/commands/add.go and core/coreiface/options/unixfs.go) into
 * importer options. Throws where kubo would refuse the combination.
 */
export function importerOptions (opts = {}) {
  const profileName = opts.profile ?? 'default'
  const profile = PROFILES[profileName]
  if (profile == null) throw new Error(`unknown profile ${JSON.stringify(opts.profile)}`)
  const hash = opts.hash ?? 'sha2-256'
  if (!HASHERS.has(hash)) throw new Error(`unsupported hash ${JSON.stringify(hash)}`)

  // a flag overrides the config; a config value that is set counts as "set" (add.go)
  let cidVersion = opts.cidVersion ?? profile.cidVersion
  let rawLeaves = opts.rawLeaves ?? profile.rawLeaves
  // (hash != sha2-256) -> CIDv1; an explicit CIDv0 is refused
  if (hash !== 'sha2-256') {
    if (cidVersion === 0) throw new Error('CIDv0 only supports sha2-256')
    cidVersion = 1
  } else if (cidVersion == null) {
    cidVersion = 0
  }
  if (cidVersion !== 0 && cidVersion !== 1) throw new Error(`unknown CID version: ${cidVersion}`)
  // CIDv1 -> raw leaves, unless raw leaves were set by a flag or the config
  if (rawLeaves == null) rawLeaves = cidVersion > 0

  const chunkSize = opts.chunkSize ?? profile.chunkSize
  const maxLinks = opts.maxLinks ?? profile.maxLinks
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) throw new Error(`invalid chunk size ${chunkSize}`)
  if (!Number.isSafeInteger(maxLinks) || maxLinks < 2) throw new Error(`invalid max links ${maxLinks}`)

  const layout = opts.trickle === true
    ? {
        // kubo's trickle leaves are UnixFS `raw` nodes (not `file`) when not raw leaves, and a file of
        // one chunk is still wrapped in a root node
        layout: trickle({ maxChildrenPerNode: maxLinks, layerRepeat: TRICKLE_LAYER_REPEAT }),
        leafType: 'raw',
        reduceSingleLeafToSelf: false
      }
    : {
        layout: balanced({ maxChildrenPerNode: maxLinks }),
        leafType: 'file',
        reduceSingleLeafToSelf: true
      }

  return {
    hash,
    importer: {
      cidVersion,
      rawLeaves,
      chunker: fixedSize({ chunkSize }),
      ...layout,
      shardSplitThresholdBytes: SHARD_SPLIT_THRESHOLD_BYTES,
      shardSplitStrategy: profile.shardSplitStrategy,
      shardFanoutBits: SHARD_FANOUT_BITS,
      fieldOrder: 'links-first',
      wrapWithDirectory: opts.wrap === true
    }
  }
}

// Go's os.ReadDir order: names compared as UTF-8 bytes (JavaScript's default sort compares UTF-16
// code units, which orders U+E000..U+FFFF after astral characters).
function byUtf8 (a, b) {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}

// Hidden names are skipped, as `ipfs add -r` does without `--hidden`.
function isHidden (name) {
  return name.startsWith('.')
}

/**
 * The import candidates of `ipfs add -r <dir>`: each directory before its children, names sorted.
 * File system calls are synchronous: the oracle does one thing at a time, and a round trip through
 * libuv's thread pool per call made directories of thousands of files several times slower.
 */
function * walkDirectory (absPath, relPath) {
  yield { path: relPath }
  const names = readdirSync(absPath).filter((name) => !isHidden(name)).sort(byUtf8)
  for (const name of names) {
    const childAbs = `${absPath}/${name}`
    const childRel = `${relPath}/${name}`
    const stat = lstatSync(childAbs)
    if (stat.isDirectory()) {
      yield * walkDirectory(childAbs, childRel)
    } else if (stat.isFile()) {
      yield { path: childRel, content: fileContent(childAbs, stat.size) }
    } else {
      throw new Error(`${childAbs}: only regular files and directories are supported`)
    }
  }
}

// Small files are read whole (opening a stream per file dominates a directory of thousands of
// them); large ones are streamed so a 1 GiB input costs no more memory than a small one.
function fileContent (absPath, size) {
  if (size <= 1 << 20) return readFileSync(absPath)
  return createReadStream(absPath, { highWaterMark: 1 << 20 })
}

/**
 * The importer hashes every block with `sha256` from `multiformats/hashes/sha2` and has no hasher
 * option; for another hash function this swaps that shared instance's `digest` for the run, so every
 * block (leaves, file nodes, directories, HAMT shards) is hashed with it, as kubo's `--hash` does.
 * That changes CID lengths and so Tsize fields and directory size estimates exactly as a native
 * implementation would.
 */
async function withHash (hash, run) {
  if (hash === 'sha2-256') return run()
  const hasher = HASHERS.get(hash)
  sha256.digest = (input, options) => hasher.digest(input, options)
  try {
    return await run()
  } finally {
    delete sha256.digest
  }
}

/** The CID `ipfs add [-r] [-w] <path>` would print for one case. */
export async function addCid (path, opts = {}) {
  const { hash, importer: options } = importerOptions(opts)
  const stat = lstatSync(path)
  const name = basename(path)
  let source
  let rootPath
  if (stat.isDirectory()) {
    source = walkDirectory(path, name)
    rootPath = options.wrapWithDirectory ? '' : name
  } else if (stat.isFile()) {
    const content = fileContent(path, stat.size)
    source = [options.wrapWithDirectory ? { path: name, content } : { content }]
    rootPath = options.wrapWithDirectory ? '' : undefined
  } else {
    throw new Error(`${path}: only regular files and directories are supported`)
  }

  const blockstore = new BlackHoleBlockstore()
  let root
  await withHash(hash, async () => {
    for await (const entry of importer(source, blockstore, options)) {
      if (rootPath === undefined || entry.path === rootPath) root = entry
    }
  })
  if (root == null) throw new Error(`the importer yielded no root entry for ${path}`)

  // guard against the hash swap silently not reaching the importer's copy of multiformats
  const expectedCode = HASHERS.get(hash).code
  if (root.cid.multihash.code !== expectedCode) {
    throw new Error(`root ${root.cid} is not hashed with ${hash}`)
  }
  return root.cid.toString()
}

async function readStdin () {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return Buffer.concat(chunks).toString('utf8')
}

async function main () {
  const cases = JSON.parse(await readStdin())
  if (!Array.isArray(cases)) throw new Error('stdin must hold a JSON array of cases')
  for (const c of cases) {
    let line
    try {
      if (typeof c.id !== 'string' || typeof c.path !== 'string') {
        throw new Error('a case needs a string "id" and "path"')
      }
      line = { id: c.id, cid: await addCid(c.path, c.opts ?? {}) }
    } catch (err) {
      line = { id: c.id, error: err?.message ?? String(err) }
    }
    process.stdout.write(JSON.stringify(line) + '\n')
  }
}

if (process.argv[1] != null && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    process.stderr.write(`oracle: ${err?.stack ?? err}\n`)
    process.exit(1)
  })
}
