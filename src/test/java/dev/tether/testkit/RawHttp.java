package dev.tether.testkit;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * HTTP/1.1 requests written by hand on a {@link RawWebSocket} connection, for tests that need to
 * see what a client library hides: when the server answers, whether it keeps the connection.
 */
public final class RawHttp {
  private RawHttp() {}

  /** {@code GET path}, keep-alive (HTTP/1.1's default). */
  public static byte[] get(int port, String path) {
    return RawWebSocket.request("GET", path, headers(port, Map.of()));
  }

  /** The head of a {@code POST} whose body of {@code contentLength} bytes is written separately. */
  public static byte[] postHead(int port, String path, int contentLength, Map<String, String> extraHeaders) {
    Map<String, String> headers = headers(port, extraHeaders);
    headers.put("Content-Type", "application/json");
    headers.put("Content-Length", Integer.toString(contentLength));
    return RawWebSocket.request("POST", path, headers);
  }

  /** A whole {@code POST} of a JSON body. */
  public static byte[] post(int port, String path, String json) {
    byte[] body = json.getBytes(StandardCharsets.UTF_8);
    byte[] head = postHead(port, path, body.length, Map.of());
    byte[] request = new byte[head.length + body.length];
    System.arraycopy(head, 0, request, 0, head.length);
    System.arraycopy(body, 0, request, head.length, body.length);
    return request;
  }

  /**
   * Writes a {@code POST}'s head, waits {@code pause} (time for the server to answer early, were it
   * to answer before the body), writes the body and reads the response.
   */
  public static Response postHeadThenBody(
      RawWebSocket connection, int port, String path, Map<String, String> headers, String json, Duration pause)
      throws InterruptedException {
    byte[] body = json.getBytes(StandardCharsets.UTF_8);
    connection.write(postHead(port, path, body.length, headers));
    Thread.sleep(pause.toMillis());
    connection.write(body);
    return read(connection, Duration.ofSeconds(10));
  }

  /** Asserts the connection is still open and usable: a health check on it is answered 200. */
  public static void assertStillServes(RawWebSocket connection, int port) {
    connection.write(get(port, "/health/alive"));
    Response alive = read(connection, Duration.ofSeconds(10));
    if (alive.status() != 200) throw new AssertionError("the connection's next request got " + alive.head());
  }

  /** A response read whole: its head and its body as text. */
  public record Response(RawWebSocket.HttpHead head, String body) {
    public int status() {
      return head.status();
    }
  }

  /** Reads one whole response (head and body), waiting at most {@code timeout} for each read. */
  public static Response read(RawWebSocket connection, Duration timeout) {
    connection.setReadTimeout(timeout);
    RawWebSocket.HttpHead head = connection.readHead();
    return new Response(head, new String(connection.readBody(head), StandardCharsets.UTF_8));
  }

  private static Map<String, String> headers(int port, Map<String, String> extra) {
    Map<String, String> headers = new LinkedHashMap<>();
    headers.put("Host", "127.0.0.1:" + port);
    headers.putAll(extra);
    return headers;
  }
}
