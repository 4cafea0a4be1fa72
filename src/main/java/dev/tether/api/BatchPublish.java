package dev.tether.api;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.tether.gateway.FrameCodec;
import dev.tether.session.ClientProxy;
import dev.tether.session.Delivery;
import dev.tether.session.Draft;
import dev.tether.session.Membership;
import dev.tether.session.OutboxMessage;
import dev.tether.session.Target;
import dev.tether.telemetry.TetherMetrics;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;

/**
 * {@code POST /api/messages}: many publishes in one request (an addition to the contract, see
 * docs/PROTOCOL.md 8.4). A game server's tick or a chat fan-out sends one request instead of one
 * per recipient, and every session named in the batch persists all of its entries with one
 * journal write.
 *
 * <p>The whole batch is validated first; a malformed one is refused with 400 and nothing is
 * queued. A valid batch is answered 202 with one result per entry, in order, once every entry has
 * its outcome: {@code {"seq":n}} for a session (the original seq for a retry with the same
 * idempotency key), {@code {"sessions":k}} for a user, {@code {"members":k}} for a room, or
 * {@code {"error":"not-found"|"unavailable"}}. Entries for the same target (a session, a user, a
 * room) are queued in batch order; entries for different targets are delivered concurrently, so
 * their relative order is not defined.
 */
final class BatchPublish {
  /** Where a batch's entries go: {@link Delivery} over the cluster; a test may stand in for it. */
  interface Recipients {
    CompletionStage<ClientProxy.EnqueuedAll> toSessionAll(String sessionId, List<Draft> drafts);

    /** Queues one message for every member of a group; completes with how many queued it. */
    CompletionStage<Integer> toGroup(String groupId, Draft draft);

    static Recipients of(Delivery delivery) {
      return new Recipients() {
        @Override
        public CompletionStage<ClientProxy.EnqueuedAll> toSessionAll(String sessionId, List<Draft> drafts) {
          return delivery.toSessionAll(sessionId, drafts);
        }

        @Override
        public CompletionStage<Integer> toGroup(String groupId, Draft draft) {
          return delivery.toGroup(groupId, draft, null);
        }
      };
    }
  }

  private final Recipients recipients;
  private final TetherMetrics metrics;
  private final int maxMessages;

  BatchPublish(Recipients recipients, TetherMetrics metrics, int maxMessages) {
    this.recipients = recipients;
    this.metrics = metrics;
    this.maxMessages = maxMessages;
  }

  /** One validated entry: its target, its data as compact JSON, its idempotency key or null. */
  record Entry(Target target, String data, String idempotencyKey) {}

  /** A batch that cannot be accepted: the 400's message. */
  static final class Invalid extends Exception {
    Invalid(String message) {
      super(message, null, false, false);
    }
  }

  /** Reads and validates the whole body; throws {@link Invalid} at the first problem. */
  List<Entry> parse(JsonNode body) throws Invalid {
    if (body == null || !body.isObject() || !body.path("messages").isArray()) {
      throw new Invalid("body must be a JSON object with a 'messages' array");
    }
    JsonNode messages = body.get("messages");
    if (messages.isEmpty() || messages.size() > maxMessages) {
      throw new Invalid("'messages' must hold 1-" + maxMessages + " entries");
    }
    List<Entry> entries = new ArrayList<>(messages.size());
    for (int i = 0; i < messages.size(); i++) entries.add(parseEntry(messages.get(i), i));
    return entries;
  }

