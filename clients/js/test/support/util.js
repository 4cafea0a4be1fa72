import WebSocket from 'ws'

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Polls `predicate` until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function waitFor(predicate, { timeoutMs = 10_000, what = 'condition', interval = 10 } = {}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await predicate()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(interval)
  }
}

/** Records every event of a client with its time. */
export function record(client) {
  const events = []
  const names = ['state', 'message', 'resumed', 'session-lost', 'kicked', 'error', 'pong', 'reconnecting', 'welcome']
  const offs = names.map((name) => client.on(name, (payload) => events.push({ name, payload, at: Date.now() })))
  return {
    events,
    of: (name) => events.filter((e) => e.name === name).map((e) => e.payload),
    timed: (name) => events.filter((e) => e.name === name),
    states: () => events.filter((e) => e.name === 'state').map((e) => e.payload.to),
    stop: () => offs.forEach((off) => off()),
  }
}

/** Resolves with the payload of the next `name` event that satisfies `predicate`. */
export function nextEvent(client, name, { predicate = () => true, timeoutMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off()
      reject(new Error(`no '${name}' event within ${timeoutMs} ms`))
    }, timeoutMs)
    const off = client.on(name, (payload) => {
      if (!predicate(payload)) return
      clearTimeout(timer)
      off()
      resolve(payload)
    })
  })
}

/** A raw protocol connection (no SDK): sends `first` and collects every frame. */
export async function rawConnection(url, first) {
  const ws = new WebSocket(url)
  const frames = []
  const waiters = []
  ws.on('message', (data) => {
    const frame = JSON.parse(data.toString())
    frames.push(frame)
    for (const w of [...waiters]) w()
  })
  const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)))
  ws.on('error', () => {})
  await new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', reject)
  })
  if (first) ws.send(JSON.stringify(first))
  const next = (type, timeoutMs = 10_000) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const f = frames.find((x) => x.type === type)
        if (f) {
          waiters.splice(waiters.indexOf(check), 1)
          clearTimeout(timer)
          resolve(f)
        }
      }
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(check), 1)
        reject(new Error(`no '${type}' frame within ${timeoutMs} ms; got ${JSON.stringify(frames)}`))
      }, timeoutMs)
      waiters.push(check)
      check()
    })
  return { ws, frames, closed, next, send: (f) => ws.send(JSON.stringify(f)), close: () => ws.close() }
}
