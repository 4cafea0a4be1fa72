// Session continuity against the real gateway: drop + resume, half-open links, upstream
// exactly-once, lost sessions, logout and takeover. One gateway for the whole file; every test
// has its own proxy between its client and the gateway.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { TetherClient } from '../dist/tether.js'
import { api as apiOf, startGateway } from './support/gateway.js'
import { startProxy } from './support/proxy.js'
import { nextEvent, rawConnection, record, sleep, waitFor } from './support/util.js'

let gateway
let api
const cleanups = []

before(async () => {
  // A small outbox, so that the overflow test can make the server drop messages.
  gateway = await startGateway({ TETHER_OUTBOX_MAX_MESSAGES: '20' })
  api = apiOf(gateway)
})

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
  await gateway?.stop()
})

async function proxy() {
  const p = await startProxy(gateway.port)
  cleanups.push(() => p.close())
  return p
}

function client(url, options = {}) {
  const c = new TetherClient({
    url,
    user: 'alice',
    reconnect: { initialDelayMs: 100, maxDelayMs: 300 },
    ack: { everyMessages: 5, everyMs: 200 },
    random: () => 0.999,
    ...options,
  })
  cleanups.push(() => c.close())
  return c
}

describe('resume', () => {
  test('drop + resume: everything published while the link was down arrives exactly once, in order', async () => {
    const p = await proxy()
    const c = client(p.wsUrl)
    const rec = record(c)
    await c.connect()
    const sessionId = c.sessionId
    assert.match(sessionId, /^s_/)

    for (let i = 1; i <= 5; i++) assert.equal(await api.publish(sessionId, { n: i }), i)
    await waitFor(() => c.lastSeq === 5, { what: 'the 5 live messages' })

    // Cut the link and refuse reconnects. Publish at once (the server may still believe the
    // socket is alive and write into it) and again once the session is detached.
    await p.cut({ refuse: true })
    for (let i = 6; i <= 10; i++) assert.equal(await api.publish(sessionId, { n: i }), i)
    await waitFor(async () => (await api.session(sessionId)).body.state === 'detached', { what: 'session detached' })
    for (let i = 11; i <= 15; i++) assert.equal(await api.publish(sessionId, { n: i }), i)
    await waitFor(() => rec.of('reconnecting').length >= 2, { what: 'two refused reconnect attempts' })
    assert.equal(c.state, 'RECONNECTING')
    assert.equal(c.lastSeq, 5)

    const resumed = nextEvent(c, 'resumed')
    await p.restore()
    assert.deepEqual(await resumed, { replay: 10, lost: 0, sessionId })
    await waitFor(() => c.lastSeq === 15, { what: 'the 10 replayed messages' })
    await sleep(300) // a duplicate would arrive right behind

    const messages = rec.of('message')
    assert.deepEqual(messages.map((m) => m.seq), Array.from({ length: 15 }, (_, i) => i + 1))
    assert.deepEqual(messages.map((m) => m.data.n), Array.from({ length: 15 }, (_, i) => i + 1))
    assert.ok(messages.every((m) => m.from === 'backend' && typeof m.ts === 'number'))
    assert.equal(c.sessionId, sessionId)
    assert.equal(rec.of('session-lost').length, 0)
    assert.deepEqual(rec.states(), ['CONNECTING', 'CONNECTED', 'RECONNECTING', 'CONNECTED'])

    // Lazy acks reach the server.
    await waitFor(() => c.ackedSeq === 15, { what: 'ack of 15' })
    await waitFor(async () => (await api.session(sessionId)).body.ackedSeq === 15, { what: 'the server to see ack 15' })
  })

  test('messages the outbox dropped while away are reported as lost; the rest arrive once, in order', async () => {
    const p = await proxy()
    const c = client(p.wsUrl)
    const rec = record(c)
    await c.connect()
    const sessionId = c.sessionId
    await api.publish(sessionId, { n: 1 })
    await waitFor(() => c.ackedSeq === 1, { what: 'seq 1 acked' })

    await p.cut({ refuse: true })
    await waitFor(async () => (await api.session(sessionId)).body.state === 'detached', { what: 'session detached' })
    for (let i = 2; i <= 26; i++) await api.publish(sessionId, { n: i }) // 25 > the outbox's 20

    const resumed = nextEvent(c, 'resumed')
    await p.restore()
    assert.deepEqual(await resumed, { replay: 20, lost: 5, sessionId })
    await waitFor(() => c.lastSeq === 26, { what: 'seq 26' })
    await sleep(300)
    // The first replayed seq is lastSeq + lost + 1 (PROTOCOL.md 8.2).
    assert.deepEqual(rec.of('message').map((m) => m.seq), [1, ...Array.from({ length: 20 }, (_, i) => i + 7)])
  })

  test('a half-open link is detected by the read deadline and the session resumes', async () => {
    const p = await proxy()
    const c = client(p.wsUrl)
    const rec = record(c)
    await c.connect()
    const welcome = rec.of('welcome')[0]
    assert.deepEqual(welcome.heartbeat, { interval: 1000, timeout: 3000 })
    await nextEvent(c, 'pong')
    const acceptedBefore = p.accepted

    const stalledAt = Date.now()
    p.stall('both') // sockets stay open, nothing gets through
    for (let i = 1; i <= 3; i++) await api.publish(c.sessionId, { n: i })
    const reconnecting = await nextEvent(c, 'reconnecting', { timeoutMs: 8000 })
    const detectedAfter = Date.now() - stalledAt
    assert.equal(reconnecting.reason, 'read-timeout')
    // The last pong came at most one ping interval before the stall.
    assert.ok(detectedAfter >= 1900 && detectedAfter <= 3000 + 700, `detected after ${detectedAfter} ms`)

    await nextEvent(c, 'resumed', { timeoutMs: 5000 })
    await waitFor(() => c.lastSeq === 3, { what: 'the 3 messages published during the stall' })
    await sleep(300)
    assert.deepEqual(rec.of('message').map((m) => m.seq), [1, 2, 3])
    assert.equal(p.accepted, acceptedBefore + 1)
    assert.equal(c.state, 'CONNECTED')
  })

  test('upstream exactly-once: unconfirmed and offline sends are delivered once and resolve after the resume', async () => {
    const receiver = client(gateway.wsUrl, { user: 'bob' })
    const received = record(receiver)
    await receiver.connect()
    await receiver.join('up')

    const p = await proxy()
    const sender = client(p.wsUrl)
    const sent = record(sender)
    await sender.connect()
    await sender.join('up')

    // 1. The sends reach the server but its `sent` answers are lost (downstream stalled).
    p.stall('down')
    const settled = []
    const first = [1, 2, 3].map((n) => {
      const promise = sender.send('room:up', { n }, { echo: false })
      promise.then((r) => settled.push(r.cseq), () => settled.push(`rejected ${n}`))
      return promise
    })
    await waitFor(() => received.of('message').length === 3, { what: 'the receiver to get 1..3' })
    await sleep(200)
    assert.deepEqual(settled, [], 'no send can be confirmed while the answers are lost')

    // 2. The link dies; more sends while it is down.
    await p.cut({ refuse: true })
    await waitFor(() => sender.state === 'RECONNECTING', { what: 'RECONNECTING' })
    const second = [4, 5, 6].map((n) => sender.send('room:up', { n }, { echo: false }))
    await sleep(200)

    // 3. Back: the resume says which cseqs the server has; the rest are re-sent in order.
    await p.restore()
    const results = await Promise.all([...first, ...second])
    assert.deepEqual(results.map((r) => r.cseq), [1, 2, 3, 4, 5, 6])
    const resumedWelcome = sent.of('welcome').at(-1)
    assert.equal(resumedWelcome.resumed, true)
    assert.equal(resumedWelcome.clientSeq, 3)

    await waitFor(() => received.of('message').length >= 6, { what: 'the receiver to get 1..6' })
    await sleep(500) // a duplicate would arrive right behind
    const messages = received.of('message')
    assert.deepEqual(messages.map((m) => m.data.n), [1, 2, 3, 4, 5, 6])
    assert.ok(messages.every((m) => m.from === 'user:alice' && m.room === 'up'))
    assert.equal(sent.of('message').length, 0, 'echo:false keeps the sender out')
  })

  test('session lost: resuming an ended session creates a new one, rejects pending sends and resets seqs', async () => {
    const p = await proxy()
    const c = client(p.wsUrl)
    const rec = record(c)
    await c.connect()
    const oldId = c.sessionId
    for (let i = 1; i <= 3; i++) await api.publish(oldId, { n: i })
    await waitFor(() => c.lastSeq === 3, { what: '3 messages' })

    await p.cut({ refuse: true })
    await waitFor(() => c.state === 'RECONNECTING', { what: 'RECONNECTING' })
    assert.equal((await api.kick(oldId)).status, 204) // ends the session while the client is away
    const pending = c.send(`session:${oldId}`, { n: 'never' })
    const rejection = assert.rejects(pending, (e) => e.code === 'session-lost' && e.cseq === 1)

    const lost = nextEvent(c, 'session-lost')
    await p.restore()
    const event = await lost
    assert.equal(event.reason, 'ended')
    assert.equal(event.previousSessionId, oldId)
    assert.notEqual(event.sessionId, oldId)
    assert.equal(event.sessionId, c.sessionId)
    assert.equal(event.rejectedSends, 1)
    await rejection
    assert.equal(c.lastSeq, 0)
    assert.equal(c.ackedSeq, 0)
    assert.equal(c.state, 'CONNECTED')
    assert.equal(c.userId, 'alice')
    assert.equal(rec.of('resumed').length, 0)

    // The new session numbers from 1 again, and its messages are delivered (not taken for duplicates).
    assert.equal(await api.publish(c.sessionId, { n: 'new' }), 1)
    await waitFor(() => c.lastSeq === 1, { what: 'seq 1 of the new session' })
    assert.deepEqual(rec.of('message').at(-1).data, { n: 'new' })
    assert.deepEqual((await c.send(`session:${c.sessionId}`, { n: 'self' })).cseq, 1)
  })
})

