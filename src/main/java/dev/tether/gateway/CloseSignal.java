package dev.tether.gateway;

import java.util.concurrent.atomic.AtomicReference;

/**
 * What the connection actor and its socket's stream share: the size of the outgoing queue (in
 * characters, the stream decrements it as frames leave), the close code the connection
 * wants its WebSocket closed with, and when the client last sent a protocol-level ping. pekko-http's
 * message-level API always closes with 1000 (or 1011 on failure); {@link CloseCodeWebSocket}
 * rewrites that final close frame to the code set here, which is how Tether sends 4001-4009.
 * pekko-http also answers RFC 6455 pings itself, so the actor never sees them; the stream notes
 * them here, because a ping is hearing from the client as much as a frame is (PROTOCOL.md 5).
 */
public final class CloseSignal {
  public record Close(int code, String reason) {}

  private final AtomicReference<Close> close = new AtomicReference<>();
  private final java.util.concurrent.atomic.AtomicLong queuedChars = new java.util.concurrent.atomic.AtomicLong();
  private volatile long lastProtocolPingNanos = System.nanoTime();

  /** The client sent a protocol-level ping (the stream is answering it). */
  void protocolPingReceived() {
    lastProtocolPingNanos = System.nanoTime();
  }

  /** {@link System#nanoTime()} of the client's last protocol-level ping, or of this connection's start. */
  long lastProtocolPingNanos() {
    return lastProtocolPingNanos;
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