  private static Entry parseEntry(JsonNode node, int index) throws Invalid {
    String at = "messages[" + index + "]: ";
    if (!node.isObject()) throw new Invalid(at + "must be an object");
    if (!node.has("data")) throw new Invalid(at + "needs a 'data' field");
    Target target = null;
    int targets = 0;
    for (Target.Kind kind : Target.Kind.values()) {
      String field = switch (kind) {
        case SESSION -> "sessionId";
        case USER -> "userId";
        case ROOM -> "room";
      };
      JsonNode id = node.get(field);
      if (id == null) continue;
      targets++;
      if (!id.isTextual()) throw new Invalid(at + "'" + field + "' must be a string");
      // A malformed session id cannot exist: that entry is answered not-found, as a single
      // publish to it would be (404). User ids and room names are checked as the single
      // endpoints check them (400).
      if (kind != Target.Kind.SESSION && !FrameCodec.validName(id.asText())) {
        throw new Invalid(at + "'" + field + "' must be 1-128 characters without control characters");
      }
      target = new Target(kind, id.asText());
    }
    if (targets != 1) throw new Invalid(at + "needs exactly one of 'sessionId', 'userId', 'room'");
    JsonNode key = node.get("idempotencyKey");
    if (key != null && (!key.isTextual() || key.asText().isEmpty() || key.asText().length() > 128)) {
      throw new Invalid(at + "'idempotencyKey' must be a string of 1-128 characters");
    }
    return new Entry(target, node.get("data").toString(), key == null ? null : key.asText());
  }

  /**
   * Delivers a validated batch; completes with the answer's body. Never fails: an entry whose
   * session did not answer in time is reported as {@code unavailable}.
   */
  CompletableFuture<ObjectNode> deliver(List<Entry> entries) {
    ObjectNode[] results = new ObjectNode[entries.size()];
    List<CompletableFuture<Void>> pending = new ArrayList<>();

    // Entries for one session go to it together, in batch order; entries for one group (a user's
    // sessions, a room's members) one after the other, in batch order.
    Map<String, List<Integer>> bySession = new LinkedHashMap<>();
    Map<String, List<Integer>> byGroup = new LinkedHashMap<>();
    for (int i = 0; i < entries.size(); i++) {
      Entry entry = entries.get(i);
      metrics.apiPublish(entry.target().kind().name().toLowerCase(java.util.Locale.ROOT));
      switch (entry.target().kind()) {
        case SESSION -> bySession.computeIfAbsent(entry.target().id(), id -> new ArrayList<>()).add(i);
        case USER -> byGroup.computeIfAbsent(Membership.userId(entry.target().id()), id -> new ArrayList<>()).add(i);
        case ROOM -> byGroup.computeIfAbsent(Membership.roomId(entry.target().id()), id -> new ArrayList<>()).add(i);
      }
    }
    bySession.forEach((sessionId, indexes) -> pending.add(deliverToSession(sessionId, indexes, entries, results)));
    byGroup.forEach((groupId, indexes) -> pending.add(deliverToGroup(groupId, indexes, entries, results)));

    return CompletableFuture.allOf(pending.toArray(CompletableFuture[]::new))
        .thenApply(
            done -> {
              ObjectNode answer = JsonNodeFactory.instance.objectNode();
              ArrayNode list = answer.putArray("results");
              for (ObjectNode result : results) list.add(result);
              return answer;
            });
  }

  /**
   * The most one {@code EnqueueAll} carries. It crosses the cluster as one Artery message when the
   * session lives on another node, and Artery drops a message over its frame size ({@code
   * pekko.remote.artery.advanced.maximum-frame-size}, which only has to hold one request body, not
   * a whole batch of them); a session's larger run is sent in pieces of at most this size, one
   * after the other, which also keeps one session's run from holding the link between two nodes.
   */
  static final long MAX_PIECE_BYTES = 128 * 1024;

  private CompletableFuture<Void> deliverToSession(
      String sessionId, List<Integer> indexes, List<Entry> entries, ObjectNode[] results) {
    if (!FrameCodec.validSessionId(sessionId)) {
      for (int i : indexes) results[i] = error("not-found");
      return CompletableFuture.completedFuture(null);
    }
    // In order: a piece is sent once the one before it was confirmed. After a piece that was not
    // confirmed, the rest are not sent (answered unavailable), so a retry cannot reorder them.
    CompletableFuture<Boolean> confirmed = CompletableFuture.completedFuture(true);
    for (List<Integer> piece : pieces(indexes, entries)) {
      confirmed =
          confirmed.thenCompose(
              ok -> ok ? deliverPiece(sessionId, piece, entries, results) : notSent(piece, results));
    }
    return confirmed.thenApply(ok -> null);
  }

