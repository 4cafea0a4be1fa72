/**
 * Tether client SDK: a WebSocket session that survives disconnects.
 *
 * The client keeps one logical session with the gateway across any number of sockets: when the
 * link dies (closed, failed, silent for heartbeat.timeout, or the browser went offline) it
 * reconnects with exponential backoff and full jitter, resumes the session with the highest seq
 * it delivered, drops duplicates, acks lazily, and re-sends the upstream messages the server has
 * not confirmed, so that both directions are exactly-once. See docs/PROTOCOL.md of the gateway.
 *
 * Runs unbundled in browsers (no dependencies) and in Node >= 20 (uses globalThis.WebSocket when
 * present, else the optional `ws` package, imported lazily).
 */
import { Emitter } from './emitter.js'
import {
  CloseCode,
  SDK_VERSION,
  TetherError,
  type ErrorFrame,
  type MsgFrame,
  type SessionLostReason,
  type WelcomeFrame,
} from './protocol.js'

export { Emitter } from './emitter.js'
export { CloseCode, SDK_VERSION, TetherError } from './protocol.js'
export type { ErrorFrame, MsgFrame, SessionLostReason, WelcomeFrame } from './protocol.js'

export type State = 'INIT' | 'CONNECTING' | 'CONNECTED' | 'RECONNECTING' | 'CLOSING' | 'CLOSED'

export interface ReconnectOptions {
  /** Backoff base of the first reconnect attempt, ms. Default 500. */
  initialDelayMs?: number
  /** Upper bound of the backoff, ms. Default 30000. */
  maxDelayMs?: number
  /** Growth factor per attempt. Default 2. */
  multiplier?: number
  /** Reconnect attempts in a row before giving up (CLOSED, error `reconnect-failed`). Default Infinity. */
  maxAttempts?: number
}

export interface AckOptions {
  /** Ack after this many delivered messages. Default 20. */
  everyMessages?: number
  /** Ack at most this long after the first unacked delivery, ms. Default 1000. */
  everyMs?: number
}

export interface TetherClientOptions {
  /** WebSocket URL of the gateway, e.g. `ws://localhost:8080/ws`. */
  url: string
  /** The user (the credential in the gateway's `dev` auth mode). */
  user?: string
  /** The JWT (the credential in `hmac` mode), or a function returning a fresh one per handshake. */
  token?: string | (() => string | Promise<string>)
  reconnect?: ReconnectOptions
  ack?: AckOptions
  /** How long opening a socket plus its handshake may take, ms. Default 10000. */
  connectTimeoutMs?: number
  /**
   * Largest frame send() accepts, in UTF-8 bytes: the gateway's gateway.limits.max-frame-bytes.
   * A bigger one would be refused with close 4003 after every resume, so it is rejected up
   * front (code `frame-too-large`). Default 65536.
   */
  maxFrameBytes?: number
  /** WebSocket constructor to use (tests, custom transports). */
  WebSocketImpl?: any
  /** Source of randomness for the backoff jitter, in [0, 1). Default Math.random. */
  random?: () => number
}

export interface TetherMessage {
  seq: number
  data: any
  from: string
  room?: string
  ts: number
}

export interface TetherEvents {
  state: { from: State; to: State }
  message: TetherMessage
  /** The same session continued after a reconnect. */
  resumed: { replay: number; lost: number; sessionId: string }
  /** A resume did not continue its session; a new session was created. */
  'session-lost': {
    reason: SessionLostReason
    /** `lost` of the new session's welcome (what the server reports as dropped; 0 for a new session). */
    lost: number
    /** The new session. */
    sessionId: string
    /** The session that was lost. */
    previousSessionId: string
    /** Unconfirmed sends that were rejected with `session-lost`. */
    rejectedSends: number
  }
  /** The session was taken over (`taken-over`) or ended by the backend (`kicked`); the client is CLOSED. */
  kicked: { reason: string }
  error: TetherError
  pong: { rttMs: number }
  /** A reconnect attempt is scheduled: `attempt` is 1 for the first one after a loss. */
  reconnecting: { attempt: number; delayMs: number; reason: string }
  /** Every welcome frame, as received. */
  welcome: WelcomeFrame
}

export interface SendOptions {
  /** For room targets: false keeps the message from coming back to this session. Default true. */
  echo?: boolean
}

/** What `send()` resolves with. */
export interface SendResult {
  cseq: number
}

/** The WebSocket surface the SDK uses (the browser's, Node's, or `ws`). */
interface SocketLike {
  readyState: number
  onopen: ((ev: any) => void) | null
  onmessage: ((ev: any) => void) | null
  onerror: ((ev: any) => void) | null
  onclose: ((ev: any) => void) | null
  send(data: string): void
  close(code?: number, reason?: string): void
  terminate?: () => void
}

