// Reconnect policy against the real gateway: backoff timings with injected randomness, giving
// up after maxAttempts, exactly one reconnect in flight whatever fires, connect failures.
import { after, afterEach, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { TetherClient, backoffDelay } from '../dist/tether.js'
import { api as apiOf, startGateway } from './support/gateway.js'
import { startProxy } from './support/proxy.js'
import { nextEvent, record, sleep, waitFor } from './support/util.js'

let gateway
let api
const cleanups = []

before(async () => {
  gateway = await startGateway()
  api = apiOf(gateway)
})

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

after(async () => {
  await gateway?.stop()
})

async function proxy() {
  const p = await startProxy(gateway.port)
  cleanups.push(() => p.close())
  return p
}

function client(url, options = {}) {
  const c = new TetherClient({ url, user: 'carol', ...options })
  cleanups.push(() => c.close())
  return c
}

/** A `ws` WebSocket that remembers every instance, so a test can fire events on the live one. */
function recordingWebSocket() {
  const sockets = []
  class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args)
      sockets.push(this)
    }
  }
  return { RecordingWebSocket, sockets }
}

describe('backoff', () => {
  test('backoffDelay is full jitter over a capped exponential', () => {
    const o = { initialDelayMs: 500, maxDelayMs: 30_000, multiplier: 2 }
    assert.equal(backoffDelay(1, o, () => 1), 500)
    assert.equal(backoffDelay(2, o, () => 1), 1000)
    assert.equal(backoffDelay(3, o, () => 0.5), 1000)
    assert.equal(backoffDelay(7, o, () => 1), 30_000) // 500 * 2^6 = 32000, capped
    assert.equal(backoffDelay(40, o, () => 0.25), 7500)
    assert.equal(backoffDelay(3, o, () => 0), 0)
  })

  test('consecutive attempts wait random() * min(max, initial * multiplier^(n-1)), then give up after maxAttempts', async () => {
    const p = await proxy()
    const randoms = [0.5, 0.75, 0.5, 0.25, 0.9, 0.5]
    let calls = 0
    const c = client(p.wsUrl, {
      reconnect: { initialDelayMs: 100, multiplier: 2, maxDelayMs: 800, maxAttempts: 6 },
      random: () => randoms[calls++ % randoms.length],
    })
    const rec = record(c)
    await c.connect()
    const accepted = p.accepted

    const gaveUp = nextEvent(c, 'error', { predicate: (e) => e.code === 'reconnect-failed', timeoutMs: 10_000 })
    const lostAt = Date.now()
    await p.cut({ refuse: true })
    await gaveUp
    assert.equal(c.state, 'CLOSED')

    const expected = [50, 150, 200, 200, 720, 400] // ceilings 100, 200, 400, 800, 800, 800
    const reconnecting = rec.timed('reconnecting')
    assert.deepEqual(reconnecting.map((e) => e.payload.attempt), [1, 2, 3, 4, 5, 6])
    assert.deepEqual(reconnecting.map((e) => e.payload.delayMs), expected)
    assert.equal(reconnecting[0].payload.reason, 'close:1006')
    assert.ok(reconnecting[0].at - lostAt < 200, 'the loss is noticed at once')
    // Each attempt starts after its delay and fails at once (refused), scheduling the next.
    for (let i = 0; i + 1 < reconnecting.length; i++) {
      const gap = reconnecting[i + 1].at - reconnecting[i].at
      assert.ok(gap >= expected[i] - 5 && gap <= expected[i] + 250, `attempt ${i + 2} came ${gap} ms after attempt ${i + 1} (delay ${expected[i]})`)
    }
    const closedAt = rec.timed('state').at(-1).at
    const lastGap = closedAt - reconnecting.at(-1).at
    assert.ok(lastGap >= expected.at(-1) - 5 && lastGap <= expected.at(-1) + 250, `gave up ${lastGap} ms after the last attempt`)
    assert.equal(c.reconnectAttempts, 6)
    assert.equal(p.accepted, accepted, 'every attempt was refused')
    assert.deepEqual(rec.states(), ['CONNECTING', 'CONNECTED', 'RECONNECTING', 'CLOSED'])
  })

  test('the backoff starts over after a successful reconnect', async () => {
    const p = await proxy()
    const c = client(p.wsUrl, { reconnect: { initialDelayMs: 100, multiplier: 2, maxDelayMs: 1000 }, random: () => 0.5 })
    const rec = record(c)
    await c.connect()
    await p.cut({ refuse: true })
    await waitFor(() => rec.of('reconnecting').length === 3, { what: '3 attempts' })
    const resumed = nextEvent(c, 'resumed')
    await p.restore()
    await resumed
    assert.equal(c.reconnectAttempts, 0)
    const again = nextEvent(c, 'reconnecting')
    c.dropConnection()
    assert.deepEqual(await again, { attempt: 1, delayMs: 50, reason: 'dropped' })
    await nextEvent(c, 'resumed')
    assert.deepEqual(rec.of('reconnecting').map((e) => e.delayMs), [50, 100, 200, 50])
  })
})

