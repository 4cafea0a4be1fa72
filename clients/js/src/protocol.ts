/** Frames of session protocol v1 (docs/PROTOCOL.md) as the SDK sees them. */

export const SDK_VERSION = 'sdk-js/1.0'

/** Why a resume did not continue its session (welcome.reason with resumed:false). */
export type SessionLostReason = 'unknown' | 'invalid-token' | 'expired' | 'ended'

export interface WelcomeFrame {
  type: 'welcome'
  sessionId: string
  resumeToken: string
  resumed: boolean
  reason: 'new' | 'resumed' | SessionLostReason
  replay: number
  lastSeq: number
  clientSeq: number
  lost: number
  heartbeat: { interval: number; timeout: number }
  grace: number
  rooms: string[]
  user?: string
  /** Recent sends the server refused (their cseqs are covered by clientSeq); absent when none. */
  refused?: { cseq: number; code: string }[]
}

export interface MsgFrame {
  type: 'msg'
  seq: number
  data: any
  from: string
  room?: string
  ts: number
}

export interface ErrorFrame {
  type: 'error'
  code: string
  message: string
  cseq?: number
  room?: string
}

/** Close codes of the contract (section 6) and Tether's additions (section 8.3). */
export const CloseCode = {
  NORMAL: 1000,
  ABNORMAL: 1006,
  SESSION_UNAVAILABLE: 1011,
  SESSION_MOVED: 1012,
  /** The node is busy (too many handshakes in progress): reconnect with backoff. */
  TRY_AGAIN_LATER: 1013,
  HANDSHAKE_TIMEOUT: 4001,
  TAKEN_OVER: 4002,
  PROTOCOL_ERROR: 4003,
  KICKED: 4004,
  AUTH_FAILED: 4005,
  HEARTBEAT_TIMEOUT: 4008,
  SLOW_CONSUMER: 4009,
} as const

/**
 * Every error the SDK reports, through the `error` event and through rejected promises.
 *
 * `code` is the server's error code for error frames (`bad-frame`, `frame-too-large`,
 * `auth-failed`, `out-of-order`, `not-in-room`, `rate-limited`, `internal`) or one of the SDK's
 * own: `transport` (the socket failed), `connect-timeout`, `reconnect-failed` (maxAttempts
 * reached), `closed` (the client was closed or logged out), `session-lost` (a pending send of a
 * session that did not survive), `kicked`, `not-connected`.
 */
export class TetherError extends Error {
  readonly code: string
  declare readonly cseq?: number
  declare readonly room?: string
  /** The WebSocket close code, when the error came with a close. */
  declare readonly closeCode?: number

  constructor(code: string, message: string, extra: { cseq?: number; room?: string; closeCode?: number; cause?: unknown } = {}) {
    super(message)
    this.name = 'TetherError'
    this.code = code
    if (extra.cseq !== undefined) this.cseq = extra.cseq
    if (extra.room !== undefined) this.room = extra.room
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode
    if (extra.cause !== undefined) (this as any).cause = extra.cause
  }
}