interface PendingSend {
  cseq: number
  frame: { type: 'send'; cseq: number; to: string; data: any; echo?: boolean }
  resolve: (r: SendResult) => void
  reject: (e: TetherError) => void
}

interface RoomOp {
  kind: 'join' | 'leave'
  room: string
  sent: boolean
  resolve: () => void
  reject: (e: TetherError) => void
}

/** One socket, from its creation to its loss. At most one exists at a time. */
interface Link {
  id: number
  ws: SocketLike | null
  handshake: 'hello' | 'resume' | null
  /** lastSeq the resume handshake carried. */
  resumeLastSeq: number
  welcomed: boolean
  byeRequested: boolean
  byeReceived: boolean
  lastFrameAt: number
  readTimer: ReturnType<typeof setTimeout> | null
  pingTimer: ReturnType<typeof setInterval> | null
  pingsInFlight: number[]
}

const OPEN = 1
const noop = () => {}

const DEFAULTS = {
  reconnect: { initialDelayMs: 500, maxDelayMs: 30000, multiplier: 2, maxAttempts: Infinity },
  ack: { everyMessages: 20, everyMs: 1000 },
  connectTimeoutMs: 10000,
  maxFrameBytes: 64 * 1024,
}

const TARGET = /^(session|user|room):(.+)$/s
const utf8 = new TextEncoder()

/** Room names and user ids: 1–128 characters, no control characters (docs/PROTOCOL.md 8.2). */
function validName(name: unknown): name is string {
  return typeof name === 'string' && name.length >= 1 && name.length <= 128 && !/[\u0000-\u001f\u007f-\u009f]/.test(name)
}

/** Close codes after which the client does not reconnect (1000 only after a bye). */
const FINAL_CLOSE_CODES = new Set<number>([CloseCode.TAKEN_OVER, CloseCode.KICKED, CloseCode.AUTH_FAILED])

/**
 * The backoff delay before reconnect attempt `attempt` (1-based), with full jitter:
 * `random() * min(maxDelayMs, initialDelayMs * multiplier^(attempt-1))`.
 */
export function backoffDelay(attempt: number, options: Required<Omit<ReconnectOptions, 'maxAttempts'>>, random: () => number): number {
  const ceiling = Math.min(options.maxDelayMs, options.initialDelayMs * Math.pow(options.multiplier, attempt - 1))
  return Math.max(0, random() * ceiling)
}

export class TetherClient extends Emitter<TetherEvents> {
  private readonly url: string
  private readonly user: string | undefined
  private readonly token: TetherClientOptions['token']
  private readonly reconnectOptions: Required<ReconnectOptions>
  private readonly ackOptions: Required<AckOptions>
  private readonly connectTimeoutMs: number
  private readonly maxFrameBytes: number
  private readonly random: () => number
  private WebSocketImpl: any

  private _state: State = 'INIT'
  private link: Link | null = null
  private linkIds = 0
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null
  private _reconnectAttempts = 0

  // The session: kept in memory only.
  private _sessionId: string | null = null
  private _resumeToken: string | null = null
  private _userId: string | null = null
  /** False once the session ended (logout, kick) or was given up: the next connect() says hello. */
  private sessionUsable = false

  // Downstream
  private _lastSeq = 0
  private _ackedSeq = 0
  private unackedCount = 0
  private ackTimer: ReturnType<typeof setTimeout> | null = null

  // Upstream
  private cseq = 0
  private readonly pendingSends = new Map<number, PendingSend>()
  private roomOps: RoomOp[] = []
  private _rooms = new Set<string>()

  private heartbeat: { interval: number; timeout: number } | null = null
  private _rttMs: number | null = null

  private connectWaiters: Array<{ resolve: () => void; reject: (e: TetherError) => void }> = []
  private logoutWaiters: Array<() => void> = []
  private logoutTimer: ReturnType<typeof setTimeout> | null = null
  private windowListeners: { online: () => void; offline: () => void } | null = null

  constructor(options: TetherClientOptions) {
    super()
    if (!options || typeof options.url !== 'string' || options.url === '') {
      throw new TypeError('TetherClient: options.url is required')
    }
    this.url = options.url
    this.user = options.user
    this.token = options.token
    this.reconnectOptions = { ...DEFAULTS.reconnect, ...stripUndefined(options.reconnect ?? {}) }
    this.ackOptions = { ...DEFAULTS.ack, ...stripUndefined(options.ack ?? {}) }
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULTS.maxFrameBytes
    this.random = options.random ?? Math.random
    this.WebSocketImpl = options.WebSocketImpl
  }

  // -------------------------------------------------------------------------------------------
  // Read-only state

