package dev.tether.testkit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.locks.LockSupport;

/**
 * RFC 6455 spoken by hand over a plain {@link Socket}, for tests that pin the server's wire
 * behaviour independently of any WebSocket library: the upgrade request as raw bytes (any
 * headers, written at once or byte by byte), the HTTP response head, and frames built and parsed
 * bit by bit (client frames masked unless asked otherwise, any opcode, FIN, 7/16/64-bit lengths;
 * server frames checked to be unmasked). Every read has a timeout, so no test can hang.
 */
public final class RawWebSocket implements AutoCloseable {
  /** The GUID of RFC 6455, section 1.3. */
  public static final String GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

  public static final Duration READ_TIMEOUT = Duration.ofSeconds(5);

  public static final int CONTINUATION = 0x0;
  public static final int TEXT = 0x1;
  public static final int BINARY = 0x2;
  public static final int CLOSE = 0x8;
  public static final int PING = 0x9;
  public static final int PONG = 0xA;

  /** How a frame's payload length is written (RFC 6455, section 5.2). */
  public enum Length {
    /** The shortest form, as the RFC requires of a sender. */
    MINIMAL,
    /** 7 bits in the second byte (payloads up to 125 bytes). */
    BITS_7,
    /** 126, then a 16-bit length. */
    BITS_16,
    /** 127, then a 64-bit length. */
    BITS_64
  }

  /** How a connection ended, as seen by a reader. */
  public enum End {
    /** The server closed its side cleanly: read returned -1. */
    EOF,
    /** The connection was reset. */
    RESET,
    /** Nothing happened within the timeout. */
    TIMEOUT
  }

  private static final SecureRandom RANDOM = new SecureRandom();
  private static final int MAX_HEAD_BYTES = 64 * 1024;
  private static final int MAX_FRAME_BYTES = 16 * 1024 * 1024;

  private final Socket socket;
  private final InputStream in;
  private final OutputStream out;

  private RawWebSocket(Socket socket) throws IOException {
    this.socket = socket;
    this.in = new BufferedInputStream(socket.getInputStream());
    this.out = socket.getOutputStream();
  }

