package dev.tether.session;

import dev.tether.CborSerializable;

/**
 * One downstream message held for a session until the client acknowledges it.
 *
 * @param data the message body, as compact JSON text (kept as text so it is written to the
 *     socket without being parsed again)
 * @param from who sent it: {@code user:<id>} for a client, {@code backend} for the HTTP API
 * @param room the room it was sent to, or null
 */
public record OutboxMessage(long seq, String data, String from, String room, long ts)
    implements CborSerializable {

  /** What the message costs the outbox: its body plus a fixed allowance for the envelope. */
  public long bytes() {
    return data.length() + 64L;
  }
}
