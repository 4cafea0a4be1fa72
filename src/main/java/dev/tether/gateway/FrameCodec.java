package dev.tether.gateway;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.tether.session.OutboxMessage;
import dev.tether.session.Target;
import java.io.IOException;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.util.List;

/**
 * Text frames to {@link ClientFrame}s and server frames to text, as {@code docs/PROTOCOL.md}
 * describes them. Decoding never throws: whatever arrives becomes a frame or a {@link
 * ClientFrame.Bad} with the reason. Parsing is bounded (nesting depth, string and number
 * lengths), so a hostile frame costs no more than its size.
 */
public final class FrameCodec {
  static final int MAX_NESTING_DEPTH = 64;
  static final int MAX_NUMBER_LENGTH = 100;
  static final int MAX_NAME_LENGTH = 128;

  private static final ObjectMapper MAPPER = createMapper();

  private static ObjectMapper createMapper() {
    JsonFactory factory =
        JsonFactory.builder()
            .streamReadConstraints(
                StreamReadConstraints.builder()
                    .maxNestingDepth(MAX_NESTING_DEPTH)
                    .maxNumberLength(MAX_NUMBER_LENGTH)
                    .maxStringLength(1 << 20)
                    .build())
            .build();
    return new ObjectMapper(factory).enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
  }

  private FrameCodec() {}

  // -------------------------------------------------------------------------------------------
  // Decoding

  /** The heartbeat as the SDKs send it: most frames on an idle node are exactly this. */
  private static final String PING_TEXT = "{\"type\":\"ping\"}";

  private static final ClientFrame.Ping PING = new ClientFrame.Ping();

  public static ClientFrame decode(String text) {
    // Skips the tree parse (a parser, a context and a node map per frame) for the one frame a
    // quiet client sends every heartbeat interval; any other spelling of a ping parses below.
    if (PING_TEXT.equals(text)) return PING;
    JsonNode node;
    try {
      node = MAPPER.readTree(text);
    } catch (JsonProcessingException e) {
      return bad("frame is not valid JSON");
    } catch (RuntimeException e) {
      return bad("frame is not valid JSON");
    }
    if (node == null || !node.isObject()) return bad("frame must be a JSON object");
    JsonNode type = node.get("type");
    if (type == null || !type.isTextual()) return bad("frame has no string field 'type'");
    return switch (type.textValue()) {
      case "hello" -> decodeHello(node);
      case "resume" -> decodeResume(node);
      case "ack" -> decodeAck(node);
      case "send" -> decodeSend(node);
      case "join" -> decodeRoom(node, true);
      case "leave" -> decodeRoom(node, false);
      case "ping" -> PING;
      case "bye" -> new ClientFrame.Bye();
      default -> bad("unknown frame type '" + truncate(type.textValue()) + "'");
    };
  }

  private static ClientFrame decodeHello(JsonNode node) {
    String user = optionalText(node, "user");
    String token = optionalText(node, "token");
    String client = optionalText(node, "client");
    if (isWrongType(node, "user") || isWrongType(node, "token") || isWrongType(node, "client")) {
      return bad("hello: user, token and client must be strings");
    }
    if (user != null && !validName(user)) return bad("hello: user must be 1-128 printable characters");
    return new ClientFrame.Hello(user, token, client);
  }

  private static ClientFrame decodeResume(JsonNode node) {
    String sessionId = optionalText(node, "sessionId");
    String resumeToken = optionalText(node, "resumeToken");
    if (sessionId == null || !validSessionId(sessionId)) {
      return bad("resume: sessionId must be 1-64 characters of A-Z a-z 0-9 _ -");
    }
    if (resumeToken == null || resumeToken.isEmpty() || resumeToken.length() > 256) {
      return bad("resume: resumeToken must be a non-empty string");
    }
    Long lastSeq = nonNegativeLong(node.get("lastSeq"));
    if (lastSeq == null) return bad("resume: lastSeq must be a non-negative integer");
    if (isWrongType(node, "user") || isWrongType(node, "token")) {
      return bad("resume: user and token must be strings");
    }
    String user = optionalText(node, "user");
    if (user != null && !validName(user)) return bad("resume: user must be 1-128 printable characters");
    return new ClientFrame.Resume(sessionId, resumeToken, lastSeq, user, optionalText(node, "token"));
  }

