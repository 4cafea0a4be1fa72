// The SDK against a scripted in-process server (no gateway): the close-code policy, duplicate
// suppression, lazy acks, the resume frame and re-sends, for the cases a real gateway does not
// produce on demand (1011, 1012, 4009, a duplicated seq, ...).
import { after, afterEach, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { WebSocketServer } from 'ws'
import { TetherClient } from '../dist/tether.js'
import { nextEvent, record, sleep, waitFor } from './support/util.js'

/** A WebSocket server whose test reads the client's frames and answers by hand. */
class ScriptedServer {
  constructor() {
    this.connections = []
    this.waiters = []
  }
  async start() {
    this.wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    await new Promise((r) => this.wss.once('listening', r))
    this.url = `ws://127.0.0.1:${this.wss.address().port}/ws`
    this.wss.on('connection', (ws) => {
      const conn = new ScriptedConnection(ws)
      this.connections.push(conn)
      for (const w of this.waiters.splice(0)) w()
    })
  }
  /** The connection number `index` (0-based), once it exists. */
  async connection(index, timeoutMs = 5000) {
    await waitFor(() => this.connections.length > index, { timeoutMs, what: `connection #${index + 1}` })
    return this.connections[index]
  }
  async stop() {
    for (const c of this.connections) c.ws.terminate()
    await new Promise((r) => this.wss.close(r))
  }
}

class ScriptedConnection {
  constructor(ws) {
    this.ws = ws
    this.frames = []
    this.read = 0
    ws.on('message', (data) => this.frames.push(JSON.parse(data.toString())))
    this.closed = new Promise((r) => ws.on('close', r))
  }
  /** The next frame the client sent that is not a ping or an ack (unless asked for). */
  async next({ skip = ['ping', 'ack'], timeoutMs = 3000 } = {}) {
    for (;;) {
      await waitFor(() => this.frames.length > this.read, { timeoutMs, what: 'a client frame' })
      const frame = this.frames[this.read++]
      if (!skip.includes(frame.type)) return frame
    }
  }
  acks() {
    return this.frames.filter((f) => f.type === 'ack').map((f) => f.seq)
  }
  send(frame) {
    this.ws.send(JSON.stringify(frame))
  }
  welcome(fields = {}) {
    this.send({
      type: 'welcome',
      sessionId: 's_test',
      resumeToken: 'r_secret',
      resumed: false,
      reason: 'new',
      replay: 0,
      lastSeq: 0,
      clientSeq: 0,
      lost: 0,
      heartbeat: { interval: 60_000, timeout: 120_000 },
      grace: 120_000,
      rooms: [],
      user: 'dave',
      ...fields,
    })
  }
  msg(seq, data = { seq }) {
    this.send({ type: 'msg', seq, data, from: 'backend', ts: 1 })
  }
}

let server
const cleanups = []
before(async () => {
  server = new ScriptedServer()
  await server.start()
})
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup()
  for (const c of server.connections.splice(0)) c.ws.terminate()
})
after(async () => {
  await server.stop()
})

function client(options = {}) {
  const c = new TetherClient({ url: server.url, user: 'dave', token: 'jwt-1', random: () => 0, ...options })
  cleanups.push(() => c.close())
  return c
}

/** Connects a client and completes its hello handshake; returns the client and connection #1. */
async function connected(options) {
  const c = client(options)
  const connecting = c.connect()
  const conn = await server.connection(server.connections.length)
  const hello = await conn.next()
  assert.deepEqual(hello, { type: 'hello', user: 'dave', token: 'jwt-1', client: 'sdk-js/1.0' })
  conn.welcome()
  await connecting
  return { c, conn }
}

