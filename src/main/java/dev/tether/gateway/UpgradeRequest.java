package dev.tether.gateway;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Base64;
import java.util.Locale;

/**
 * The HTTP request that opens a WebSocket (RFC 6455 section 4.2.1), read by {@link
 * WebSocketStage}: either the handshake's answer ({@code 101} and the {@code
 * Sec-WebSocket-Accept} key) or the HTTP error that refuses it. Only what a WebSocket upgrade
 * needs is parsed; every other request goes to pekko-http ({@link GatewayListener}).
 */
final class UpgradeRequest {
  /** The request head may not be longer than this (pekko-http's default limits are similar). */
  static final int MAX_HEAD_BYTES = 16 * 1024;

  private static final String ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

  /** What the parse decided: {@code response} is what to write; {@code upgraded} says if it is a 101. */
  record Outcome(boolean upgraded, String response, String forwardedFor, String realIp) {}

  private UpgradeRequest() {}

  /**
   * Reads the head (request line and headers, without the final empty line) and answers it.
   * {@code forwardedFor} and {@code realIp} are the first {@code X-Forwarded-For} address and
   * the {@code X-Real-IP} header, for a deployment that trusts its reverse proxy.
   */
  static Outcome answer(String head) {
    String[] lines = head.split("\r\n", -1);
    String[] requestLine = lines[0].split(" ", -1);
    if (requestLine.length != 3 || !requestLine[2].startsWith("HTTP/1.")) {
      return refuse(400, "Bad Request", "malformed request line");
    }
    if (!requestLine[0].equals("GET")) {
      return refuse(405, "Method Not Allowed", "the WebSocket endpoint takes GET only", "Allow: GET\r\n");
    }
    String upgrade = null, connection = null, version = null, key = null, forwardedFor = null, realIp = null;
    for (int i = 1; i < lines.length; i++) {
      String line = lines[i];
      int colon = line.indexOf(':');
      if (colon <= 0) return refuse(400, "Bad Request", "malformed header line");
      String name = line.substring(0, colon).trim().toLowerCase(Locale.ROOT);
      String value = line.substring(colon + 1).trim();
      switch (name) {
        case "upgrade" -> upgrade = value;
        case "connection" -> connection = connection == null ? value : connection + "," + value;
        case "sec-websocket-version" -> version = value;
        case "sec-websocket-key" -> key = value;
        case "x-forwarded-for" -> {
          if (forwardedFor == null) forwardedFor = value.split(",", 2)[0].trim();
        }
        case "x-real-ip" -> realIp = value;
        default -> {}
      }
    }
    if (upgrade == null || !hasToken(upgrade, "websocket") || connection == null || !hasToken(connection, "upgrade")) {
      return refuse(400, "Bad Request", "Expected WebSocket Upgrade request");
    }
    if (!"13".equals(version)) {
      return refuse(426, "Upgrade Required", "unsupported WebSocket version", "Sec-WebSocket-Version: 13\r\n");
    }
    if (key == null || !isValidKey(key)) {
      return refuse(400, "Bad Request", "missing or malformed Sec-WebSocket-Key");
    }
    String response =
        "HTTP/1.1 101 Switching Protocols\r\n"
            + "Upgrade: websocket\r\n"
            + "Connection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: "
            + acceptKey(key)
            + "\r\n\r\n";
    return new Outcome(true, response, forwardedFor, realIp);
  }

  /** The answer to a request head that is too long or never ends in time. */
  static Outcome refuse(int status, String statusText, String message) {
    return refuse(status, statusText, message, "");
  }

  /** The node has too many handshakes in progress and this one waited too long for its turn. */
  static Outcome busy() {
    return refuse(
        503, "Service Unavailable", "server busy: too many handshakes in progress; retry shortly", "Retry-After: 1\r\n");
  }

  private static Outcome refuse(int status, String statusText, String message, String extraHeaders) {
    byte[] body = message.getBytes(StandardCharsets.UTF_8);
    String response =
        "HTTP/1.1 "
            + status
            + " "
            + statusText
            + "\r\n"
            + extraHeaders
            + "Content-Type: text/plain; charset=UTF-8\r\n"
            + "Content-Length: "
            + body.length
            + "\r\nConnection: close\r\n\r\n"
            + message;
    return new Outcome(false, response, null, null);
  }

  /** base64(SHA-1(key + GUID)), RFC 6455 section 4.2.2. */
  static String acceptKey(String key) {
    try {
      byte[] digest =
          MessageDigest.getInstance("SHA-1").digest((key + ACCEPT_GUID).getBytes(StandardCharsets.US_ASCII));
      return Base64.getEncoder().encodeToString(digest);
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("every JVM has SHA-1", e);
    }
  }

  /** The key is 16 random bytes, base64-encoded (RFC 6455 section 4.1). */
  private static boolean isValidKey(String key) {
    try {
      return Base64.getDecoder().decode(key).length == 16;
    } catch (IllegalArgumentException notBase64) {
      return false;
    }
  }

  /** Whether a comma-separated header value lists {@code token} (case-insensitively). */
  private static boolean hasToken(String value, String token) {
    for (String part : value.split(",")) {
      if (part.trim().equalsIgnoreCase(token)) return true;
    }
    return false;
  }
}
