package dev.tether.gateway;

import java.util.concurrent.atomic.AtomicReference;

/**
 * What the connection actor and its socket's {@link WebSocketStage} share: the size of the
 * outgoing queue (in characters, the stage decrements it as frames leave), the close code the
 * connection wants its WebSocket closed with (the stage puts it in the close frame: this is how
 * Tether sends 4001-4009), and when the client was last heard by the stage itself. The stage
 * answers RFC 6455 pings and the SDKs' {@code {"type":"ping"}} on its own, so the actor never
 * sees them; it notes them here, because a ping is hearing from the client as much as any other
 * frame is (PROTOCOL.md 5).
 */
public final class CloseSignal {
  public record Close(int code, String reason) {}

  private final AtomicReference<Close> close = new AtomicReference<>();
  private final java.util.concurrent.atomic.AtomicLong queuedChars = new java.util.concurrent.atomic.AtomicLong();
  private volatile long lastHeardNanos = System.nanoTime();

  /** The stage heard from the client (a ping it answered itself). */
  void clientHeard() {
    lastHeardNanos = System.nanoTime();
  }

  /** {@link System#nanoTime()} of the last ping the stage answered, or of this connection's start. */
  long lastHeardNanos() {
    return lastHeardNanos;
  }

  /** A frame of {@code chars} characters was queued for the socket; returns the queued total. */
  public long queued(int chars) {
    return queuedChars.addAndGet(chars);
  }

  /** A frame left the queue for the socket. */
  public void dequeued(int chars) {
    queuedChars.addAndGet(-chars);
  }

  /** Records the code; the first one set wins (a connection closes for one reason). */
  public void set(int code, String reason) {
    close.compareAndSet(null, new Close(code, reason));
  }

  public Close get() {
    return close.get();
  }
}
