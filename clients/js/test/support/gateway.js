// Starts the real gateway (the shaded jar Maven builds) on loopback ports chosen by the OS, and
// stops it again. One gateway per test file: startup takes several seconds.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const JAR = process.env.TETHER_JAR ?? resolve(here, '..', '..', '..', '..', 'target', 'tether.jar')

const LISTENING = /Tether listening on http:\/\/([^\s:]+):(\d+) \(/
const running = new Set()
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

/**
 * @param {Record<string,string>} env extra environment (TETHER_*)
 * @returns {Promise<{port:number, httpUrl:string, wsUrl:string, log:()=>string, stop:()=>Promise<void>}>}
 */
export async function startGateway(env = {}) {
  if (!existsSync(JAR)) {
    throw new Error(`${JAR} does not exist: build it first (cd ../.. && mvn -B -q -DskipTests package)`)
  }
  const child = spawn('java', ['-Xmx1g', '-jar', JAR], {
    env: {
      ...process.env,
      TETHER_HOST: '127.0.0.1',
      TETHER_PORT: '0',
      TETHER_CLUSTER_HOST: '127.0.0.1',
      TETHER_CLUSTER_PORT: '0',
      TETHER_HANDSHAKE_TIMEOUT: '5s',
      TETHER_HEARTBEAT_INTERVAL: '1s',
      TETHER_HEARTBEAT_TIMEOUT: '3s',
      TETHER_GRACE: '30s',
      TETHER_LOG_FORMAT: 'text',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  running.add(child)
  const lines = []
  const keep = (line) => {
    lines.push(line)
    if (lines.length > 400) lines.shift()
  }
  const exited = new Promise((resolveExit) => child.once('exit', (code, signal) => resolveExit({ code, signal })))
  exited.then(() => running.delete(child))

  const port = await new Promise((resolvePort, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start within 90 s:\n${lines.join('\n')}`)), 90_000)
    const scan = (stream) => {
      let buffered = ''
      stream.setEncoding('utf8')
      stream.on('data', (chunk) => {
        buffered += chunk
        let nl
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl)
          buffered = buffered.slice(nl + 1)
          keep(line)
          const m = LISTENING.exec(line)
          if (m) {
            clearTimeout(timer)
            resolvePort(Number(m[2]))
          }
        }
      })
    }
    scan(child.stdout)
    scan(child.stderr)
    exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`gateway exited (${code ?? signal}) before listening:\n${lines.join('\n')}`))
    })
  })

  return {
    port,
    httpUrl: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    log: () => lines.join('\n'),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM') // graceful: CoordinatedShutdown closes the embedded database too
      const timeout = new Promise((r) => setTimeout(() => r('timeout'), 20_000).unref())
      if ((await Promise.race([exited, timeout])) === 'timeout') {
        child.kill('SIGKILL')
        await exited
      }
    },
  }
}

/** The gateway's backend HTTP API. */
export function api(gateway) {
  const call = async (method, path, body) => {
    const res = await fetch(gateway.httpUrl + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await res.text()
    return { status: res.status, body: text ? JSON.parse(text) : null }
  }
  return {
    /** POST /api/sessions/{id}/messages; returns the seq. */
    async publish(sessionId, data) {
      const r = await call('POST', `/api/sessions/${encodeURIComponent(sessionId)}/messages`, { data })
      if (r.status !== 202) throw new Error(`publish to ${sessionId}: ${r.status} ${JSON.stringify(r.body)}`)
      return r.body.seq
    },
    async session(sessionId) {
      return call('GET', `/api/sessions/${encodeURIComponent(sessionId)}`)
    },
    async kick(sessionId) {
      return call('DELETE', `/api/sessions/${encodeURIComponent(sessionId)}`)
    },
  }
}