describe('close codes', () => {
  for (const code of [4001, 4003, 4008, 4009, 1011, 1012, 1000, 1006]) {
    test(`close ${code} → reconnect and resume`, async () => {
      const { c, conn } = await connected()
      const rec = record(c)
      conn.msg(1)
      conn.msg(2)
      await waitFor(() => c.lastSeq === 2, { what: 'seq 2' })
      if (code === 1006) conn.ws.terminate()
      else conn.ws.close(code, 'scripted')
      const second = await server.connection(1)
      const resume = await second.next()
      assert.deepEqual(resume, { type: 'resume', sessionId: 's_test', resumeToken: 'r_secret', lastSeq: 2, user: 'dave', token: 'jwt-1' })
      second.welcome({ resumed: true, reason: 'resumed', lastSeq: 2 })
      await nextEvent(c, 'resumed')
      assert.equal(rec.of('reconnecting')[0].reason, `close:${code}`)
      assert.deepEqual(rec.states(), ['RECONNECTING', 'CONNECTED'])
    })
  }

  for (const [code, kicked] of [
    [4002, 'taken-over'],
    [4004, 'kicked'],
    [4005, null],
  ]) {
    test(`close ${code} → CLOSED, no reconnect`, async () => {
      const { c, conn } = await connected()
      const rec = record(c)
      conn.ws.close(code, 'scripted')
      await waitFor(() => c.state === 'CLOSED', { what: 'CLOSED' })
      await sleep(300)
      assert.equal(server.connections.length, 1)
      assert.equal(rec.of('reconnecting').length, 0)
      assert.deepEqual(rec.of('kicked'), kicked ? [{ reason: kicked }] : [])
    })
  }

  test('1000 after bye → CLOSED, no reconnect', async () => {
    const { c, conn } = await connected()
    const loggedOut = c.logout()
    assert.deepEqual(await conn.next(), { type: 'bye' })
    conn.send({ type: 'bye' })
    conn.ws.close(1000)
    await loggedOut
    assert.equal(c.state, 'CLOSED')
    await sleep(300)
    assert.equal(server.connections.length, 1)
  })

  test('an error answering the resume (rate-limited) fails the attempt at once; the next one backs off', async () => {
    const { c, conn } = await connected({ random: () => 0.5, reconnect: { initialDelayMs: 200 } })
    const rec = record(c)
    conn.ws.terminate()
    const second = await server.connection(1)
    assert.equal((await second.next()).type, 'resume')
    second.send({ type: 'error', code: 'rate-limited', message: 'too many failed resumes' })
    const third = await server.connection(2, 2000)
    assert.equal((await third.next()).type, 'resume')
    third.welcome({ resumed: true, reason: 'resumed' })
    await nextEvent(c, 'resumed')
    assert.deepEqual(rec.of('reconnecting'), [
      { attempt: 1, delayMs: 100, reason: 'close:1006' },
      { attempt: 2, delayMs: 200, reason: 'handshake-refused:rate-limited' },
    ])
    assert.ok(rec.of('error').some((e) => e.code === 'rate-limited'))
  })

  test('a kicked frame is reported once, with its reason', async () => {
    const { c, conn } = await connected()
    const rec = record(c)
    conn.send({ type: 'kicked', reason: 'taken-over' })
    conn.ws.close(4002)
    await waitFor(() => c.state === 'CLOSED', { what: 'CLOSED' })
    await sleep(200)
    assert.deepEqual(rec.of('kicked'), [{ reason: 'taken-over' }])
  })
})

