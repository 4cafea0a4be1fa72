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

  /**
   * What the message costs the outbox: its body's UTF-8 size (what the socket carries, and what
   * {@code outbox.max-bytes} promises to bound) plus a fixed allowance for the envelope.
   */
  public long bytes() {
    return bytesOf(data);
  }

  /** What a message with this body costs (see {@link #bytes()}), before it has a seq. */
  public static long bytesOf(String data) {
    return utf8Length(data) + 64L;
  }

  /** The UTF-8 size of a text, counted without encoding it (this runs on every queue and ack). */
  static long utf8Length(String text) {
    long bytes = text.length();
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      if (c < 0x80) continue;
      if (c < 0x800) bytes += 1;
      // A surrogate pair is 2 chars and 4 bytes; a lone surrogate is written as '?' (1 byte).
      else if (Character.isHighSurrogate(c) && i + 1 < text.length() && Character.isLowSurrogate(text.charAt(i + 1))) {
        bytes += 2;
        i++;
      } else if (Character.isSurrogate(c)) bytes += 0;
      else bytes += 2;
    }
    return bytes;
  }
}