  /** Splits a session's entries, in order, into pieces of at most {@link #MAX_PIECE_BYTES}. */
  static List<List<Integer>> pieces(List<Integer> indexes, List<Entry> entries) {
    List<List<Integer>> pieces = new ArrayList<>();
    List<Integer> piece = new ArrayList<>();
    long bytes = 0;
    for (int i : indexes) {
      long size = OutboxMessage.bytesOf(entries.get(i).data());
      if (!piece.isEmpty() && bytes + size > MAX_PIECE_BYTES) {
        pieces.add(piece);
        piece = new ArrayList<>();
        bytes = 0;
      }
      piece.add(i);
      bytes += size;
    }
    if (!piece.isEmpty()) pieces.add(piece);
    return pieces;
  }

  /** Queues one piece; completes with whether the session confirmed it. */
  private CompletableFuture<Boolean> deliverPiece(
      String sessionId, List<Integer> piece, List<Entry> entries, ObjectNode[] results) {
    List<Draft> drafts = new ArrayList<>(piece.size());
    for (int i : piece) drafts.add(Draft.fromBackend(entries.get(i).data(), null, entries.get(i).idempotencyKey()));
    return recipients
        .toSessionAll(sessionId, drafts)
        .toCompletableFuture()
        .handle(
            (answer, failure) -> {
              for (int k = 0; k < piece.size(); k++) {
                int i = piece.get(k);
                if (failure != null) results[i] = error("unavailable");
                else if (answer.outcomes().get(k).result() instanceof ClientProxy.Enqueued queued) results[i] = seq(queued.seq());
                else results[i] = error("not-found");
              }
              return failure == null;
            });
  }

  private static CompletableFuture<Boolean> notSent(List<Integer> piece, ObjectNode[] results) {
    for (int i : piece) results[i] = error("unavailable");
    return CompletableFuture.completedFuture(false);
  }

  /**
   * A group's entries, one at a time: each is queued at every member before the next is sent, so
   * members see them in batch order even when the group and its members live on other nodes (two
   * concurrent fan-outs can interleave there). As for a session, after an entry that was not
   * confirmed the rest are not sent (answered unavailable), so a retry cannot reorder them.
   */
  private CompletableFuture<Void> deliverToGroup(
      String groupId, List<Integer> indexes, List<Entry> entries, ObjectNode[] results) {
    CompletableFuture<Boolean> confirmed = CompletableFuture.completedFuture(true);
    for (int i : indexes) {
      confirmed =
          confirmed.thenCompose(
              ok -> ok ? deliverGroupEntry(groupId, entries.get(i), i, results) : notSent(List.of(i), results));
    }
    return confirmed.thenApply(ok -> null);
  }

  /** Queues one entry at every member of its group; completes with whether that was confirmed. */
  private CompletableFuture<Boolean> deliverGroupEntry(String groupId, Entry entry, int index, ObjectNode[] results) {
    boolean room = entry.target().kind() == Target.Kind.ROOM;
    Draft draft = Draft.fromBackend(entry.data(), room ? entry.target().id() : null, entry.idempotencyKey());
    return recipients
        .toGroup(groupId, draft)
        .toCompletableFuture()
        .handle(
            (count, failure) -> {
              results[index] =
                  failure != null
                      ? error("unavailable")
                      : JsonNodeFactory.instance.objectNode().put(room ? "members" : "sessions", count);
              return failure == null;
            });
  }

  private static ObjectNode seq(long seq) {
    return JsonNodeFactory.instance.objectNode().put("seq", seq);
  }

  private static ObjectNode error(String code) {
    return JsonNodeFactory.instance.objectNode().put("error", code);
  }
}
