package dev.tether.testkit;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

/** The backend HTTP API, as a backend would call it. */
public final class Api {
  private static final ObjectMapper JSON = new ObjectMapper();
  private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
  private final String base;
  private final String bearer;

  public Api(int port) {
    this(port, null);
  }

  public Api(int port, String bearer) {
    this.base = "http://127.0.0.1:" + port;
    this.bearer = bearer;
  }

  public record Response(int status, String body) {
    public JsonNode json() {
      try {
        return JSON.readTree(body);
      } catch (Exception e) {
        throw new AssertionError("not JSON: " + body, e);
      }
    }
  }

  public Response get(String path) {
    return send(request(path).GET());
  }

  public Response delete(String path) {
    return send(request(path).DELETE());
  }

  public Response post(String path, String body) {
    return post(path, body, java.util.Map.of());
  }

  public Response post(String path, String body, java.util.Map<String, String> headers) {
    HttpRequest.Builder b = request(path).header("Content-Type", "application/json");
    headers.forEach(b::header);
    return send(b.POST(HttpRequest.BodyPublishers.ofString(body)));
  }

  /**
   * Polls {@code GET /api/sessions/{id}} until the session is in {@code state}; returns its JSON.
   * (The state moves asynchronously: a socket's close reaches the session a moment later.)
   */
  public JsonNode awaitSessionState(String sessionId, String state, Duration max) {
    String[] last = {null};
    try {
      return Eventually.awaitAssert(
          max,
          () -> {
            Response r = get("/api/sessions/" + sessionId);
            if (r.status() == 200) last[0] = r.json().get("state").asText();
            if (!state.equals(last[0])) throw new AssertionError("state " + last[0]);
            return r.json();
          });
    } catch (AssertionError e) {
      throw new AssertionError("session " + sessionId + " not " + state + " (last seen " + last[0] + ")", e);
    }
  }

  /** Polls {@code GET path} until it answers {@code status}. */
  public void awaitStatus(String path, int status, Duration max) {
    Eventually.awaitAssert(
        max,
        () -> {
          int got = get(path).status();
          if (got != status) throw new AssertionError(path + " answered " + got + ", expected " + status);
        });
  }

  /** Publishes {@code {"data": dataJson}} to a session; returns the assigned seq. */
  public long publishToSession(String sessionId, String dataJson) {
    Response r = post("/api/sessions/" + sessionId + "/messages", "{\"data\":" + dataJson + "}");
    if (r.status() != 202) throw new AssertionError("publish answered " + r.status() + " " + r.body());
    return r.json().get("seq").asLong();
  }

  private HttpRequest.Builder request(String path) {
    HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(15));
    if (bearer != null) b.header("Authorization", "Bearer " + bearer);
    return b;
  }

  private Response send(HttpRequest.Builder builder) {
    try {
      HttpResponse<String> r = http.send(builder.build(), HttpResponse.BodyHandlers.ofString());
      return new Response(r.statusCode(), r.body());
    } catch (Exception e) {
      throw new IllegalStateException(e);
    }
  }
}
