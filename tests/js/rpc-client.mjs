#!/usr/bin/env node
// Drives a kubo-compatible RPC API with the IPFS project's own client, `kubo-rpc-client`.
// Usage: node rpc-client.mjs <api-multiaddr> <file> [add-options-json]
//   e.g. node rpc-client.mjs /ip4/127.0.0.1/tcp/5001 /tmp/f '{"cidVersion":1}'
//
// Runs id(), add() of the file's bytes (streamed), cat() of the returned CID and pin.ls(), and prints one
// JSON line `{"id","cid","catBytes","catSha256","pins":[{"cid","type"}]}`. `add-options-json` is passed
// to add() as is (the client turns camelCase keys into kebab-case query parameters: cidVersion ->
// cid-version). Any failure: a message on stderr naming the call, and exit code 1 (2 for bad usage).
// Only 127.0.0.1 is accepted as the API address.

import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { multiaddr } from '@multiformats/multiaddr'
import { create } from 'kubo-rpc-client'

const CALL_TIMEOUT_MS = 10 * 60_000

function usage (message) {
  process.stderr.write(`rpc-client: ${message}\nusage: rpc-client.mjs <api-multiaddr> <file> [add-options-json]\n`)
  process.exit(2)
}

/** Runs one client call; a failure names the call and the underlying cause (e.g. ECONNREFUSED). */
async function step (name, fn) {
  try {
    return await fn(AbortSignal.timeout(CALL_TIMEOUT_MS))
  } catch (err) {
    const cause = err?.cause != null ? ` (${err.cause.message ?? err.cause})` : ''
    const status = err?.response?.status != null ? ` [HTTP ${err.response.status}]` : ''
    throw new Error(`${name} failed${status}: ${err?.message ?? err}${cause}`)
  }
}

async function main () {
  const [api, file, addOptionsJson] = process.argv.slice(2)
  if (api == null || file == null) usage('missing arguments')
  let addr
  try {
    addr = multiaddr(api)
  } catch (err) {
    usage(`bad multiaddr ${JSON.stringify(api)}: ${err.message}`)
  }
  const [ip, tcp] = addr.getComponents()
  if (ip?.name !== 'ip4' || ip.value !== '127.0.0.1' || tcp?.name !== 'tcp') {
    usage(`only /ip4/127.0.0.1/tcp/<port> is allowed, got ${api}`)
  }
  let addOptions = {}
  if (addOptionsJson != null) {
    try {
      addOptions = JSON.parse(addOptionsJson)
    } catch (err) {
      usage(`bad add options: ${err.message}`)
    }
  }

  const client = create({ url: addr })

  const id = await step('id()', (signal) => client.id({ signal }))
  const added = await step('add()', (signal) =>
    client.add(createReadStream(file, { highWaterMark: 1 << 20 }), { ...addOptions, signal }))

  const { catBytes, catSha256 } = await step(`cat(${added.cid})`, async (signal) => {
    const hash = createHash('sha256')
    let bytes = 0
    for await (const chunk of client.cat(added.cid, { signal })) {
      hash.update(chunk)
      bytes += chunk.byteLength
    }
    return { catBytes: bytes, catSha256: hash.digest('hex') }
  })

  const pins = await step('pin.ls()', async (signal) => {
    const out = []
    for await (const pin of client.pin.ls({ signal })) out.push({ cid: pin.cid.toString(), type: pin.type })
    return out
  })

  process.stdout.write(JSON.stringify({ id: id.id.toString(), cid: added.cid.toString(), catBytes, catSha256, pins }) + '\n')
}

main().catch((err) => {
  process.stderr.write(`rpc-client: ${err?.message ?? err}\n`)
  process.exitCode = 1
})