describe('exactly one reconnect in flight', () => {
  let savedWindow
  afterEach(() => {
    if (savedWindow === undefined) delete globalThis.window
    else globalThis.window = savedWindow
  })

  /** A browser-like window whose online/offline events the test fires. */
  function fakeWindow() {
    savedWindow = globalThis.window
    const w = new EventTarget()
    globalThis.window = w
    return w
  }

  test('read timeout + close + error + offline + online at once: one new connection', async () => {
    const w = fakeWindow()
    const { RecordingWebSocket, sockets } = recordingWebSocket()
    const p = await proxy()
    // random 0: every reconnect is immediate, so a second one would show at once.
    const c = client(p.wsUrl, { WebSocketImpl: RecordingWebSocket, random: () => 0 })
    const rec = record(c)
    await c.connect()
    await api.publish(c.sessionId, { n: 1 })
    await waitFor(() => c.lastSeq === 1, { what: 'seq 1' })
    const accepted = p.accepted
    const dead = sockets.at(-1)

    // When the read deadline declares the link dead, everything else fires in the same tick.
    c.once('state', ({ to }) => {
      assert.equal(to, 'RECONNECTING')
      dead.emit('error', new Error('ECONNRESET'))
      dead.emit('close', 1006, Buffer.alloc(0))
      w.dispatchEvent(new Event('offline'))
      w.dispatchEvent(new Event('online'))
      c.dropConnection()
    })
    p.stall('both')
    await api.publish(c.sessionId, { n: 2 })
    const reconnecting = await nextEvent(c, 'reconnecting', { timeoutMs: 8000 })
    assert.equal(reconnecting.reason, 'read-timeout')
    await nextEvent(c, 'resumed', { timeoutMs: 5000 })
    await waitFor(() => c.lastSeq === 2, { what: 'seq 2' })
    await sleep(1000)

    assert.equal(p.accepted, accepted + 1, 'exactly one new connection at the proxy')
    assert.equal(sockets.length, 2)
    assert.equal(rec.of('reconnecting').length, 1)
    assert.equal(rec.of('resumed').length, 1)
    assert.equal(c.state, 'CONNECTED')
    assert.deepEqual(rec.of('message').map((m) => m.seq), [1, 2])
  })

  test('close + error + drop + offline + online on a live link at once: one new connection', async () => {
    const w = fakeWindow()
    const { RecordingWebSocket, sockets } = recordingWebSocket()
    const p = await proxy()
    const c = client(p.wsUrl, { WebSocketImpl: RecordingWebSocket, random: () => 0 })
    const rec = record(c)
    await c.connect()
    const accepted = p.accepted
    const live = sockets.at(-1)

    live.emit('close', 1006, Buffer.alloc(0))
    live.emit('error', new Error('ECONNRESET'))
    c.dropConnection()
    w.dispatchEvent(new Event('offline'))
    w.dispatchEvent(new Event('online'))
    await p.cut() // and the real TCP connection dies too

    await nextEvent(c, 'resumed')
    await sleep(1000)
    assert.equal(p.accepted, accepted + 1, 'exactly one new connection at the proxy')
    assert.equal(sockets.length, 2)
    assert.equal(rec.of('reconnecting').length, 1)
    assert.equal(rec.of('reconnecting')[0].reason, 'close:1006')
    assert.equal(c.state, 'CONNECTED')
  })

  test('online cuts a long backoff short; offline counts as a dead link', async () => {
    const w = fakeWindow()
    const p = await proxy()
    const c = client(p.wsUrl, { reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 }, random: () => 1 })
    const rec = record(c)
    await c.connect()
    const accepted = p.accepted

    w.dispatchEvent(new Event('offline'))
    assert.equal(c.state, 'RECONNECTING')
    assert.deepEqual(rec.of('reconnecting'), [{ attempt: 1, delayMs: 60_000, reason: 'offline' }])
    await sleep(300)
    assert.equal(p.accepted, accepted, 'waits for its backoff')

    const resumed = nextEvent(c, 'resumed', { timeoutMs: 3000 })
    w.dispatchEvent(new Event('online'))
    w.dispatchEvent(new Event('online'))
    await resumed
    await sleep(300)
    assert.equal(p.accepted, accepted + 1)
  })
})

describe('connect failures', () => {
  test('auth failure (close 4005) rejects connect() and does not reconnect', async () => {
    const p = await proxy()
    const c = new TetherClient({ url: p.wsUrl, random: () => 0 }) // dev mode needs a user
    cleanups.push(() => c.close())
    const rec = record(c)
    await assert.rejects(c.connect(), (e) => e.code === 'auth-failed' && e.closeCode === 4005)
    assert.equal(c.state, 'CLOSED')
    assert.ok(rec.of('error').some((e) => e.code === 'auth-failed'), 'the error frame is reported')
    await sleep(500)
    assert.equal(p.accepted, 1)
    assert.deepEqual(rec.states(), ['CONNECTING', 'CLOSED'])
  })

  test('a hello the gateway refuses (bad-frame) rejects connect() with that error', async () => {
    const c = client(gateway.wsUrl, { user: 'bad\u0007name' })
    const rec = record(c)
    await assert.rejects(c.connect(), (e) => e.code === 'bad-frame')
    assert.equal(c.state, 'CLOSED')
    assert.equal(rec.of('error').filter((e) => e.code === 'bad-frame').length, 1)
  })

  test('connect() rejects when no welcome comes within connectTimeoutMs', async () => {
    const p = await proxy()
    p.stall('both', { newConnections: true })
    const c = client(p.wsUrl, { connectTimeoutMs: 700, random: () => 0 })
    const started = Date.now()
    await assert.rejects(c.connect(), (e) => e.code === 'connect-timeout')
    const took = Date.now() - started
    assert.ok(took >= 690 && took < 1500, `took ${took} ms`)
    assert.equal(c.state, 'CLOSED')
    await sleep(300)
    assert.equal(p.accepted, 1)
  })

  test('connect() rejects when the gateway is not there', async () => {
    const p = await proxy()
    await p.refuse()
    const c = client(p.wsUrl)
    await assert.rejects(c.connect(), (e) => e.code === 'transport')
    assert.equal(c.state, 'CLOSED')
  })
})