describe('logout', () => {
  test('logout sends bye, never reconnects, and a later resume of the session is ended', async () => {
    const p = await proxy()
    const c = client(p.wsUrl, { random: () => 0 })
    const rec = record(c)
    await c.connect()
    const { sessionId, resumeToken } = c
    const accepted = p.accepted

    await c.logout()
    assert.equal(c.state, 'CLOSED')
    assert.deepEqual(rec.states(), ['CONNECTING', 'CONNECTED', 'CLOSING', 'CLOSED'])
    await sleep(1000)
    assert.equal(p.accepted, accepted, 'no reconnect after logout')
    assert.equal(rec.of('reconnecting').length, 0)
    await assert.rejects(c.send('room:x', 1), (e) => e.code === 'not-connected')

    const raw = await rawConnection(gateway.wsUrl, { type: 'resume', sessionId, resumeToken, lastSeq: 0, user: 'alice' })
    const welcome = await raw.next('welcome')
    assert.equal(welcome.resumed, false)
    assert.equal(welcome.reason, 'ended')
    raw.close()
  })

  test('logout while the link is down resumes just to say bye', async () => {
    const p = await proxy()
    const c = client(p.wsUrl, { reconnect: { initialDelayMs: 60_000 } })
    const rec = record(c)
    await c.connect()
    const { sessionId, resumeToken } = c
    await p.cut()
    await waitFor(() => c.state === 'RECONNECTING', { what: 'RECONNECTING' })
    const accepted = p.accepted

    await c.logout()
    assert.equal(c.state, 'CLOSED')
    assert.equal(p.accepted, accepted + 1, 'one connection, for the bye')
    assert.deepEqual(rec.states(), ['CONNECTING', 'CONNECTED', 'RECONNECTING', 'CLOSING', 'CLOSED'])

    const raw = await rawConnection(gateway.wsUrl, { type: 'resume', sessionId, resumeToken, lastSeq: 0, user: 'alice' })
    assert.equal((await raw.next('welcome')).reason, 'ended')
    raw.close()
  })
})

