#!/usr/bin/env node
// Helia -> Helia Bitswap transfer over loopback, the reference figure for the Rust benchmarks.
// Usage: node helia-pair-bench.mjs <file> <unixfs-v0-2015|unixfs-v1-2025> [--blockstore memory|fs]
//
// Starts two helia-peer.mjs children: the first adds <file>, the second connects to it and cats the CID
// into a temp file. Only the cat is timed (connect and add are not). The copy is then compared with
// <file> byte for byte, outside the timing. Prints one JSON line
// `{"bytes","ms","MBps","cid","addMs"}` (MBps = 10^6 bytes per second); exits non-zero on any failure.

import { spawn } from 'node:child_process'
import { createReadStream } from 'node:fs'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const PEER = join(dirname(fileURLToPath(import.meta.url)), 'helia-peer.mjs')
const CAT_TIMEOUT_MS = 30 * 60_000

/** One helia-peer child; `send` writes a command and resolves with its one-line answer. */
async function startPeer (name, extraArgs) {
  const child = spawn(process.execPath, [PEER, ...extraArgs], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  const next = async () => {
    const { value, done } = await lines.next()
    if (done) throw new Error(`${name} exited: ${JSON.stringify(await exited)}`)
    return JSON.parse(value)
  }
  const send = async (cmd) => {
    child.stdin.write(JSON.stringify(cmd) + '\n')
    const reply = await next()
    if (reply.ok !== true) throw new Error(`${name} ${cmd.cmd}: ${reply.error}`)
    return reply
  }
  const hello = await next()
  return { ...hello, child, send, exited }
}

/** Streams both files and compares them chunk by chunk. */
async function sameBytes (a, b) {
  const [sa, sb] = await Promise.all([stat(a), stat(b)])
  if (sa.size !== sb.size) return false
  const ia = createReadStream(a, { highWaterMark: 1 << 20 })[Symbol.asyncIterator]()
  const ib = createReadStream(b, { highWaterMark: 1 << 20 })[Symbol.asyncIterator]()
  let bufA = Buffer.alloc(0)
  let bufB = Buffer.alloc(0)
  for (;;) {
    if (bufA.length === 0) { const r = await ia.next(); if (!r.done) bufA = r.value }
    if (bufB.length === 0) { const r = await ib.next(); if (!r.done) bufB = r.value }
    if (bufA.length === 0 || bufB.length === 0) return bufA.length === bufB.length
    const n = Math.min(bufA.length, bufB.length)
    if (!bufA.subarray(0, n).equals(bufB.subarray(0, n))) return false
    bufA = bufA.subarray(n)
    bufB = bufB.subarray(n)
  }
}

async function main () {
  const [file, profile, ...rest] = process.argv.slice(2)
  if (file == null || (profile !== 'unixfs-v0-2015' && profile !== 'unixfs-v1-2025')) {
    throw new Error('usage: helia-pair-bench.mjs <file> <unixfs-v0-2015|unixfs-v1-2025> [--blockstore memory|fs]')
  }
  const dir = await mkdtemp(join(tmpdir(), 'helia-pair-bench-'))
  const peers = []
  try {
    peers.push(await startPeer('provider', rest), await startPeer('fetcher', rest))
    const [provider, fetcher] = peers
    const addStarted = performance.now()
    const { cid } = await provider.send({ cmd: 'add', path: file, profile })
    const addMs = Math.round(performance.now() - addStarted)
    await fetcher.send({ cmd: 'connect', addr: provider.addrs[0] })
    const out = join(dir, 'out')
    const { bytes, ms } = await fetcher.send({ cmd: 'cat', cid, out, timeoutMs: CAT_TIMEOUT_MS })
    if (!await sameBytes(file, out)) throw new Error(`the fetched copy of ${cid} differs from ${file}`)
    for (const peer of peers) await peer.send({ cmd: 'stop' })
    process.stdout.write(JSON.stringify({ bytes, ms, MBps: Math.round(bytes / ms / 10) / 100, cid, addMs }) + '\n')
  } finally {
    for (const { child } of peers) if (child.exitCode == null) child.kill()
    await Promise.all(peers.map((p) => p.exited))
    await rm(dir, { recursive: true, force: true })
  }
}

main().catch((err) => {
  process.stderr.write(`helia-pair-bench: ${err?.message ?? err}\n`)
  process.exitCode = 1
})