  private static ClientFrame decodeAck(JsonNode node) {
    Long seq = nonNegativeLong(node.get("seq"));
    if (seq == null) return bad("ack: seq must be a non-negative integer");
    return new ClientFrame.Ack(seq);
  }

  private static ClientFrame decodeSend(JsonNode node) {
    Long cseq = nonNegativeLong(node.get("cseq"));
    if (cseq == null || cseq < 1) return bad("send: cseq must be a positive integer");
    JsonNode to = node.get("to");
    Target target = to != null && to.isTextual() ? Target.parse(to.textValue()) : null;
    if (target == null) return bad("send: to must be session:<id>, user:<id> or room:<name>");
    boolean validId =
        target.kind() == Target.Kind.SESSION ? validSessionId(target.id()) : validName(target.id());
    if (!validId) return bad("send: the target's id or name is malformed");
    JsonNode data = node.get("data");
    if (data == null) return bad("send: data is missing");
    JsonNode echo = node.get("echo");
    if (echo != null && !echo.isBoolean()) return bad("send: echo must be a boolean");
    return new ClientFrame.Send(cseq, target, data.toString(), echo == null || echo.booleanValue());
  }

  /**
   * Why the server would refuse this {@code send} frame (target, JSON, nesting and number
   * limits), or null when it decodes to a send. Public for the Java client, which checks before
   * it numbers a send: a frame refused here gets no cseq in its error.
   */
  public static String sendFrameProblem(String frame) {
    ClientFrame decoded = decode(frame);
    if (decoded instanceof ClientFrame.Send) return null;
    return decoded instanceof ClientFrame.Bad bad ? bad.message() : "send: not a send frame";
  }

  private static ClientFrame decodeRoom(JsonNode node, boolean join) {
    String room = optionalText(node, "room");
    String what = join ? "join" : "leave";
    if (room == null || !validName(room)) return bad(what + ": room must be 1-128 printable characters");
    return join ? new ClientFrame.Join(room) : new ClientFrame.Leave(room);
  }

  private static ClientFrame bad(String message) {
    return new ClientFrame.Bad("bad-frame", message);
  }

  private static String optionalText(JsonNode node, String field) {
    JsonNode value = node.get(field);
    return value != null && value.isTextual() ? value.textValue() : null;
  }

  private static boolean isWrongType(JsonNode node, String field) {
    JsonNode value = node.get(field);
    return value != null && !value.isTextual() && !value.isNull();
  }

  private static Long nonNegativeLong(JsonNode value) {
    if (value == null || !value.isIntegralNumber() || !value.canConvertToLong()) return null;
    long v = value.longValue();
    return v < 0 ? null : v;
  }

  /** Session ids as the server makes them: 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'. */
  public static boolean validSessionId(String id) {
    if (id.isEmpty() || id.length() > 64) return false;
    for (int i = 0; i < id.length(); i++) {
      char c = id.charAt(i);
      boolean ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
      if (!ok) return false;
    }
    return true;
  }

  /** Room and user names: 1 to 128 characters, none of them a control character. */
  public static boolean validName(String name) {
    if (name.isEmpty() || name.length() > MAX_NAME_LENGTH) return false;
    for (int i = 0; i < name.length(); i++) {
      if (Character.isISOControl(name.charAt(i))) return false;
    }
    return true;
  }

  private static String truncate(String s) {
    return s.length() <= 32 ? s : s.substring(0, 32) + "…";
  }

  // -------------------------------------------------------------------------------------------
  // Encoding

  @FunctionalInterface
  private interface Body {
    void write(JsonGenerator g) throws IOException;
  }

