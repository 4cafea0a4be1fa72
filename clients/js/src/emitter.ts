/**
 * A tiny typed event emitter (no dependency on Node's `events` or the DOM's EventTarget, so the
 * SDK runs unchanged in browsers and in Node).
 *
 * A listener that throws does not disturb the client or the other listeners: the exception is
 * reported the way the platform reports uncaught errors (`reportError` in browsers, an uncaught
 * exception in Node), on a later tick.
 */
export type Listener<T> = (payload: T) => void

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<any>>>()

  /** Subscribes; returns a function that unsubscribes. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(event)
    if (!set) {
      set = new Set()
      this.listeners.set(event, set)
    }
    set.add(listener)
    return () => this.off(event, listener)
  }

  /** Subscribes for the next event only; returns a function that unsubscribes. */
  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const wrapper: Listener<Events[K]> = (payload) => {
      this.off(event, wrapper)
      listener(payload)
    }
    return this.on(event, wrapper)
  }

  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    this.listeners.get(event)?.delete(listener)
  }

  protected emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const set = this.listeners.get(event)
    if (!set || set.size === 0) return
    for (const listener of [...set]) {
      try {
        listener(payload)
      } catch (e) {
        reportListenerError(e)
      }
    }
  }

  protected listenerCount<K extends keyof Events>(event: K): number {
    return this.listeners.get(event)?.size ?? 0
  }
}

function reportListenerError(e: unknown): void {
  const report = (globalThis as any).reportError
  if (typeof report === 'function') {
    report.call(globalThis, e)
  } else {
    setTimeout(() => {
      throw e
    }, 0)
  }
}