  get state(): State {
    return this._state
  }
  get sessionId(): string | null {
    return this._sessionId
  }
  /** The session's resume secret. Exposed for tests and tools; treat it like a password. */
  get resumeToken(): string | null {
    return this._resumeToken
  }
  get userId(): string | null {
    return this._userId
  }
  /** The highest seq delivered to the application. */
  get lastSeq(): number {
    return this._lastSeq
  }
  /** The highest seq acknowledged to the server (by an ack or by a resume). */
  get ackedSeq(): number {
    return this._ackedSeq
  }
  /** Reconnect attempts since the link was last up (0 while connected). */
  get reconnectAttempts(): number {
    return this._reconnectAttempts
  }
  /** Round-trip time of the last ping, ms (null before the first pong). */
  get rttMs(): number | null {
    return this._rttMs
  }
  /** The session's rooms (from the welcome, then joined/left). */
  get rooms(): string[] {
    return [...this._rooms]
  }

  // -------------------------------------------------------------------------------------------
  // Commands

  /**
   * Opens the session: `hello` for a new one, or `resume` if this client still holds one (after
   * close()). Resolves once the welcome arrives; rejects on connect timeout, authentication
   * failure (close 4005) or any other loss of the socket before the welcome, leaving the client
   * CLOSED. While RECONNECTING it resolves at the next welcome.
   */
  connect(): Promise<void> {
    switch (this._state) {
      case 'CONNECTED':
        return Promise.resolve()
      case 'CLOSING':
        return Promise.reject(new TetherError('closed', 'the client is closing'))
      case 'CONNECTING':
      case 'RECONNECTING':
        return this.waitForWelcome()
    }
    // INIT or CLOSED
    if (!this.sessionUsable) this.resetSessionCounters()
    this._reconnectAttempts = 0
    const promise = this.waitForWelcome()
    this.setState('CONNECTING')
    this.installWindowListeners()
    this.openLink()
    return promise
  }

  /**
   * Sends `data` to `to` (`room:<name>`, `user:<id>` or `session:<id>`). Resolves when the server
   * confirms it (`sent`), across reconnects; rejects on an error frame for its cseq, or when the
   * session is lost or the client closed before that.
   */
  send(to: string, data: any, options: SendOptions = {}): Promise<SendResult> {
    if (this._state === 'INIT' || this._state === 'CLOSING' || this._state === 'CLOSED') {
      return Promise.reject(new TetherError('not-connected', `cannot send in state ${this._state}`))
    }
    // Checked before a cseq is used: a frame the server cannot decode would get an error
    // without its cseq, and the cseqs after it would be out of order.
    const target = typeof to === 'string' ? TARGET.exec(to) : null
    if (!target || target[2]!.length > 255 || (target[1] === 'room' && !validName(target[2]))) {
      return Promise.reject(new TetherError('bad-frame', `send: to must be session:<id>, user:<id> or room:<name>, got ${JSON.stringify(to)}`))
    }
    if (data === undefined) return Promise.reject(new TetherError('bad-frame', 'send: data must not be undefined'))
    if (options.echo !== undefined && typeof options.echo !== 'boolean') {
      return Promise.reject(new TetherError('bad-frame', 'send: echo must be a boolean'))
    }
    const frame: PendingSend['frame'] = { type: 'send', cseq: this.cseq + 1, to, data }
    if (options.echo !== undefined) frame.echo = options.echo
    let bytes: number
    try {
      bytes = utf8.encode(JSON.stringify(frame)).length
    } catch (e) {
      return Promise.reject(new TetherError('bad-frame', `send: data is not JSON-serializable: ${describe(e)}`, { cause: e }))
    }
    if (bytes > this.maxFrameBytes) {
      return Promise.reject(new TetherError('frame-too-large', `send: frame of ${bytes} bytes exceeds maxFrameBytes ${this.maxFrameBytes}`))
    }
    const cseq = ++this.cseq
    return new Promise<SendResult>((resolve, reject) => {
      this.pendingSends.set(cseq, { cseq, frame, resolve, reject })
      if (this.isLive()) this.transmit(frame)
    })
  }

  join(room: string): Promise<void> {
    return this.roomOp('join', room)
  }

  leave(room: string): Promise<void> {
    return this.roomOp('leave', room)
  }

  /**
   * Deliberate logout: sends `bye` (resuming first if the link is down), the server ends the
   * session, and the client goes CLOSED without ever reconnecting. Resolves when closed.
   */
  logout(): Promise<void> {
    if (this._state === 'INIT' || this._state === 'CLOSED') {
      this.sessionUsable = false
      return Promise.resolve()
    }
    const done = new Promise<void>((resolve) => this.logoutWaiters.push(resolve))
    if (this._state === 'CLOSING') return done
    this.clearReconnectTimer()
    this.setState('CLOSING')
    this.rejectConnectWaiters(new TetherError('closed', 'logged out'))
    // If the server does not answer in time, close anyway.
    this.logoutTimer = setTimeout(() => this.finish(), this.connectTimeoutMs)
    const link = this.link
    if (link) {
      link.byeRequested = true
      if (link.handshake !== null && link.ws && link.ws.readyState === OPEN) this.transmit({ type: 'bye' })
      // else: bye follows the handshake once the socket opens.
    } else if (this.sessionUsable) {
      // The link is down: resume just to say bye (a resume that fails creates a new session, which the bye ends too).
      this.openLink(true)
    } else {
      this.finish()
    }
    return done
  }

