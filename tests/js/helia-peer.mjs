#!/usr/bin/env node
// A light, loopback-only Helia node driven over stdin/stdout, the Bitswap peer of the interop tests.
//
// libp2p is built here with only TCP (listening on 127.0.0.1), Noise, Yamux and identify, and Bitswap is
// Helia's only block broker: no bootstrap, mDNS, DHT, delegated routing, autoNAT, relay or websockets.
// A connection gater refuses every address that is not 127.0.0.1, inbound or outbound.
//
// Usage: node helia-peer.mjs [--blockstore memory|fs]
//   memory (default): a 1 GiB transfer peaks at about 2 GiB RSS per process. fs: blocks in a temp dir
//   (blockstore-fs, removed on stop), about 30-40% slower on this machine.
//
// Protocol: on start one JSON line `{"peerId","addrs"}` on stdout; then one JSON command per stdin line,
// each answered, in order, by exactly one line `{"ok":true,...}` or `{"ok":false,"error"}` (an `"id"` in
// the command is echoed back). Logs go to stderr only. stdin closing stops the node as `stop` does.
//   {"cmd":"add","path":"/file","profile":"unixfs-v0-2015"|"unixfs-v1-2025"} -> {"cid"}
//   {"cmd":"connect","addr":"/ip4/127.0.0.1/tcp/N/p2p/..."}                  -> {"peerId","protocols"}
//   {"cmd":"cat","cid":"...","out":"/path","timeoutMs":N}                    -> {"bytes","ms"}
//   {"cmd":"peers"}                                                           -> {"peers":[...]}
//   {"cmd":"stop"}                                                            -> {"ok":true}, then exit 0

// libp2p 3 calls Promise.withResolvers (Node >= 22); Node 20 lacks it, and without it every inbound
// connection fails with EncryptionFailedError. Only called at run time, so defining it here is early enough.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

import { setMaxListeners } from 'node:events'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { unixfs } from '@helia/unixfs'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { FsBlockstore } from 'blockstore-fs'
import { MemoryDatastore } from 'datastore-core/memory'
import { createHeliaLight } from 'helia'
import { CID } from 'multiformats/cid'
import { importerOptions } from './oracle.mjs'

const LOOPBACK = '127.0.0.1'
const IDENTIFY_WAIT_MS = 10_000

const log = (...args) => process.stderr.write(`helia-peer: ${args.join(' ')}\n`)

/** True for /ip4/127.0.0.1/... only (anything else, DNS names and ::1 included, is refused). */
function isLoopback (ma) {
  const [first] = ma.getComponents()
  return first?.name === 'ip4' && first.value === LOOPBACK
}

const gater = {
  denyDialMultiaddr: (ma) => !isLoopback(ma),
  denyInboundConnection: (maConn) => !isLoopback(maConn.remoteAddr),
  denyOutboundConnection: (_peer, maConn) => !isLoopback(maConn.remoteAddr),
  // keeps non-loopback addresses a remote announces (identify) out of the dialable set
  filterMultiaddrForPeer: (_peer, ma) => isLoopback(ma)
}

function parseArgs (argv) {
  const opts = { blockstore: 'memory' }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--blockstore' && (argv[i + 1] === 'fs' || argv[i + 1] === 'memory')) {
      opts.blockstore = argv[++i]
    } else {
      throw new Error(`usage: helia-peer.mjs [--blockstore memory|fs] (bad argument ${JSON.stringify(argv[i])})`)
    }
  }
  return opts
}

async function createNode ({ blockstore: kind }) {
  let blockstore
  let tempDir
  if (kind === 'fs') {
    tempDir = await mkdtemp(join(tmpdir(), 'helia-peer-'))
    blockstore = new FsBlockstore(tempDir)
    await blockstore.open()
  } else {
    blockstore = new MemoryBlockstore()
  }

  // createHeliaLight + the two mixins is createHelia() without its HTTP gateway broker and without the
  // libp2p defaults (withLibp2pLight takes our libp2p options as they are).
  const helia = withBitswap(withLibp2pLight(createHeliaLight({ blockstore, datastore: new MemoryDatastore() }), {
    addresses: { listen: [`/ip4/${LOOPBACK}/tcp/0`] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: gater,
    peerDiscovery: [],
    services: { identify: identify() }
  }))
  await helia.start()
  return { helia, fs: unixfs(helia), identified: trackIdentify(helia.libp2p), tempDir }
}

/**
 * Records what identify reports for each peer. Bitswap only talks to peers whose identify lists it, and the
 * peer store alone is not a signal: it already holds a protocol once a stream to it was negotiated.
 */
function trackIdentify (libp2p) {
  const seen = new Map()
  libp2p.addEventListener('peer:identify', (evt) => seen.set(evt.detail.peerId.toString(), evt.detail.protocols))
  /** Resolves with the protocols `peerId` announced, once identify has run on it. */
  return async function identified (peerId, signal) {
    const key = peerId.toString()
    if (seen.has(key)) return seen.get(key)
    const { promise, resolve, reject } = Promise.withResolvers()
    const onIdentify = (evt) => { if (evt.detail.peerId.toString() === key) resolve(evt.detail.protocols) }
    const onAbort = () => reject(new Error(`identify of ${key} did not complete in ${IDENTIFY_WAIT_MS} ms`))
    libp2p.addEventListener('peer:identify', onIdentify)
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      return await promise
    } finally {
      libp2p.removeEventListener('peer:identify', onIdentify)
      signal.removeEventListener('abort', onAbort)
    }
  }
}

