// An in-process TCP proxy between the client and the gateway, to break the link on purpose:
//  - cut():      destroy every connection (both sides see the TCP connection die);
//  - stall():    stop forwarding (both directions, or one) but keep the sockets open: a half-open link;
//  - refuse():   stop listening, so new connections are refused;
//  - restore():  forward again and accept again (on the same port).
import net from 'node:net'

export async function startProxy(targetPort, targetHost = '127.0.0.1') {
  const pairs = new Set()
  let accepted = 0
  let stallNew = null // direction applied to new connections, or null
  let server = null
  let port = 0
  const acceptListeners = new Set()

  const onConnection = (client) => {
    accepted++
    const upstream = net.connect(targetPort, targetHost)
    const pair = { client, upstream, stallUp: false, stallDown: false }
    if (stallNew) applyStall(pair, stallNew)
    pairs.add(pair)
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    client.on('data', (d) => {
      if (!pair.stallUp) upstream.write(d)
    })
    upstream.on('data', (d) => {
      if (!pair.stallDown) client.write(d)
    })
    const end = () => {
      // A stalled link is half-open: neither side learns that the other went away.
      if (pair.stallUp || pair.stallDown) {
        if (client.destroyed && upstream.destroyed) pairs.delete(pair)
        return
      }
      client.destroy()
      upstream.destroy()
      pairs.delete(pair)
    }
    client.on('error', () => {})
    upstream.on('error', () => {})
    client.on('close', end)
    upstream.on('close', end)
    for (const l of acceptListeners) l(accepted)
  }

  const listen = () =>
    new Promise((resolve, reject) => {
      server = net.createServer(onConnection)
      server.once('error', reject)
      server.listen(port, '127.0.0.1', () => {
        port = server.address().port
        resolve()
      })
    })

  function applyStall(pair, direction) {
    pair.stallUp = direction === 'both' || direction === 'up'
    pair.stallDown = direction === 'both' || direction === 'down'
  }

  await listen()

  return {
    get port() {
      return port
    },
    get wsUrl() {
      return `ws://127.0.0.1:${port}/ws`
    },
    /** Connections accepted so far. */
    get accepted() {
      return accepted
    },
    /** Open connections. */
    get open() {
      return pairs.size
    },
    onAccept(listener) {
      acceptListeners.add(listener)
      return () => acceptListeners.delete(listener)
    },
    /** Destroys every connection; with refuse, also stops accepting new ones. */
    async cut({ refuse = false } = {}) {
      if (refuse) await this.refuse()
      for (const pair of [...pairs]) {
        pair.stallUp = pair.stallDown = false
        pair.client.destroy()
        pair.upstream.destroy()
        pairs.delete(pair)
      }
    },
    /** Stops forwarding on the open connections ('both', 'up' = client→server, 'down' = server→client). */
    stall(direction = 'both', { newConnections = false } = {}) {
      for (const pair of pairs) applyStall(pair, direction)
      stallNew = newConnections ? direction : null
    },
    async refuse() {
      if (!server) return
      const s = server
      server = null
      await new Promise((resolve) => {
        s.close(() => resolve())
        // close() waits for open connections; the listening socket itself is closed at once.
        setImmediate(resolve)
      })
    },
    /** Forwards again on the open connections and accepts new ones. */
    async restore() {
      stallNew = null
      for (const pair of pairs) pair.stallUp = pair.stallDown = false
      if (!server) await listen()
    },
    async close() {
      await this.cut({ refuse: true })
    },
  }
}