  /**
   * Closes the socket abruptly, as if the network died; the client then reconnects by itself
   * (backoff applies). For demos and tests.
   */
  dropConnection(): void {
    if (this.link) this.linkLost(this.link, 'dropped')
  }

  /**
   * Closes locally without logging out: the session stays on the server for its grace period
   * and a later connect() resumes it. Pending sends are rejected. No reconnect.
   */
  close(): void {
    if (this._state === 'INIT' || this._state === 'CLOSED') return
    // The ack of what the app has processed goes out while the link is still live.
    const link = this.link
    if (link && link.welcomed) this.flushAck()
    if (this._state !== 'CLOSING') this.setState('CLOSING')
    this.finish(new TetherError('closed', 'the client was closed'), 1000)
  }

  // -------------------------------------------------------------------------------------------
  // Links

  /** Opens a new socket. The caller guarantees no link exists and no reconnect is scheduled. */
  private openLink(byeRequested = false): void {
    const link: Link = {
      id: ++this.linkIds,
      ws: null,
      handshake: null,
      resumeLastSeq: 0,
      welcomed: false,
      byeRequested,
      byeReceived: false,
      lastFrameAt: Date.now(),
      readTimer: null,
      pingTimer: null,
      pingsInFlight: [],
    }
    this.link = link
    // Connect timeout: the socket must open and the welcome arrive within connectTimeoutMs.
    link.readTimer = setTimeout(() => {
      if (this.link === link && !link.welcomed) {
        this.linkLost(link, 'connect-timeout', new TetherError('connect-timeout', `no welcome within ${this.connectTimeoutMs} ms`))
      }
    }, this.connectTimeoutMs)
    this.resolveWebSocketImpl().then(
      (Impl) => {
        if (this.link !== link) return
        let ws: SocketLike
        try {
          ws = new Impl(this.url)
        } catch (e) {
          this.linkLost(link, 'transport', new TetherError('transport', `cannot open ${this.url}: ${describe(e)}`, { cause: e }))
          return
        }
        link.ws = ws
        ws.onopen = () => {
          if (this.link === link) void this.onOpen(link)
        }
        ws.onmessage = (ev: any) => {
          if (this.link === link) this.onFrame(link, ev?.data)
        }
        ws.onerror = (ev: any) => {
          if (this.link === link) {
            const message = ev?.message ?? ev?.error?.message ?? 'WebSocket error'
            this.linkLost(link, 'error', new TetherError('transport', message, { cause: ev?.error }))
          }
        }
        ws.onclose = (ev: any) => {
          if (this.link === link) this.onClose(link, typeof ev?.code === 'number' ? ev.code : CloseCode.ABNORMAL, String(ev?.reason ?? ''))
        }
      },
      (e) => {
        if (this.link === link) {
          this.linkLost(link, 'transport', new TetherError('transport', describe(e), { cause: e }))
        }
      },
    )
  }

  private async onOpen(link: Link): Promise<void> {
    let token: string | undefined
    try {
      token = typeof this.token === 'function' ? await this.token() : this.token
    } catch (e) {
      if (this.link === link) this.linkLost(link, 'token', new TetherError('auth-failed', `token provider failed: ${describe(e)}`, { cause: e }))
      return
    }
    if (this.link !== link || !link.ws || link.ws.readyState !== OPEN) return
    const credentials: Record<string, string> = {}
    if (this.user !== undefined) credentials.user = this.user
    if (token !== undefined) credentials.token = token
    if (this.sessionUsable && this._sessionId && this._resumeToken) {
      link.handshake = 'resume'
      link.resumeLastSeq = this._lastSeq
      this.transmit({
        type: 'resume',
        sessionId: this._sessionId,
        resumeToken: this._resumeToken,
        lastSeq: this._lastSeq,
        ...credentials,
      })
    } else {
      link.handshake = 'hello'
      this.transmit({ type: 'hello', ...credentials, client: SDK_VERSION })
    }
    // A logout that came while the socket was opening: the server holds the bye until the welcome.
    if (link.byeRequested) this.transmit({ type: 'bye' })
  }