const commands = {
  async add ({ fs }, { path, profile }) {
    if (typeof path !== 'string') throw new Error('add needs a "path"')
    if (profile !== 'unixfs-v0-2015' && profile !== 'unixfs-v1-2025') {
      throw new Error('add needs "profile": "unixfs-v0-2015" or "unixfs-v1-2025"')
    }
    // the exact kubo options of that profile (cidVersion, rawLeaves, chunker, balanced layout, leafType,
    // ...), the same the CID oracle uses: @helia/unixfs' own CIDv1 defaults would otherwise apply
    const options = importerOptions({ profile }).importer
    const cid = await fs.addByteStream(createReadStream(path, { highWaterMark: 1 << 20 }), options)
    return { cid: cid.toString() }
  },

  async connect ({ helia, identified }, { addr }) {
    if (typeof addr !== 'string') throw new Error('connect needs an "addr"')
    const ma = multiaddr(addr)
    if (!isLoopback(ma)) throw new Error(`refusing to dial ${addr}: only ${LOOPBACK} is allowed`)
    const signal = AbortSignal.timeout(IDENTIFY_WAIT_MS)
    const connection = await helia.libp2p.dial(ma, { signal })
    const protocols = await identified(connection.remotePeer, signal)
    return { peerId: connection.remotePeer.toString(), protocols }
  },

  async cat ({ fs }, { cid, out, timeoutMs }) {
    if (typeof cid !== 'string' || typeof out !== 'string') throw new Error('cat needs "cid" and "out"')
    const signal = AbortSignal.timeout(Number.isFinite(timeoutMs) ? timeoutMs : 600_000)
    // Bitswap and the exporter add one abort listener per block in flight
    setMaxListeners(Infinity, signal)
    const started = performance.now()
    let bytes = 0
    const counted = async function * (source) {
      for await (const chunk of source) {
        bytes += chunk.byteLength
        yield chunk
      }
    }
    await pipeline(Readable.from(counted(fs.cat(CID.parse(cid), { signal }))), createWriteStream(out), { signal })
    return { bytes, ms: Math.round(performance.now() - started) }
  },

  async peers ({ helia }) {
    return { peers: helia.libp2p.getPeers().map(String) }
  }
}

async function main () {
  const node = await createNode(parseArgs(process.argv.slice(2)))
  const { helia, tempDir } = node
  const write = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

  let stopping
  const stop = () => {
    stopping ??= (async () => {
      await helia.stop().catch((err) => log('stop:', err?.message ?? err))
      if (tempDir != null) await rm(tempDir, { recursive: true, force: true })
    })()
    return stopping
  }
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.once(sig, () => { stop().finally(() => process.exit(0)) })
  }

  write({ peerId: helia.libp2p.peerId.toString(), addrs: helia.libp2p.getMultiaddrs().map(String) })
  log(`started ${helia.libp2p.peerId}${tempDir != null ? ` (blockstore ${tempDir})` : ''}`)

  // one command at a time: answers stay in command order
  let stopReq
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    if (line.trim() === '') continue
    let req
    let reply
    try {
      req = JSON.parse(line)
      if (req?.cmd === 'stop') {
        stopReq = req
        break
      }
      const handler = Object.hasOwn(commands, req?.cmd) ? commands[req.cmd] : null
      if (handler == null) throw new Error(`unknown command ${JSON.stringify(req?.cmd)}`)
      reply = { ok: true, ...(await handler(node, req)) }
    } catch (err) {
      log(`${req?.cmd ?? 'command'} failed: ${err?.stack ?? err}`)
      reply = { ok: false, error: err?.message ?? String(err) }
    }
    if (req?.id !== undefined) reply.id = req.id
    write(reply)
  }

  await stop()
  if (stopReq != null) write(stopReq.id !== undefined ? { ok: true, id: stopReq.id } : { ok: true })
  // stdout must be flushed before exiting (it is a pipe)
  process.stdout.write('', () => process.exit(0))
}

main().catch((err) => {
  log(`fatal: ${err?.stack ?? err}`)
  process.exit(1)
})
