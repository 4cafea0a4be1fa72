package dev.tether.api;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.tether.session.ClientProxy;
import dev.tether.session.Draft;
import dev.tether.telemetry.TetherMetrics;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import org.junit.jupiter.api.Test;

/**
 * A batch's entries for one room or user go out one after the other, in batch order: the next is
 * handed to the group only once every member has queued the one before it. Here the group's
 * fan-outs are completed by hand, so the test sees exactly when each entry is sent.
 */
class BatchOrderTest {
  private static final ObjectMapper JSON = new ObjectMapper();

  /** Records every fan-out and leaves it pending until the test completes it. */
  private static final class HeldRecipients implements BatchPublish.Recipients {
    final List<String> sent = new ArrayList<>();
    final List<CompletableFuture<Integer>> answers = new ArrayList<>();

    @Override
    public CompletionStage<ClientProxy.EnqueuedAll> toSessionAll(String sessionId, List<Draft> drafts) {
      throw new AssertionError("no session entries in these batches");
    }

    @Override
    public CompletionStage<Integer> toGroup(String groupId, Draft draft) {
      sent.add(groupId + " " + draft.data());
      CompletableFuture<Integer> answer = new CompletableFuture<>();
      answers.add(answer);
      return answer;
    }
  }

  private final HeldRecipients recipients = new HeldRecipients(); // a new one for every test

  /** Hands a batch to a BatchPublish whose fan-outs all go to {@link #recipients}. */
  private CompletableFuture<ObjectNode> deliver(String body) throws Exception {
    BatchPublish batch = new BatchPublish(recipients, new TetherMetrics(), 100);
    return batch.deliver(batch.parse(JSON.readTree(body)));
  }

  @Test
  void entriesForOneRoomAreSentOneAfterTheOtherAndOtherGroupsDoNotWait() throws Exception {
    CompletableFuture<ObjectNode> answer =
        deliver(
            """
            {"messages":[{"room":"lobby","data":1},{"userId":"ann","data":2},
                         {"room":"lobby","data":3},{"room":"lobby","data":4}]}""");

    // The room's first entry and the user's entry are out; the room's second waits for its first.
    assertEquals(List.of("room:lobby 1", "user:ann 2"), recipients.sent);
    recipients.answers.get(0).complete(5);
    assertEquals("room:lobby 3", recipients.sent.get(2));
    assertEquals(3, recipients.sent.size());
    recipients.answers.get(2).complete(5);
    assertEquals("room:lobby 4", recipients.sent.get(3));
    assertFalse(answer.isDone(), "answered once every entry has its outcome");

    recipients.answers.get(1).complete(2);
    recipients.answers.get(3).complete(4);
    JsonNode results = answer.get().get("results");
    assertEquals(
        "[{\"members\":5},{\"sessions\":2},{\"members\":5},{\"members\":4}]", results.toString());
  }

  @Test
  void afterAnUnconfirmedEntryTheRoomsLaterEntriesAreNotSent() throws Exception {
    CompletableFuture<ObjectNode> answer =
        deliver(
            "{\"messages\":[{\"room\":\"lobby\",\"data\":1},{\"room\":\"lobby\",\"data\":2},{\"room\":\"lobby\",\"data\":3}]}");

    recipients.answers.get(0).completeExceptionally(new java.util.concurrent.TimeoutException("ask timed out"));
    assertTrue(answer.isDone());
    // A retry of the whole batch (with idempotency keys) then queues them in order.
    assertEquals(List.of("room:lobby 1"), recipients.sent);
    assertEquals(
        "[{\"error\":\"unavailable\"},{\"error\":\"unavailable\"},{\"error\":\"unavailable\"}]",
        answer.get().get("results").toString());
  }
}