  private onFrame(link: Link, raw: unknown): void {
    link.lastFrameAt = Date.now()
    if (typeof raw !== 'string') return // v1 is text only
    let frame: any
    try {
      frame = JSON.parse(raw)
    } catch {
      return
    }
    if (!frame || typeof frame !== 'object') return
    switch (frame.type) {
      case 'welcome':
        this.onWelcome(link, frame as WelcomeFrame)
        break
      case 'msg':
        this.onMsg(link, frame as MsgFrame)
        break
      case 'sent':
        this.onSent(frame.cseq)
        break
      case 'error':
        const error = this.onErrorFrame(frame as ErrorFrame)
        // An error before the welcome refused the handshake (rate-limited, bad-frame): this
        // attempt failed. auth-failed is left to its close 4005, which ends the client.
        if (!link.welcomed && this.link === link && error.code !== 'auth-failed') {
          this.linkLost(link, `handshake-refused:${error.code}`, error, false)
        }
        break
      case 'joined':
        this.onRoomAnswer('join', frame.room)
        break
      case 'left':
        this.onRoomAnswer('leave', frame.room)
        break
      case 'pong':
        this.onPong(link)
        break
      case 'kicked':
        this.onKicked(String(frame.reason ?? 'kicked'))
        break
      case 'bye':
        link.byeReceived = true
        break
    }
  }

  private onWelcome(link: Link, w: WelcomeFrame): void {
    if (link.welcomed) return
    link.welcomed = true
    this.clearReadTimer(link)
    const previousSessionId = this._sessionId
    const wasResume = link.handshake === 'resume'
    this._sessionId = w.sessionId
    this._resumeToken = w.resumeToken
    this._userId = w.user ?? this._userId
    this.sessionUsable = true
    this._rooms = new Set(Array.isArray(w.rooms) ? w.rooms : [])
    this.heartbeat = w.heartbeat && w.heartbeat.timeout > 0 ? w.heartbeat : null
    this.startHeartbeat(link)

    if (this._state === 'CLOSING') {
      // Logging out: the bye is already on its way; nothing else to do on this session.
      this.emit('welcome', w)
      return
    }

    let sessionLost: TetherEvents['session-lost'] | null = null
    if (w.resumed) {
      // The resume's lastSeq acknowledged everything up to it.
      this._ackedSeq = Math.max(this._ackedSeq, Math.min(link.resumeLastSeq, w.lastSeq))
      this.unackedCount = 0
      // Sends the server refused while their error frame was lost with the link: clientSeq
      // covers them, so without this they would pass for accepted below.
      for (const refusal of Array.isArray(w.refused) ? w.refused : []) {
        const pending = this.pendingSends.get(refusal.cseq)
        if (!pending) continue
        this.pendingSends.delete(refusal.cseq)
        pending.reject(new TetherError(String(refusal.code), `send ${refusal.cseq} was refused: ${refusal.code}`, { cseq: refusal.cseq }))
      }
      // Sends the server already accepted are done; the rest are re-sent, in cseq order.
      for (const [cseq, pending] of [...this.pendingSends]) {
        if (cseq <= w.clientSeq) {
          this.pendingSends.delete(cseq)
          pending.resolve({ cseq })
        }
      }
      // The server handles sends in cseq order, so none of those still pending reached it: they
      // are numbered again from clientSeq + 1, in their order. This closes any gap left by sends
      // that never reached it (rejected by close(), or numbered before this welcome from a stale
      // counter), which the server would otherwise answer out-of-order, one after the other.
      const stillPending = [...this.pendingSends.values()] // in cseq order: the order they were added
      this.pendingSends.clear()
      let next = w.clientSeq
      for (const pending of stillPending) {
        next++
        pending.cseq = next
        pending.frame.cseq = next
        this.pendingSends.set(next, pending)
      }
      this.cseq = next
    } else {
      if (wasResume) {
        const rejected = [...this.pendingSends.values()]
        this.pendingSends.clear()
        for (const p of rejected) {
          p.reject(new TetherError('session-lost', `session ${previousSessionId} was lost (${w.reason}); message not sent`, { cseq: p.cseq }))
        }
        this.cseq = 0
        sessionLost = {
          reason: w.reason as SessionLostReason,
          lost: w.lost ?? 0,
          sessionId: w.sessionId,
          previousSessionId: previousSessionId ?? '',
          rejectedSends: rejected.length,
        }
      }
      this._lastSeq = 0
      this._ackedSeq = 0
      this.unackedCount = 0
      this.clearAckTimer()
    }
    this._reconnectAttempts = 0
    // What was waiting goes out before any listener runs: a send made in a 'state', 'welcome' or
    // 'resumed' listener takes the next cseq and must follow the re-sent ones on the wire.
    for (const pending of this.pendingSends.values()) this.transmit(pending.frame)
    this.replayRoomOps()
    this.setState('CONNECTED')
    this.emit('welcome', w)
    if (w.resumed && wasResume) {
      this.emit('resumed', { replay: w.replay ?? 0, lost: w.lost ?? 0, sessionId: w.sessionId })
    } else if (sessionLost) {
      this.emit('session-lost', sessionLost)
    }
    if (this.link !== link) return // a listener closed or dropped the link
    const waiters = this.connectWaiters
    this.connectWaiters = []
    for (const waiter of waiters) waiter.resolve()
  }