  private static String frame(String type, Body body) {
    StringWriter out = new StringWriter(128);
    try (JsonGenerator g = MAPPER.getFactory().createGenerator(out)) {
      g.writeStartObject();
      g.writeStringField("type", type);
      body.write(g);
      g.writeEndObject();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return out.toString();
  }

  public static String msg(OutboxMessage m) {
    return frame(
        "msg",
        g -> {
          g.writeNumberField("seq", m.seq());
          g.writeFieldName("data");
          g.writeRawValue(m.data());
          g.writeStringField("from", m.from());
          if (m.room() != null) g.writeStringField("room", m.room());
          g.writeNumberField("ts", m.ts());
        });
  }

  public record WelcomeFrame(
      String sessionId,
      String resumeToken,
      boolean resumed,
      String reason,
      int replay,
      long lastSeq,
      long clientSeq,
      long lost,
      long heartbeatInterval,
      long heartbeatTimeout,
      long grace,
      List<String> rooms,
      String userId,
      java.util.Map<Long, String> refused) {}

  public static String welcome(WelcomeFrame w) {
    return frame(
        "welcome",
        g -> {
          g.writeStringField("sessionId", w.sessionId());
          g.writeStringField("resumeToken", w.resumeToken());
          g.writeBooleanField("resumed", w.resumed());
          g.writeStringField("reason", w.reason());
          g.writeNumberField("replay", w.replay());
          g.writeNumberField("lastSeq", w.lastSeq());
          g.writeNumberField("clientSeq", w.clientSeq());
          g.writeNumberField("lost", w.lost());
          g.writeObjectFieldStart("heartbeat");
          g.writeNumberField("interval", w.heartbeatInterval());
          g.writeNumberField("timeout", w.heartbeatTimeout());
          g.writeEndObject();
          g.writeNumberField("grace", w.grace());
          g.writeArrayFieldStart("rooms");
          for (String room : w.rooms()) g.writeString(room);
          g.writeEndArray();
          g.writeStringField("user", w.userId());
          if (!w.refused().isEmpty()) {
            // An addition (PROTOCOL.md 8.2): the recent refused sends, in cseq order.
            g.writeArrayFieldStart("refused");
            for (Long cseq : new java.util.TreeSet<>(w.refused().keySet())) {
              g.writeStartObject();
              g.writeNumberField("cseq", cseq);
              g.writeStringField("code", w.refused().get(cseq));
              g.writeEndObject();
            }
            g.writeEndArray();
          }
        });
  }

  public static String sent(long cseq) {
    return frame("sent", g -> g.writeNumberField("cseq", cseq));
  }

  public static String error(String code, String message) {
    return frame(
        "error",
        g -> {
          g.writeStringField("code", code);
          g.writeStringField("message", message);
        });
  }

  /** An error about one upstream message: carries its {@code cseq} so the client can settle it. */
  public static String sendError(long cseq, String code, String message) {
    return frame(
        "error",
        g -> {
          g.writeStringField("code", code);
          g.writeStringField("message", message);
          g.writeNumberField("cseq", cseq);
        });
  }

  /** An error about a join or leave: carries the {@code room}. */
  public static String roomError(String room, String code, String message) {
    return frame(
        "error",
        g -> {
          g.writeStringField("code", code);
          g.writeStringField("message", message);
          g.writeStringField("room", room);
        });
  }

  public static String joined(String room) {
    return frame("joined", g -> g.writeStringField("room", room));
  }

  public static String left(String room) {
    return frame("left", g -> g.writeStringField("room", room));
  }

  public static String kicked(String reason) {
    return frame("kicked", g -> g.writeStringField("reason", reason));
  }

  public static final String PONG = frame("pong", g -> {});
  public static final String BYE = frame("bye", g -> {});

  /** For tests and tools: parses a server frame. */
  public static JsonNode parse(String text) {
    try {
      return MAPPER.readTree(text);
    } catch (JsonProcessingException e) {
      throw new IllegalArgumentException(e);
    }
  }

  public static ObjectMapper mapper() {
    return MAPPER;
  }
}
