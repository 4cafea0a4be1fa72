package dev.tether.session;

import dev.tether.CborSerializable;

/**
 * A downstream message before a session gives it a {@code seq}.
 *
 * @param origin the sending session for an upstream message (with {@code originSeq} its
 *     {@code cseq}), so a retried delivery is recognised and not queued twice; null for the API
 */
public record Draft(String data, String from, String room, String origin, long originSeq)
    implements CborSerializable {

  public static Draft fromBackend(String data, String room) {
    return new Draft(data, "backend", room, null, 0);
  }
}
