package dev.tether.testkit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.WebSocket;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A real WebSocket client (the JDK's) for scenario tests: sends frames, collects the server's
 * frames in order, and records the close code. {@link #drop()} pulls the plug (no close frame).
 */
public final class WsClient implements AutoCloseable {
  public static final Duration TIMEOUT = Duration.ofSeconds(10);
  private static final ObjectMapper JSON = new ObjectMapper();

  private final BlockingQueue<JsonNode> frames = new LinkedBlockingQueue<>();
  private final BlockingQueue<ByteBuffer> pongs = new LinkedBlockingQueue<>();
  private final CompletableFuture<Integer> closeCode = new CompletableFuture<>();
  private final WebSocket webSocket;
  private final boolean autoRead;

  private WsClient(int port, boolean autoRead) {
    this.autoRead = autoRead;
    this.webSocket =
        HttpClient.newHttpClient()
            .newWebSocketBuilder()
            .connectTimeout(TIMEOUT)
            .buildAsync(URI.create("ws://127.0.0.1:" + port + "/ws"), new Listener())
            .join();
  }

  public static WsClient connect(int port) {
    return new WsClient(port, true);
  }

  /**
   * Starts a session as {@code user} and pulls the plug at once (no close frame): the session is
   * left to its grace period. Returns the welcome, whose token resumes it.
   */
  public static JsonNode helloThenDrop(int port, String user) {
    try (WsClient ws = connect(port)) {
      JsonNode welcome = ws.hello(user);
      ws.drop();
      return welcome;
    }
  }

  /** A client that reads nothing until {@link #read(long)} is called: a slow consumer. */
  public static WsClient connectWithoutReading(int port) {
    return new WsClient(port, false);
  }

  public WsClient send(String json) {
    webSocket.sendText(json, true).join();
    return this;
  }

  /**
   * Like {@link #send}, for a flood the server may cut short: false when the socket's output is
   * already closed (the server closed, and the client answered its close frame).
   */
  public boolean trySend(String json) {
    try {
      webSocket.sendText(json, true).join();
      return true;
    } catch (java.util.concurrent.CompletionException e) {
      if (e.getCause() instanceof java.io.IOException) return false;
      throw e;
    }
  }

  public WsClient sendBinary(byte[] bytes) {
    webSocket.sendBinary(ByteBuffer.wrap(bytes), true).join();
    return this;
  }

  /** Starts a session as {@code user} and returns the welcome. */
  public JsonNode hello(String user) {
    send("{\"type\":\"hello\",\"user\":\"" + user + "\",\"client\":\"test/1\"}");
    return expect("welcome");
  }

  public JsonNode resume(JsonNode welcome, long lastSeq) {
    return resume(welcome.get("sessionId").asText(), welcome.get("resumeToken").asText(), lastSeq);
  }

  public JsonNode resume(String sessionId, String resumeToken, long lastSeq) {
    send(
        "{\"type\":\"resume\",\"sessionId\":\""
            + sessionId
            + "\",\"resumeToken\":\""
            + resumeToken
            + "\",\"lastSeq\":"
            + lastSeq
            + "}");
    return expect("welcome");
  }

  /** The next frame, whatever it is; fails the test after the timeout. */
  public JsonNode next() {
    return next(TIMEOUT);
  }

  public JsonNode next(Duration timeout) {
    try {
      JsonNode frame = frames.poll(timeout.toMillis(), TimeUnit.MILLISECONDS);
      if (frame == null) fail("no frame within " + timeout);
      return frame;
    } catch (InterruptedException e) {
      throw new IllegalStateException(e);
    }
  }

  /** The next frame, which must be of {@code type}. */
  public JsonNode expect(String type) {
    JsonNode frame = next();
    assertEquals(type, frame.path("type").asText(), () -> "expected a " + type + " frame, got " + frame);
    return frame;
  }

  /** The next frame must be an {@code error} with this code. */
  public JsonNode expectError(String code) {
    JsonNode frame = expect("error");
    assertEquals(code, frame.path("code").asText(), () -> "error frame " + frame);
    return frame;
  }

  /** Asserts that no frame arrives within {@code quiet}. */
  public void expectNoFrame(Duration quiet) {
    try {
      JsonNode frame = frames.poll(quiet.toMillis(), TimeUnit.MILLISECONDS);
      if (frame != null) fail("expected no frame, got " + frame);
    } catch (InterruptedException e) {
      throw new IllegalStateException(e);
    }
  }

  /** Waits for the server to close the socket; returns the close code. */
  public int awaitClose() {
    return awaitClose(TIMEOUT);
  }

  public int awaitClose(Duration timeout) {
    try {
      Integer code = closeCode.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
      assertNotNull(code);
      return code;
    } catch (Exception e) {
      throw new AssertionError("socket not closed within " + timeout, e);
    }
  }

  public boolean isClosed() {
    return closeCode.isDone();
  }

  /** Sends a WebSocket-level (protocol) ping and waits for the server's pong with the same payload. */
  public boolean protocolPing(byte[] payload) {
    webSocket.sendPing(ByteBuffer.wrap(payload)).join();
    try {
      ByteBuffer pong = pongs.poll(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
      return pong != null && pong.equals(ByteBuffer.wrap(payload));
    } catch (InterruptedException e) {
      throw new IllegalStateException(e);
    }
  }

  /** Lets a non-reading client read {@code n} more frames. */
  public void read(long n) {
    webSocket.request(n);
  }

  /** Pulls the plug: the TCP connection goes away without a close frame. */
  public void drop() {
    webSocket.abort();
  }

  public int pending() {
    return frames.size();
  }

  @Override
  public void close() {
    if (!webSocket.isOutputClosed()) webSocket.abort();
  }

  private final class Listener implements WebSocket.Listener {
    private final StringBuilder partial = new StringBuilder();

    @Override
    public void onOpen(WebSocket ws) {
      if (autoRead) ws.request(1);
    }

    @Override
    public CompletionStage<?> onText(WebSocket ws, CharSequence data, boolean last) {
      partial.append(data);
      if (last) {
        try {
          frames.add(JSON.readTree(partial.toString()));
        } catch (Exception e) {
          frames.add(JSON.createObjectNode().put("type", "unparseable").put("text", partial.toString()));
        }
        partial.setLength(0);
      }
      if (autoRead) ws.request(1);
      return null;
    }

    @Override
    public CompletionStage<?> onPong(WebSocket ws, ByteBuffer message) {
      ByteBuffer copy = ByteBuffer.allocate(message.remaining());
      copy.put(message).flip();
      pongs.add(copy);
      if (autoRead) ws.request(1);
      return null;
    }

    @Override
    public CompletionStage<?> onClose(WebSocket ws, int statusCode, String reason) {
      closeCode.complete(statusCode);
      return null;
    }

    @Override
    public void onError(WebSocket ws, Throwable error) {
      closeCode.complete(-1);
    }
  }
}