describe('downstream', () => {
  test('a seq at or below lastSeq is never delivered, on one connection or after a resume', async () => {
    const { c, conn } = await connected()
    const rec = record(c)
    for (const seq of [1, 2, 3, 2, 3, 4]) conn.msg(seq)
    await waitFor(() => c.lastSeq === 4, { what: 'seq 4' })
    conn.ws.terminate()
    const second = await server.connection(1)
    assert.equal((await second.next()).lastSeq, 4)
    second.welcome({ resumed: true, reason: 'resumed', lastSeq: 5, replay: 1 })
    for (const seq of [3, 4, 5]) second.msg(seq)
    await waitFor(() => c.lastSeq === 5, { what: 'seq 5' })
    await sleep(100)
    assert.deepEqual(rec.of('message').map((m) => m.seq), [1, 2, 3, 4, 5])
  })

  test('acks are cumulative and lazy: every N messages or after T ms', async () => {
    const { c, conn } = await connected({ ack: { everyMessages: 3, everyMs: 300 } })
    for (let seq = 1; seq <= 7; seq++) conn.msg(seq)
    await waitFor(() => c.lastSeq === 7, { what: 'seq 7' })
    await waitFor(() => conn.acks().length >= 2, { what: 'two acks' })
    assert.deepEqual(conn.acks(), [3, 6])
    assert.equal(c.ackedSeq, 6)
    const started = Date.now()
    await waitFor(() => conn.acks().length === 3, { what: 'the timed ack' })
    const waited = Date.now() - started
    assert.ok(waited >= 200 && waited < 700, `timed ack after ${waited} ms`)
    assert.deepEqual(conn.acks(), [3, 6, 7])
    assert.equal(c.ackedSeq, 7)
    await sleep(400)
    assert.deepEqual(conn.acks(), [3, 6, 7], 'nothing new, no ack')
  })

  test('pings follow the announced interval; pongs give the RTT', async () => {
    const c = client()
    const connecting = c.connect()
    const conn = await server.connection(0)
    await conn.next()
    conn.welcome({ heartbeat: { interval: 100, timeout: 5000 } })
    await connecting
    await sleep(550)
    const pings = conn.frames.filter((f) => f.type === 'ping').length
    assert.ok(pings >= 3 && pings <= 6, `${pings} pings in 550 ms`)
    const pong = nextEvent(c, 'pong')
    await sleep(40)
    conn.send({ type: 'pong' })
    const { rttMs } = await pong
    assert.ok(rttMs >= 0 && c.rttMs === rttMs)
  })
})

