// Drives an RPC API at http://127.0.0.1:<port>/api/v0 with kubo's own JavaScript client, through every
// command btfs serves, and exits non-zero at the first answer the client does not take or that differs
// from what kubo answers. Usage: node rpc-client-all.mjs <port>
import assert from 'node:assert/strict'

import { create } from 'kubo-rpc-client'

const port = process.argv[2]
if (!port) {
  console.error('usage: node rpc-client-all.mjs <port>')
  process.exit(2)
}
const ipfs = create({ url: `http://127.0.0.1:${port}/api/v0` })
const collect = async (it) => {
  const out = []
  for await (const x of it) out.push(x)
  return out
}
const bytes = async (it) => Buffer.concat((await collect(it)).map((c) => Buffer.from(c)))

// kubo's CIDs for these bytes: `echo "hello world" | ipfs add` and `printf "hello world" | ipfs block put`.
const HELLO = 'QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o'
const RAW_HELLO = 'bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e'

assert.equal(typeof (await ipfs.version()).version, 'string')
assert.equal(typeof (await ipfs.id()).id.toString(), 'string')

let progress = 0
const added = await ipfs.add({ path: 'hello.txt', content: 'hello world\n' }, { progress: () => { progress++ } })
assert.equal(added.cid.toString(), HELLO)
assert.equal(added.path, 'hello.txt')
assert.equal(added.size, 20)
assert.ok(progress > 0, 'progress was reported')

assert.equal((await bytes(ipfs.cat(added.cid))).toString(), 'hello world\n')
assert.equal((await bytes(ipfs.cat(added.cid, { offset: 6, length: 5 }))).toString(), 'world')

const entries = await collect(ipfs.addAll([
  { path: 'dir/a.txt', content: 'alpha\n' },
  { path: 'dir/sub/big.bin', content: Buffer.alloc(600000, 7) },
  { path: 'dir/empty' },
], { wrapWithDirectory: true, cidVersion: 1 }))
// Files as they were added, then the directories as kubo lists them: each after what is under it.
assert.deepEqual(entries.map((e) => e.path), ['dir/a.txt', 'dir/sub/big.bin', 'dir/empty', 'dir/sub', 'dir', ''])
const root = entries[entries.length - 1].cid

const links = await collect(ipfs.ls(`/ipfs/${root}/dir`))
assert.deepEqual(links.map((l) => [l.name, l.type, l.size]), [['a.txt', 'file', 6], ['empty', 'dir', 0], ['sub', 'dir', 0]])

// `get` is a tar stream: the one file's entry holds its bytes.
assert.ok((await bytes(ipfs.get(`/ipfs/${root}/dir/a.txt`))).includes(Buffer.from('alpha\n')))

const pins = await collect(ipfs.pin.ls({ type: 'recursive' }))
assert.deepEqual(pins.map((p) => p.cid.toString()).sort(), [HELLO, root.toString()].sort())
assert.equal((await ipfs.pin.rm(added.cid)).toString(), HELLO)
assert.equal((await ipfs.pin.add(added.cid, { recursive: false })).toString(), HELLO)
assert.equal((await collect(ipfs.pin.ls({ paths: [added.cid] })))[0].type, 'direct')

const block = await ipfs.block.put(new TextEncoder().encode('hello world'))
assert.equal(block.toString(), RAW_HELLO)
assert.equal(Buffer.from(await ipfs.block.get(block)).toString(), 'hello world')
assert.equal((await ipfs.block.stat(block)).size, 11)
const removed = await collect(ipfs.block.rm(block))
assert.deepEqual(removed.map((r) => [r.cid.toString(), r.error]), [[RAW_HELLO, undefined]])

const car = await bytes(ipfs.dag.export(root))
const imported = await collect(ipfs.dag.import([car]))
assert.deepEqual(imported.map((r) => r.root.cid.toString()), [root.toString()])

const stat = await ipfs.repo.stat()
assert.equal(stat.storageMax, 10000000000n)
await ipfs.pin.rm(added.cid)
const collected = await collect(ipfs.repo.gc())
assert.deepEqual(collected.map((r) => r.cid.toString()), ['bafkreicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby'])

await ipfs.config.set('Datastore.StorageMax', '20GB')
assert.equal(await ipfs.config.get('Datastore.StorageMax'), '20GB')
assert.equal((await ipfs.config.getAll()).Datastore.StorageMax, '20GB')

await assert.rejects(collect(ipfs.cat('notacid')), /notacid/)
await assert.rejects(collect(ipfs.cat(RAW_HELLO)), /not found/)

console.log('kubo-rpc-client: all commands answered as kubo answers')