describe('takeover and kick', () => {
  test('another connection resuming the session takes it over: the client is kicked and stays CLOSED', async () => {
    const p = await proxy()
    const c = client(p.wsUrl, { random: () => 0 }) // a wrong reconnect would be immediate
    const rec = record(c)
    await c.connect()
    await api.publish(c.sessionId, { n: 1 })
    await waitFor(() => c.lastSeq === 1, { what: 'seq 1' })
    const accepted = p.accepted

    const kicked = nextEvent(c, 'kicked')
    const raw = await rawConnection(gateway.wsUrl, {
      type: 'resume',
      sessionId: c.sessionId,
      resumeToken: c.resumeToken,
      lastSeq: c.lastSeq,
      user: 'alice',
    })
    const welcome = await raw.next('welcome')
    assert.equal(welcome.resumed, true)
    assert.equal(welcome.sessionId, c.sessionId)
    assert.deepEqual(await kicked, { reason: 'taken-over' })
    assert.equal(c.state, 'CLOSED')
    await sleep(1000)
    assert.equal(p.accepted, accepted, 'no reconnect after a takeover')
    assert.equal(rec.of('reconnecting').length, 0)
    assert.equal(c.state, 'CLOSED')
    assert.equal(rec.states().at(-1), 'CLOSED')
    raw.close()
  })

  test('a backend kick closes the client without a reconnect', async () => {
    const p = await proxy()
    const c = client(p.wsUrl, { random: () => 0 })
    const rec = record(c)
    await c.connect()
    const accepted = p.accepted
    const kicked = nextEvent(c, 'kicked')
    assert.equal((await api.kick(c.sessionId)).status, 204)
    assert.deepEqual(await kicked, { reason: 'kicked' })
    assert.equal(c.state, 'CLOSED')
    await sleep(700)
    assert.equal(p.accepted, accepted)
    assert.equal(rec.of('reconnecting').length, 0)
  })
})