  private onMsg(link: Link, m: MsgFrame): void {
    if (!link.welcomed || typeof m.seq !== 'number') return
    if (this._state === 'CLOSING' || this._state === 'CLOSED') return
    if (m.seq <= this._lastSeq) return // a duplicate: never delivered twice
    this._lastSeq = m.seq
    const message: TetherMessage = { seq: m.seq, data: m.data, from: m.from, ts: m.ts }
    if (m.room !== undefined) message.room = m.room
    this.emit('message', message)
    this.unackedCount++
    if (this.unackedCount >= this.ackOptions.everyMessages) {
      this.flushAck()
    } else if (this.ackTimer === null) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = null
        this.flushAck()
      }, this.ackOptions.everyMs)
    }
  }

  /** Sends a cumulative ack for everything delivered, if the link is up (a resume acks otherwise). */
  private flushAck(): void {
    this.clearAckTimer()
    if (this._lastSeq > this._ackedSeq && this.isLive()) {
      this.transmit({ type: 'ack', seq: this._lastSeq })
      this._ackedSeq = this._lastSeq
      this.unackedCount = 0
    }
  }

  private onSent(cseq: unknown): void {
    if (typeof cseq !== 'number') return
    const pending = this.pendingSends.get(cseq)
    if (!pending) return
    this.pendingSends.delete(cseq)
    pending.resolve({ cseq })
  }

  private onErrorFrame(f: ErrorFrame): TetherError {
    const extra: { cseq?: number; room?: string } = {}
    if (typeof f.cseq === 'number') extra.cseq = f.cseq
    if (typeof f.room === 'string') extra.room = f.room
    const error = new TetherError(String(f.code ?? 'internal'), String(f.message ?? ''), extra)
    if (extra.cseq !== undefined) {
      const pending = this.pendingSends.get(extra.cseq)
      if (pending) {
        this.pendingSends.delete(extra.cseq)
        pending.reject(error)
      }
    } else if (extra.room !== undefined) {
      const index = this.roomOps.findIndex((op) => op.room === extra.room && op.sent)
      if (index >= 0) {
        const [op] = this.roomOps.splice(index, 1)
        op!.reject(error)
      }
    }
    this.emit('error', error)
    return error
  }

  private onRoomAnswer(kind: 'join' | 'leave', room: unknown): void {
    if (typeof room !== 'string') return
    if (kind === 'join') this._rooms.add(room)
    else this._rooms.delete(room)
    const index = this.roomOps.findIndex((op) => op.kind === kind && op.room === room && op.sent)
    if (index >= 0) {
      const [op] = this.roomOps.splice(index, 1)
      op!.resolve()
    }
  }

  private onPong(link: Link): void {
    const sentAt = link.pingsInFlight.shift()
    if (sentAt === undefined) return
    this._rttMs = Date.now() - sentAt
    this.emit('pong', { rttMs: this._rttMs })
  }

  private onKicked(reason: string): void {
    const link = this.link
    if (link) {
      this.link = null
      this.teardown(link, 1000)
    }
    // The session is gone for this client (ended by the backend, or now held by someone else).
    this.sessionUsable = false
    this.finish(new TetherError('kicked', `session ${reason}`))
    this.emit('kicked', { reason })
  }

  private onClose(link: Link, code: number, reason: string): void {
    if (this._state === 'CLOSING') {
      this.link = null
      this.teardown(link)
      this.finish()
      return
    }
    if (code === CloseCode.TAKEN_OVER || code === CloseCode.KICKED) {
      this.onKicked(code === CloseCode.TAKEN_OVER ? 'taken-over' : 'kicked')
      return
    }
    if (code === CloseCode.AUTH_FAILED) {
      this.link = null
      this.teardown(link)
      const error = new TetherError('auth-failed', reason || 'authentication failed', { closeCode: code })
      this.finish(error)
      return
    }
    if (code === CloseCode.NORMAL && link.byeReceived) {
      this.link = null
      this.teardown(link)
      this.sessionUsable = false
      this.finish(new TetherError('closed', 'logged out'))
      return
    }
    this.linkLost(link, `close:${code}`, new TetherError('transport', `connection closed (${code}${reason ? ' ' + reason : ''})`, { closeCode: code }))
  }

  /**
   * The link is dead, however that was noticed (error, close, read deadline, offline, drop,
   * connect timeout). Only the current link counts, and only once: the socket is detached first,
   * so whatever else it reports afterwards is ignored.
   */
  private linkLost(link: Link, reason: string, error?: TetherError, report = true): void {
    if (this.link !== link) return
    this.link = null
    this.teardown(link)
    if (error && report) this.emit('error', error)
    switch (this._state) {
      case 'CONNECTING':
        // The first connect failed: no session to keep alive, so no reconnect.
        this.finish(error ?? new TetherError('transport', `connection lost (${reason})`))
        return
      case 'CONNECTED':
        this.setState('RECONNECTING')
        this.scheduleReconnect(reason)
        return
      case 'RECONNECTING':
        this.scheduleReconnect(reason)
        return
      case 'CLOSING':
        this.finish()
        return
    }
  }

  /** Schedules the next reconnect attempt; a no-op while one is scheduled or in flight. */
  private scheduleReconnect(reason: string): void {
    if (this._state !== 'RECONNECTING' || this.link !== null || this.reconnectTimer !== null) return
    if (this._reconnectAttempts >= this.reconnectOptions.maxAttempts) {
      const error = new TetherError('reconnect-failed', `gave up after ${this._reconnectAttempts} reconnect attempts (last: ${reason})`)
      this.emit('error', error)
      this.finish(error)
      return
    }
    const attempt = ++this._reconnectAttempts
    const delayMs = backoffDelay(attempt, this.reconnectOptions, this.random)
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      if (this._state === 'RECONNECTING' && this.link === null) this.openLink()
    }, delayMs)
    this.emit('reconnecting', { attempt, delayMs, reason })
  }

  private clearReconnectTimer(): void {
    if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer)
      this.reconnectTimer = null
    }
  }

  // -------------------------------------------------------------------------------------------
  // Heartbeat and read deadline

  private startHeartbeat(link: Link): void {
    if (!this.heartbeat) return
    const { interval, timeout } = this.heartbeat
    if (interval > 0) {
      link.pingTimer = setInterval(() => {
        if (this.link !== link || !link.ws || link.ws.readyState !== OPEN) return
        link.pingsInFlight.push(Date.now())
        if (link.pingsInFlight.length > 100) link.pingsInFlight.shift()
        this.transmit({ type: 'ping' })
      }, interval)
    }
    const check = () => {
      if (this.link !== link) return
      const silentMs = Date.now() - link.lastFrameAt
      if (silentMs >= timeout) {
        this.linkLost(link, 'read-timeout', new TetherError('transport', `no frame for ${silentMs} ms (heartbeat timeout ${timeout} ms)`))
      } else {
        link.readTimer = setTimeout(check, timeout - silentMs)
      }
    }
    link.readTimer = setTimeout(check, timeout)
  }

  private clearReadTimer(link: Link): void {
    if (link.readTimer !== null) {
      clearTimeout(link.readTimer)
      link.readTimer = null
    }
  }

  // -------------------------------------------------------------------------------------------
  // Helpers

  private roomOp(kind: 'join' | 'leave', room: string): Promise<void> {
    if (this._state === 'INIT' || this._state === 'CLOSING' || this._state === 'CLOSED') {
      return Promise.reject(new TetherError('not-connected', `cannot ${kind} in state ${this._state}`, { room }))
    }
    if (!validName(room)) {
      return Promise.reject(new TetherError('bad-frame', `${kind}: room must be 1-128 characters without control characters`, { room }))
    }
    return new Promise<void>((resolve, reject) => {
      const op: RoomOp = { kind, room, sent: false, resolve, reject }
      this.roomOps.push(op)
      if (this.isLive()) {
        op.sent = true
        this.transmit({ type: kind, room })
      }
    })
  }

  /** After a welcome: room operations settled by the session's membership resolve, the others are (re-)sent. */
  private replayRoomOps(): void {
    for (const op of [...this.roomOps]) {
      const member = this._rooms.has(op.room)
      if (!op.sent && this.roomOps.some((o) => o !== op && o.room === op.room && o.sent)) {
        // An earlier operation on this room is in flight; sending this one now would race it.
        op.sent = true
        this.transmit({ type: op.kind, room: op.room })
        continue
      }
      if ((op.kind === 'join' && member) || (op.kind === 'leave' && !member)) {
        this.roomOps.splice(this.roomOps.indexOf(op), 1)
        op.resolve()
      } else {
        op.sent = true
        this.transmit({ type: op.kind, room: op.room })
      }
    }
  }

  /** True when frames can flow on a welcomed link. */
  private isLive(): boolean {
    const link = this.link
    return this._state === 'CONNECTED' && link !== null && link.welcomed && link.ws !== null && link.ws.readyState === OPEN
  }

  private transmit(frame: object): void {
    const ws = this.link?.ws
    if (!ws || ws.readyState !== OPEN) return
    try {
      ws.send(JSON.stringify(frame))
    } catch {
      // the socket is failing; its close or error follows
    }
  }

  /** Stops a link's timers and detaches its socket, closing it (abruptly unless a code is given). */
  private teardown(link: Link, closeCode?: number): void {
    this.clearReadTimer(link)
    if (link.pingTimer !== null) {
      clearInterval(link.pingTimer)
      link.pingTimer = null
    }
    const ws = link.ws
    link.ws = null
    if (!ws) return
    // Keep no-op handlers: `ws` throws on an 'error' event nobody listens to.
    ws.onopen = noop
    ws.onmessage = noop
    ws.onerror = noop
    ws.onclose = noop
    try {
      if (closeCode !== undefined) ws.close(closeCode)
      else if (typeof ws.terminate === 'function') ws.terminate()
      else ws.close(4000, 'link lost')
    } catch {
      // already closed
    }
  }

  /** Goes CLOSED: no link, no timers, pending work rejected with `error` (if given), waiters settled. */
  private finish(error?: TetherError, closeCode?: number): void {
    this.clearReconnectTimer()
    this.clearAckTimer()
    if (this.logoutTimer !== null) {
      clearTimeout(this.logoutTimer)
      this.logoutTimer = null
    }
    const link = this.link
    if (link) {
      this.link = null
      this.teardown(link, closeCode)
    }
    const loggingOut = this.logoutWaiters.length > 0
    if (loggingOut) this.sessionUsable = false
    const reason = error ?? new TetherError('closed', loggingOut ? 'logged out' : 'the client was closed')
    const sends = [...this.pendingSends.values()]
    this.pendingSends.clear()
    for (const p of sends) p.reject(new TetherError(reason.code, reason.message, { cseq: p.cseq }))
    const ops = this.roomOps
    this.roomOps = []
    for (const op of ops) op.reject(new TetherError(reason.code, reason.message, { room: op.room }))
    this.removeWindowListeners()
    this.setState('CLOSED')
    this.rejectConnectWaiters(reason)
    const logoutWaiters = this.logoutWaiters
    this.logoutWaiters = []
    for (const resolve of logoutWaiters) resolve()
  }

  private waitForWelcome(): Promise<void> {
    return new Promise<void>((resolve, reject) => this.connectWaiters.push({ resolve, reject }))
  }

  private rejectConnectWaiters(error: TetherError): void {
    const waiters = this.connectWaiters
    this.connectWaiters = []
    for (const waiter of waiters) waiter.reject(error)
  }

  private resetSessionCounters(): void {
    this._lastSeq = 0
    this._ackedSeq = 0
    this.unackedCount = 0
    this.cseq = 0
    this._rooms = new Set()
  }

  private clearAckTimer(): void {
    if (this.ackTimer !== null) {
      clearTimeout(this.ackTimer)
      this.ackTimer = null
    }
  }

  private setState(to: State): void {
    const from = this._state
    if (from === to) return
    this._state = to
    this.emit('state', { from, to })
  }

  /** The browser's connectivity events: offline means the link is dead, online retries at once. */
  private installWindowListeners(): void {
    const w = (globalThis as any).window
    if (this.windowListeners || !w || typeof w.addEventListener !== 'function') return
    const offline = () => {
      if (this.link) this.linkLost(this.link, 'offline')
    }
    const online = () => {
      if (this._state === 'RECONNECTING' && this.reconnectTimer !== null && this.link === null) {
        this.clearReconnectTimer()
        this.openLink()
      }
    }
    w.addEventListener('offline', offline)
    w.addEventListener('online', online)
    this.windowListeners = { online, offline }
  }

  private removeWindowListeners(): void {
    const w = (globalThis as any).window
    if (!this.windowListeners || !w) return
    w.removeEventListener('offline', this.windowListeners.offline)
    w.removeEventListener('online', this.windowListeners.online)
    this.windowListeners = null
  }

  private async resolveWebSocketImpl(): Promise<any> {
    if (this.WebSocketImpl) return this.WebSocketImpl
    const native = (globalThis as any).WebSocket
    if (typeof native === 'function') {
      this.WebSocketImpl = native
      return native
    }
    // Node without a global WebSocket: the optional `ws` package, imported only here so that
    // browsers never resolve it. The variable specifier keeps bundlers from inlining it.
    const specifier = 'ws'
    let mod: any
    try {
      mod = await import(/* @vite-ignore */ /* webpackIgnore: true */ specifier)
    } catch (e) {
      throw new TetherError('transport', 'no WebSocket implementation: install the "ws" package (npm i ws) or pass WebSocketImpl', { cause: e })
    }
    this.WebSocketImpl = mod.WebSocket ?? mod.default
    return this.WebSocketImpl
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {}
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as any)[k] = v
  return out
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}
