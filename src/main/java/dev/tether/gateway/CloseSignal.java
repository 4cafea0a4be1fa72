package dev.tether.gateway;

import java.util.concurrent.atomic.AtomicReference;

/**
 * What the connection actor and its socket's stream share: the size of the outgoing queue (in
 * characters, the stream decrements it as frames leave), and the close code the connection
 * wants its WebSocket closed with. pekko-http's message-level API
 * always closes with 1000 (or 1011 on failure); {@link CloseCodeWebSocket} rewrites that final
 * close frame to the code set here, which is how Tether sends 4001-4009.
 */
public final class CloseSignal {
  public record Close(int code, String reason) {}

  private final AtomicReference<Close> close = new AtomicReference<>();
  private final java.util.concurrent.atomic.AtomicLong queuedChars = new java.util.concurrent.atomic.AtomicLong();

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
