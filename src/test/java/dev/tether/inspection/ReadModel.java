package dev.tether.inspection;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.Eventually;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.function.Consumer;

/**
 * The inspection endpoints as a backend or an operator calls them, with the waiting an
 * eventually consistent read model needs: every {@code await...} polls until its deadline.
 */
final class ReadModel {
  /** Longer than the worst expected lag (a journal gap is given up after 2 s) with room to spare. */
  static final Duration DEADLINE = Duration.ofSeconds(15);

  private final Api api;

  ReadModel(Api api) {
    this.api = api;
  }

  /** {@code GET /api/sessions?...}: the whole answer, which must be 200. */
  JsonNode list(String query) {
    Api.Response r = api.get("/api/sessions" + (query.isEmpty() ? "" : "?" + query));
    assertEquals(200, r.status(), () -> "listing answered " + r.status() + " " + r.body());
    return r.json();
  }

  /** Every session of {@code user} (one page of up to 1000). */
  List<JsonNode> sessionsOf(String user) {
    return items(list("user=" + encode(user) + "&limit=1000").get("sessions"));
  }

  Optional<JsonNode> row(String user, String sessionId) {
    return sessionsOf(user).stream().filter(s -> sessionId.equals(s.get("sessionId").asText())).findFirst();
  }

  /** Waits until the listing shows the session in {@code state}; returns its row. */
  JsonNode awaitRow(String user, String sessionId, String state) {
    return awaitRow(user, sessionId, state, row -> {});
  }

  /** Waits until the listing shows the session in {@code state} and {@code check} passes on its row. */
  JsonNode awaitRow(String user, String sessionId, String state, Consumer<JsonNode> check) {
    return Eventually.awaitAssert(
        DEADLINE,
        () -> {
          JsonNode row = row(user, sessionId).orElseThrow(() -> new AssertionError(sessionId + " not listed yet"));
          assertEquals(state, row.get("state").asText(), () -> "row " + row);
          check.accept(row);
          return row;
        });
  }

  JsonNode receipt(String sessionId, long seq) {
    Api.Response r = api.get("/api/sessions/" + sessionId + "/messages/" + seq);
    assertEquals(200, r.status(), () -> "receipt answered " + r.status() + " " + r.body());
    return r.json();
  }

  JsonNode history(String sessionId, String query) {
    Api.Response r = api.get("/api/sessions/" + sessionId + "/history" + (query.isEmpty() ? "" : "?" + query));
    assertEquals(200, r.status(), () -> "history answered " + r.status() + " " + r.body());
    return r.json();
  }

  /** Waits until the history holds {@code count} messages; returns them. */
  List<JsonNode> awaitHistory(String sessionId, int count) {
    return Eventually.awaitAssert(
        DEADLINE,
        () -> {
          List<JsonNode> messages = items(history(sessionId, "").get("messages"));
          assertEquals(count, messages.size(), () -> "history " + messages);
          return messages;
        });
  }

  /** Waits for the live session (GET /api/sessions/{id}, asks the actor) to be in {@code state}. */
  void awaitLiveState(String sessionId, String state) {
    Eventually.awaitAssert(
        DEADLINE,
        () -> {
          Api.Response r = api.get("/api/sessions/" + sessionId);
          assertEquals(200, r.status(), r::body);
          assertEquals(state, r.json().get("state").asText());
        });
  }

  Api api() {
    return api;
  }

  static List<JsonNode> items(JsonNode array) {
    List<JsonNode> out = new ArrayList<>();
    array.forEach(out::add);
    return out;
  }

  static String encode(String text) {
    return URLEncoder.encode(text, StandardCharsets.UTF_8);
  }
}