describe('upstream', () => {
  test('after a resume, cseqs up to welcome.clientSeq resolve and the rest are re-sent in order', async () => {
    const { c, conn } = await connected()
    const sends = [1, 2, 3, 4].map((n) => c.send('room:r', { n }))
    for (let cseq = 1; cseq <= 4; cseq++) assert.equal((await conn.next()).cseq, cseq)
    conn.send({ type: 'sent', cseq: 1 })
    assert.deepEqual(await sends[0], { cseq: 1 })
    conn.ws.terminate()
    const second = await server.connection(1)
    await second.next()
    second.welcome({ resumed: true, reason: 'resumed', clientSeq: 2 })
    const resent = [await second.next(), await second.next()]
    assert.deepEqual(resent, [
      { type: 'send', cseq: 3, to: 'room:r', data: { n: 3 } },
      { type: 'send', cseq: 4, to: 'room:r', data: { n: 4 } },
    ])
    assert.deepEqual(await sends[1], { cseq: 2 })
    second.send({ type: 'sent', cseq: 3 })
    second.send({ type: 'error', code: 'not-in-room', message: 'join first', cseq: 4 })
    assert.deepEqual(await sends[2], { cseq: 3 })
    await assert.rejects(sends[3], (e) => e.code === 'not-in-room' && e.cseq === 4)
    const next = c.send('room:r', { n: 5 }, { echo: false })
    assert.deepEqual(await second.next(), { type: 'send', cseq: 5, to: 'room:r', data: { n: 5 }, echo: false })
    second.send({ type: 'sent', cseq: 5 })
    await next
  })

  test('a send or room the server could not decode is refused locally, without using up a cseq', async () => {
    const { c, conn } = await connected({ maxFrameBytes: 200 })
    await assert.rejects(c.send('lobby', 1), (e) => e.code === 'bad-frame')
    await assert.rejects(c.send('room:', 1), (e) => e.code === 'bad-frame')
    await assert.rejects(c.send('room:a\u0007b', 1), (e) => e.code === 'bad-frame')
    await assert.rejects(c.send('room:x', undefined), (e) => e.code === 'bad-frame')
    await assert.rejects(c.send('room:x', 'y'.repeat(300)), (e) => e.code === 'frame-too-large')
    await assert.rejects(c.join('r'.repeat(129)), (e) => e.code === 'bad-frame')
    await assert.rejects(c.leave(''), (e) => e.code === 'bad-frame')
    const ok = c.send('user:bob', { fine: true })
    assert.deepEqual(await conn.next(), { type: 'send', cseq: 1, to: 'user:bob', data: { fine: true } })
    conn.send({ type: 'sent', cseq: 1 })
    await ok
  })

  test('a lost session rejects the pending sends and numbers from 1 again', async () => {
    const { c, conn } = await connected()
    const rec = record(c)
    conn.msg(1)
    await waitFor(() => c.lastSeq === 1, { what: 'seq 1' })
    const pending = c.send('room:r', { n: 1 })
    await conn.next()
    conn.ws.terminate()
    const second = await server.connection(1)
    await second.next()
    second.welcome({ sessionId: 's_new', resumeToken: 'r_new', resumed: false, reason: 'expired' })
    await assert.rejects(pending, (e) => e.code === 'session-lost')
    assert.deepEqual(rec.of('session-lost'), [
      { reason: 'expired', lost: 0, sessionId: 's_new', previousSessionId: 's_test', rejectedSends: 1 },
    ])
    assert.equal(c.lastSeq, 0)
    c.send('room:r', { n: 2 }).catch(() => {})
    assert.equal((await second.next()).cseq, 1)
    second.msg(1)
    await waitFor(() => c.lastSeq === 1 && rec.of('message').length === 2, { what: 'seq 1 of the new session' })
    assert.deepEqual(rec.of('message').map((m) => m.seq), [1, 1], 'seq 1 of the old session, then of the new one')
  })

  test('join and leave resolve on joined/left, reject on a room error, and settle from the welcome after a resume', async () => {
    const { c, conn } = await connected()
    const joining = c.join('a')
    assert.deepEqual(await conn.next(), { type: 'join', room: 'a' })
    conn.send({ type: 'joined', room: 'a' })
    await joining
    assert.deepEqual(c.rooms, ['a'])
    const leaving = c.leave('b')
    await conn.next()
    conn.send({ type: 'error', code: 'not-in-room', message: 'no', room: 'b' })
    await assert.rejects(leaving, (e) => e.code === 'not-in-room' && e.room === 'b')

    const joinB = c.join('b') // answered by the resumed session's membership
    const joinC = c.join('c') // not a member after the resume: re-sent
    await conn.next()
    await conn.next()
    conn.ws.terminate()
    const second = await server.connection(1)
    await second.next()
    second.welcome({ resumed: true, reason: 'resumed', rooms: ['a', 'b'] })
    await joinB
    assert.deepEqual(await second.next(), { type: 'join', room: 'c' })
    second.send({ type: 'joined', room: 'c' })
    await joinC
    assert.deepEqual(c.rooms.sort(), ['a', 'b', 'c'])
  })
})

