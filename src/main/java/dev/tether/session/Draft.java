package dev.tether.session;

import dev.tether.CborSerializable;

/**
 * A downstream message before a session gives it a {@code seq}.
 *
 * @param origin the sending session for an upstream message (with {@code originSeq} its
 *     {@code cseq}), or {@code api:<Idempotency-Key>} for a backend publish that carries one, so
 *     a retried delivery is recognised and not queued twice; null when there is none
 */
public record Draft(String data, String from, String room, String origin, long originSeq)
    implements CborSerializable {

  public static Draft fromBackend(String data, String room) {
    return new Draft(data, "backend", room, null, 0);
  }

  /**
   * A backend message with an idempotency key: a retry with the same key is recognised by each
   * session (among the last {@value ClientProxy#MAX_REMEMBERED_ORIGINS} origins it saw) and not
   * queued twice.
   */
  public static Draft fromBackend(String data, String room, String idempotencyKey) {
    if (idempotencyKey == null) return fromBackend(data, room);
    return new Draft(data, "backend", room, "api:" + idempotencyKey, 1);
  }
}