  /** A TCP connection to 127.0.0.1:{@code port}, nothing sent yet (Nagle off: each write is sent at once). */
  public static RawWebSocket connect(int port) {
    try {
      Socket socket = new Socket();
      socket.setTcpNoDelay(true);
      socket.connect(new InetSocketAddress("127.0.0.1", port), (int) READ_TIMEOUT.toMillis());
      socket.setSoTimeout((int) READ_TIMEOUT.toMillis());
      return new RawWebSocket(socket);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** Connects, sends a standard upgrade to {@code /ws} and checks the 101 answer. */
  public static RawWebSocket open(int port) {
    RawWebSocket ws = connect(port);
    String key = newKey();
    ws.write(request("GET", "/ws", upgradeHeaders(port, key)));
    assertUpgraded(ws.readHead(), key);
    return ws;
  }

  // -------------------------------------------------------------------------------------------
  // The HTTP side

  /** A fresh Sec-WebSocket-Key: 16 random bytes, base64. */
  public static String newKey() {
    byte[] nonce = new byte[16];
    RANDOM.nextBytes(nonce);
    return Base64.getEncoder().encodeToString(nonce);
  }

  /** The Sec-WebSocket-Accept a server must answer {@code key} with: base64(SHA-1(key + GUID)). */
  public static String acceptFor(String key) {
    try {
      byte[] sha1 = MessageDigest.getInstance("SHA-1").digest((key + GUID).getBytes(StandardCharsets.US_ASCII));
      return Base64.getEncoder().encodeToString(sha1);
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }

  /** The headers of a valid upgrade request, in order; the map can be changed before use. */
  public static Map<String, String> upgradeHeaders(int port, String key) {
    Map<String, String> headers = new LinkedHashMap<>();
    headers.put("Host", "127.0.0.1:" + port);
    headers.put("Upgrade", "websocket");
    headers.put("Connection", "Upgrade");
    headers.put("Sec-WebSocket-Key", key);
    headers.put("Sec-WebSocket-Version", "13");
    return headers;
  }

  /** An HTTP/1.1 request head (no body) as bytes. */
  public static byte[] request(String method, String path, Map<String, String> headers) {
    StringBuilder head = new StringBuilder(method).append(' ').append(path).append(" HTTP/1.1\r\n");
    headers.forEach((name, value) -> head.append(name).append(": ").append(value).append("\r\n"));
    head.append("\r\n");
    return head.toString().getBytes(StandardCharsets.ISO_8859_1);
  }

  /** An HTTP response head: the status and the headers (names lower-cased, values trimmed). */
  public record HttpHead(String statusLine, int status, Map<String, List<String>> headers) {
    /** The first value of header {@code name}, or null. */
    public String header(String name) {
      List<String> values = headers.get(name.toLowerCase(Locale.ROOT));
      return values == null || values.isEmpty() ? null : values.get(0);
    }

    /** True if header {@code name} lists {@code token} (comma-separated, case-insensitive). */
    public boolean headerHasToken(String name, String token) {
      List<String> values = headers.get(name.toLowerCase(Locale.ROOT));
      if (values == null) return false;
      for (String value : values) {
        for (String part : value.split(",")) {
          if (part.trim().equalsIgnoreCase(token)) return true;
        }
      }
      return false;
    }
  }

  /**
   * Reads the response head up to the blank line, and not one byte more: whatever follows (a body,
   * the first WebSocket frames) is left for the next read.
   */
  public HttpHead readHead() {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    try {
      int matched = 0; // of "\r\n\r\n"
      while (matched < 4) {
        int b = in.read();
        if (b < 0) throw new AssertionError("connection closed before the end of the response head: " + ascii(bytes));
        bytes.write(b);
        if (bytes.size() > MAX_HEAD_BYTES) throw new AssertionError("response head too long");
        matched = b == (matched % 2 == 0 ? '\r' : '\n') ? matched + 1 : (b == '\r' ? 1 : 0);
      }
    } catch (SocketTimeoutException e) {
      throw new AssertionError("no complete response head within " + READ_TIMEOUT + ", got: " + ascii(bytes), e);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    String[] lines = ascii(bytes).split("\r\n");
    String statusLine = lines[0];
    String[] parts = statusLine.split(" ", 3);
    assertTrue(parts.length >= 2 && parts[0].startsWith("HTTP/1."), () -> "not an HTTP status line: " + statusLine);
    Map<String, List<String>> headers = new LinkedHashMap<>();
    for (int i = 1; i < lines.length; i++) {
      int colon = lines[i].indexOf(':');
      if (colon <= 0) continue;
      headers
          .computeIfAbsent(lines[i].substring(0, colon).trim().toLowerCase(Locale.ROOT), k -> new ArrayList<>())
          .add(lines[i].substring(colon + 1).trim());
    }
    return new HttpHead(statusLine, Integer.parseInt(parts[1]), headers);
  }

  /** The body after {@code head}: by Content-Length, chunked, or up to the end of the connection. */
  public byte[] readBody(HttpHead head) {
    try {
      String length = head.header("Content-Length");
      if (length != null) return readExactly(Integer.parseInt(length));
      if ("chunked".equalsIgnoreCase(head.header("Transfer-Encoding"))) {
        ByteArrayOutputStream body = new ByteArrayOutputStream();
        while (true) {
          String sizeLine = readLine();
          int size = Integer.parseInt(sizeLine.split(";")[0].trim(), 16);
          if (size == 0) {
            while (!readLine().isEmpty()) {
              // trailers
            }
            return body.toByteArray();
          }
          body.write(readExactly(size));
          readLine();
        }
      }
      if (head.status() == 101 || head.status() == 204 || head.status() == 304) return new byte[0];
      return in.readAllBytes();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** Asserts {@code head} is a valid answer to an upgrade with {@code key} (RFC 6455, section 4.2.2). */
  public static void assertUpgraded(HttpHead head, String key) {
    assertEquals(101, head.status(), () -> "expected 101 Switching Protocols, got " + head);
    assertTrue(head.headerHasToken("Upgrade", "websocket"), () -> "Upgrade: websocket missing in " + head);
    assertTrue(head.headerHasToken("Connection", "upgrade"), () -> "Connection: Upgrade missing in " + head);
    assertEquals(acceptFor(key), head.header("Sec-WebSocket-Accept"), () -> "Sec-WebSocket-Accept in " + head);
  }

  // -------------------------------------------------------------------------------------------
  // Frames

  /** One frame as it came off the wire. */
  public record Frame(boolean fin, int rsv, int opcode, byte[] payload) {
    public String text() {
      return new String(payload, StandardCharsets.UTF_8);
    }

    /** A close frame's status code, or -1 if its payload is empty. */
    public int closeCode() {
      if (opcode != CLOSE) throw new AssertionError("not a close frame: " + this);
      return payload.length >= 2 ? ((payload[0] & 0xFF) << 8) | (payload[1] & 0xFF) : -1;
    }

    public String closeReason() {
      if (opcode != CLOSE) throw new AssertionError("not a close frame: " + this);
      return payload.length > 2 ? new String(payload, 2, payload.length - 2, StandardCharsets.UTF_8) : "";
    }

    @Override
    public String toString() {
      String body =
          opcode == CLOSE
              ? "code=" + closeCode() + " reason=" + closeReason()
              : payload.length <= 200 ? text() : payload.length + " bytes";
      return "Frame[fin=" + fin + " rsv=" + rsv + " opcode=" + opcode + " " + body + "]";
    }
  }

  /** A client frame, masked, FIN set, shortest length. */
  public static byte[] frame(int opcode, byte[] payload) {
    return frame(true, opcode, payload, true, Length.MINIMAL);
  }

  /** A client frame with everything chosen: FIN, opcode, masking, and the length's encoding. */
  public static byte[] frame(boolean fin, int opcode, byte[] payload, boolean masked, Length length) {
    ByteArrayOutputStream frame = new ByteArrayOutputStream(payload.length + 14);
    frame.write((fin ? 0x80 : 0) | (opcode & 0x0F));
    int maskBit = masked ? 0x80 : 0;
    Length form = length;
    if (form == Length.MINIMAL) {
      form = payload.length <= 125 ? Length.BITS_7 : payload.length <= 0xFFFF ? Length.BITS_16 : Length.BITS_64;
    }
    switch (form) {
      case BITS_7 -> {
        if (payload.length > 125) throw new IllegalArgumentException("7-bit length holds at most 125");
        frame.write(maskBit | payload.length);
      }
      case BITS_16 -> {
        if (payload.length > 0xFFFF) throw new IllegalArgumentException("16-bit length holds at most 65535");
        frame.write(maskBit | 126);
        frame.write(payload.length >>> 8);
        frame.write(payload.length);
      }
      default -> {
        frame.write(maskBit | 127);
        long n = payload.length;
        for (int shift = 56; shift >= 0; shift -= 8) frame.write((int) (n >>> shift));
      }
    }
    if (masked) {
      byte[] key = new byte[4];
      RANDOM.nextBytes(key);
      frame.write(key, 0, 4);
      byte[] maskedPayload = new byte[payload.length];
      for (int i = 0; i < payload.length; i++) maskedPayload[i] = (byte) (payload[i] ^ key[i & 3]);
      frame.write(maskedPayload, 0, maskedPayload.length);
    } else {
      frame.write(payload, 0, payload.length);
    }
    return frame.toByteArray();
  }

  /** A masked text frame holding {@code text}. */
  public static byte[] textFrame(String text) {
    return frame(TEXT, text.getBytes(StandardCharsets.UTF_8));
  }

  /** A close frame's payload: the code, then the reason in UTF-8. */
  public static byte[] closePayload(int code, String reason) {
    byte[] text = reason.getBytes(StandardCharsets.UTF_8);
    byte[] payload = new byte[2 + text.length];
    payload[0] = (byte) (code >>> 8);
    payload[1] = (byte) code;
    System.arraycopy(text, 0, payload, 2, text.length);
    return payload;
  }

  /** Writes {@code parts} in one write (one TCP segment where they fit). */
  public RawWebSocket write(byte[]... parts) {
    ByteArrayOutputStream all = new ByteArrayOutputStream();
    for (byte[] part : parts) all.write(part, 0, part.length);
    try {
      out.write(all.toByteArray());
      out.flush();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return this;
  }

  /** Like {@link #write}, but a connection the server has already closed is no failure; true if written. */
  public boolean tryWrite(byte[]... parts) {
    try {
      write(parts);
      return true;
    } catch (UncheckedIOException e) {
      return false;
    }
  }

  /** Writes {@code bytes} one at a time with {@code pause} between them. */
  public RawWebSocket writeByteByByte(byte[] bytes, Duration pause) {
    try {
      for (byte b : bytes) {
        out.write(b);
        out.flush();
        LockSupport.parkNanos(pause.toNanos());
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return this;
  }

  public RawWebSocket sendText(String text) {
    return write(textFrame(text));
  }

  /**
   * The next server frame. Fails if the connection ends or nothing arrives within the timeout, and
   * if the frame is masked (a server must never mask, RFC 6455 section 5.1).
   */
  public Frame readFrame() {
    Frame frame = readFrameOrNull();
    if (frame == null) throw new AssertionError("the connection ended where a frame was expected");
    return frame;
  }

  /** The next server frame, or null if the connection ended (EOF or reset) before one began. */
  public Frame readFrameOrNull() {
    try {
      int b0 = in.read();
      if (b0 < 0) return null;
      int b1 = readByte();
      assertEquals(0, b1 & 0x80, "a server frame must not be masked (RFC 6455, 5.1)");
      long length = b1 & 0x7F;
      if (length == 126) {
        length = (readByte() << 8) | readByte();
      } else if (length == 127) {
        length = 0;
        for (int i = 0; i < 8; i++) length = (length << 8) | readByte();
      }
      if (length > MAX_FRAME_BYTES) throw new AssertionError("server frame of " + length + " bytes");
      return new Frame((b0 & 0x80) != 0, (b0 >>> 4) & 0x07, b0 & 0x0F, readExactly((int) length));
    } catch (SocketTimeoutException e) {
      throw new AssertionError("no frame within " + READ_TIMEOUT, e);
    } catch (SocketException e) {
      return null; // reset
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** The next frame, which must be a complete (FIN, no RSV bits) text frame; its text. */
  public String readText() {
    Frame frame = readFrame();
    assertEquals(TEXT, frame.opcode(), () -> "expected a text frame, got " + frame);
    assertTrue(frame.fin(), () -> "expected FIN on " + frame);
    assertEquals(0, frame.rsv(), () -> "RSV bits set without a negotiated extension: " + frame);
    return frame.text();
  }

  /** The next frame, which must be a close frame (FIN, no RSV bits). */
  public Frame readClose() {
    Frame frame = readFrame();
    assertEquals(CLOSE, frame.opcode(), () -> "expected a close frame, got " + frame);
    assertTrue(frame.fin(), () -> "a control frame must not be fragmented: " + frame);
    assertEquals(0, frame.rsv(), () -> "RSV bits set: " + frame);
    return frame;
  }

  /**
   * Waits for the end of the connection, within {@code timeout}. Any byte that arrives instead is a
   * failure (after a close frame the server may send nothing more).
   */
  public End awaitEnd(Duration timeout) {
    try {
      socket.setSoTimeout((int) Math.max(1, timeout.toMillis()));
      int b = in.read();
      if (b >= 0) throw new AssertionError("expected the end of the connection, got byte " + b);
      return End.EOF;
    } catch (SocketTimeoutException e) {
      return End.TIMEOUT;
    } catch (SocketException e) {
      return End.RESET;
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    } finally {
      try {
        if (!socket.isClosed()) socket.setSoTimeout((int) READ_TIMEOUT.toMillis());
      } catch (SocketException ignored) {
        // closed meanwhile
      }
    }
  }

  /** Half-closes the connection: no more bytes from us (FIN), but the server's can still be read. */
  public void shutdownOutput() {
    try {
      socket.shutdownOutput();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  public void setReadTimeout(Duration timeout) {
    try {
      socket.setSoTimeout((int) timeout.toMillis());
    } catch (SocketException e) {
      throw new UncheckedIOException(e);
    }
  }

  @Override
  public void close() {
    try {
      socket.close();
    } catch (IOException ignored) {
      // nothing to do
    }
  }

  // -------------------------------------------------------------------------------------------

  private int readByte() throws IOException {
    int b = in.read();
    if (b < 0) throw new EOFException("connection ended inside a frame");
    return b;
  }

  private byte[] readExactly(int n) throws IOException {
    byte[] bytes = in.readNBytes(n);
    if (bytes.length < n) throw new EOFException("connection ended after " + bytes.length + " of " + n + " bytes");
    return bytes;
  }

  private String readLine() throws IOException {
    ByteArrayOutputStream line = new ByteArrayOutputStream();
    int b;
    while ((b = in.read()) >= 0 && b != '\n') {
      if (b != '\r') line.write(b);
    }
    return line.toString(StandardCharsets.ISO_8859_1);
  }

  private static String ascii(ByteArrayOutputStream bytes) {
    return bytes.toString(StandardCharsets.ISO_8859_1);
  }
}