describe('numbering and acks around reconnects', () => {
  test('a send rejected by close() leaves no cseq gap once connect() resumes', async () => {
    const { c, conn } = await connected()
    conn.ws.terminate()
    const second = await server.connection(1)
    assert.equal((await second.next()).type, 'resume') // no welcome: the client stays RECONNECTING
    const lostSend = c.send('user:bob', { n: 1 }) // pending, never transmitted
    c.close()
    await assert.rejects(lostSend, (e) => e.code === 'closed')
    const connecting = c.connect()
    const early = c.send('user:bob', { n: 2 }) // before the welcome: numbered from the stale counter
    const third = await server.connection(2)
    assert.equal((await third.next()).type, 'resume')
    third.welcome({ resumed: true, reason: 'resumed', clientSeq: 0 }) // the server never saw cseq 1
    await connecting
    c.send('user:bob', { n: 3 }).catch(() => {})
    const sent = [await third.next(), await third.next()]
    assert.deepEqual(sent.map((f) => [f.cseq, f.data.n]), [[1, 2], [2, 3]], 'numbered from welcome.clientSeq, in order')
    third.send({ type: 'sent', cseq: 1 })
    assert.deepEqual(await early, { cseq: 1 })
  })

  test('a send made in a resumed listener goes after the re-sent ones', async () => {
    const { c, conn } = await connected()
    c.send('user:bob', { n: 1 }).catch(() => {})
    assert.equal((await conn.next()).cseq, 1)
    conn.ws.terminate()
    const second = await server.connection(1)
    assert.equal((await second.next()).type, 'resume')
    c.once('resumed', () => {
      c.send('user:bob', { n: 2 }).catch(() => {})
    })
    second.welcome({ resumed: true, reason: 'resumed', clientSeq: 0 })
    assert.deepEqual([(await second.next()).cseq, (await second.next()).cseq], [1, 2])
  })

  test('a send the server refused while the link was down is rejected, not taken for accepted', async () => {
    const { c, conn } = await connected()
    const refused = c.send('room:r', { n: 1 })
    assert.equal((await conn.next()).cseq, 1)
    conn.ws.terminate() // the error frame for cseq 1 is lost with the link
    const second = await server.connection(1)
    assert.equal((await second.next()).type, 'resume')
    second.welcome({ resumed: true, reason: 'resumed', clientSeq: 1, refused: [{ cseq: 1, code: 'not-in-room' }] })
    await assert.rejects(refused, (e) => e.code === 'not-in-room' && e.cseq === 1)
    c.send('room:r', { n: 2 }).catch(() => {})
    assert.equal((await second.next()).cseq, 2)
  })

  test('close() sends the ack of what was delivered before it closes', async () => {
    const { c, conn } = await connected({ ack: { everyMessages: 100, everyMs: 60_000 } })
    conn.msg(1)
    await waitFor(() => c.lastSeq === 1, { what: 'seq 1' })
    c.close()
    await conn.closed
    assert.deepEqual(conn.acks(), [1])
  })
})

describe('lifecycle', () => {
  test('close() keeps the session; connect() resumes it', async () => {
    const { c, conn } = await connected()
    const rec = record(c)
    conn.msg(1)
    await waitFor(() => c.lastSeq === 1, { what: 'seq 1' })
    c.close()
    assert.equal(c.state, 'CLOSED')
    assert.deepEqual(rec.states(), ['CLOSING', 'CLOSED'])
    await conn.closed
    await sleep(200)
    assert.equal(server.connections.length, 1, 'no reconnect after close()')
    const connecting = c.connect()
    const second = await server.connection(1)
    assert.deepEqual(await second.next(), { type: 'resume', sessionId: 's_test', resumeToken: 'r_secret', lastSeq: 1, user: 'dave', token: 'jwt-1' })
    second.welcome({ resumed: true, reason: 'resumed', lastSeq: 1 })
    await connecting
    assert.equal(c.state, 'CONNECTED')
  })

  test('a token function is asked for a fresh token at every handshake', async () => {
    let n = 0
    const c = client({ token: async () => `jwt-${++n}` })
    const connecting = c.connect()
    const conn = await server.connection(0)
    assert.equal((await conn.next()).token, 'jwt-1')
    conn.welcome()
    await connecting
    conn.ws.terminate()
    const second = await server.connection(1)
    const resume = await second.next()
    assert.equal(resume.type, 'resume')
    assert.equal(resume.token, 'jwt-2')
  })

  test('sends before connect() or after close are refused', async () => {
    const c = client()
    await assert.rejects(c.send('room:r', 1), (e) => e.code === 'not-connected')
    await assert.rejects(c.join('r'), (e) => e.code === 'not-connected')
    assert.equal(c.state, 'INIT')
  })
})
