package dev.tether.gateway;

import java.util.concurrent.atomic.AtomicReference;

/**
 * The close code a connection wants its WebSocket closed with. pekko-http's message-level API
 * always closes with 1000 (or 1011 on failure); {@link CloseCodeWebSocket} rewrites that final
 * close frame to the code set here, which is how Tether sends 4001-4009.
 */
public final class CloseSignal {
  public record Close(int code, String reason) {}

  private final AtomicReference<Close> close = new AtomicReference<>();

  /** Records the code; the first one set wins (a connection closes for one reason). */
  public void set(int code, String reason) {
    close.compareAndSet(null, new Close(code, reason));
  }

  public Close get() {
    return close.get();
  }
}
