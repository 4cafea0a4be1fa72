package dev.tether.security;

import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tether.gateway.ClientFrame;
import dev.tether.gateway.FrameCodec;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.ShrinkingMode;

/**
 * Property-based fuzzing of the frame decoder: over a million generated frames (arbitrary
 * unicode, JSON of the right shape with wrong types, deep nesting, huge numbers, broken syntax).
 * The decoder must never throw, must always answer with a frame, and every frame it accepts must
 * satisfy the contract's invariants, so nothing malformed can ever reach a session.
 */
class FrameDecoderFuzzTest {
  private static final String[] TYPES = {
    "hello", "resume", "ack", "send", "join", "leave", "ping", "bye", "welcome", "msg", "", "HELLO", "send\u0000"
  };

  @Property(tries = 300_000, shrinking = ShrinkingMode.OFF)
  void arbitraryTextNeverBreaksTheDecoder(@ForAll("anyText") String text) {
    checkInvariants(FrameCodec.decode(text));
  }

  @Property(tries = 500_000, shrinking = ShrinkingMode.OFF)
  void frameShapedJsonWithWrongValuesIsRefusedOrValid(@ForAll("frameShaped") String text) {
    checkInvariants(FrameCodec.decode(text));
  }

  /** A finite space (about 38k cases): jqwik generates every one of them. */
  @Property(tries = 200_000, shrinking = ShrinkingMode.OFF)
  void hostileStructuresAreBounded(@ForAll("hostile") String text) {
    checkInvariants(FrameCodec.decode(text));
  }

  @Property(tries = 250_000, shrinking = ShrinkingMode.OFF)
  void mutatedValidFramesNeverBreakTheDecoder(@ForAll("mutatedValid") String text) {
    checkInvariants(FrameCodec.decode(text));
  }

  @Example
  void aPingDecodesTheSameWhateverItsSpelling() {
    for (String ping : new String[] {"{\"type\":\"ping\"}", " {\"type\": \"ping\"}\n", "{\"type\":\"ping\",\"t\":1}"}) {
      assertInstanceOf(ClientFrame.Ping.class, FrameCodec.decode(ping), ping);
    }
    assertInstanceOf(ClientFrame.Bad.class, FrameCodec.decode("{\"type\":\"ping\"}}"));
    assertInstanceOf(ClientFrame.Bad.class, FrameCodec.decode("{\"type\":\"PING\"}"));
  }

  /** What any decoded frame must satisfy before it may reach a session. */
  static void checkInvariants(ClientFrame frame) {
    assertNotNull(frame);
    if (frame instanceof ClientFrame.Send send) {
      assertTrue(send.cseq() >= 1);
      assertNotNull(send.to());
      assertNotNull(send.data());
      FrameCodec.parse(send.data()); // the data re-serialises as valid JSON
    } else if (frame instanceof ClientFrame.Resume resume) {
      assertTrue(resume.lastSeq() >= 0);
      assertTrue(!resume.sessionId().isEmpty() && resume.sessionId().length() <= 64);
      assertTrue(!resume.resumeToken().isEmpty());
    } else if (frame instanceof ClientFrame.Ack ack) {
      assertTrue(ack.seq() >= 0);
    } else if (frame instanceof ClientFrame.Join join) {
      assertTrue(!join.room().isEmpty() && join.room().length() <= 128);
    } else if (frame instanceof ClientFrame.Leave leave) {
      assertTrue(!leave.room().isEmpty() && leave.room().length() <= 128);
    } else if (frame instanceof ClientFrame.Bad bad) {
      assertNotNull(bad.message());
    }
  }

  @Provide
  Arbitrary<String> anyText() {
    return Arbitraries.oneOf(
        Arbitraries.strings().all().ofMaxLength(200),
        Arbitraries.strings().withChars("{}[]\":,0123456789.-eE truefalsn\\u").ofMaxLength(120));
  }

  @Provide
  Arbitrary<String> frameShaped() {
    Arbitrary<String> type = Arbitraries.of(TYPES).map(FrameDecoderFuzzTest::quote);
    Arbitrary<String> field =
        Arbitraries.of("user", "token", "client", "sessionId", "resumeToken", "lastSeq", "seq", "cseq", "to", "data", "echo", "room", "type")
            .map(FrameDecoderFuzzTest::quote);
    Arbitrary<String> value = jsonValue();
    Arbitrary<String> member = Combinators.combine(field, value).as((f, v) -> f + ":" + v);
    Arbitrary<String> members = member.list().ofMaxSize(8).map(l -> String.join(",", l));
    return Combinators.combine(type, members).as((t, m) -> "{\"type\":" + t + (m.isEmpty() ? "" : "," + m) + "}");
  }

  private static Arbitrary<String> jsonValue() {
    return Arbitraries.oneOf(
        Arbitraries.longs().map(String::valueOf),
        Arbitraries.integers().between(-5, 100).map(String::valueOf),
        Arbitraries.doubles().map(d -> d.isNaN() || d.isInfinite() ? "1e999" : String.valueOf(d)),
        Arbitraries.strings().numeric().ofMinLength(19).ofMaxLength(120), // huge integers
        Arbitraries.of("true", "false", "null", "[]", "{}", "\"\"", "1e400", "-0", "0.5"),
        Arbitraries.strings().all().ofMaxLength(40).map(FrameDecoderFuzzTest::quote),
        Arbitraries.of("session:", "user:", "room:", "room:lobby", "session:s_1", "mars:x", ":", "room:" + "x".repeat(300))
            .map(FrameDecoderFuzzTest::quote));
  }

  @Provide
  Arbitrary<String> hostile() {
    return Arbitraries.oneOf(
        Arbitraries.integers().between(1, 5000).map(depth -> "[".repeat(depth) + "]".repeat(depth)),
        Arbitraries.integers().between(1, 5000).map(depth -> "{\"type\":\"send\",\"cseq\":1,\"to\":\"room:x\",\"data\":" + "[".repeat(depth) + "]".repeat(depth) + "}"),
        Arbitraries.integers().between(1, 3000).map(n -> "{\"type\":\"ack\",\"seq\":" + "9".repeat(n) + "}"),
        Arbitraries.integers().between(1, 3000).map(n -> "{\"type\":\"ack\",\"seq\":1" + "0".repeat(n) + "e-" + n + "}"),
        Arbitraries.integers().between(1, 20000).map(n -> "{\"type\":\"hello\",\"user\":\"" + "\\ud800".repeat(n % 500) + "x".repeat(n) + "\"}"),
        Arbitraries.integers().between(1, 2000).map(n -> "{\"type\":\"join\"" + ",\"room\":\"r\"".repeat(n) + "}"),
        Arbitraries.integers().between(0, 50).map(n -> "{\"type\":\"ping\"}" + " ".repeat(n) + "{\"type\":\"bye\"}"));
  }

  @Provide
  Arbitrary<String> mutatedValid() {
    Arbitrary<String> valid =
        Arbitraries.of(
            "{\"type\":\"hello\",\"user\":\"alice\",\"client\":\"sdk/1\"}",
            "{\"type\":\"resume\",\"sessionId\":\"s_abc\",\"resumeToken\":\"r_xyz\",\"lastSeq\":41}",
            "{\"type\":\"ack\",\"seq\":42}",
            "{\"type\":\"send\",\"cseq\":18,\"to\":\"room:lobby\",\"data\":{\"text\":\"hi\"}}",
            "{\"type\":\"join\",\"room\":\"lobby\"}",
            "{\"type\":\"ping\"}");
    return Combinators.combine(valid, Arbitraries.integers().between(0, 80), Arbitraries.chars(), Arbitraries.integers().between(0, 2))
        .as(
            (frame, at, c, op) -> {
              int i = Math.min(at, frame.length());
              return switch (op) {
                case 0 -> frame.substring(0, i) + c + frame.substring(i); // insert
                case 1 -> i < frame.length() ? frame.substring(0, i) + frame.substring(i + 1) : frame; // delete
                default -> frame.substring(0, i); // truncate
              };
            });
  }

  private static String quote(String s) {
    return FrameCodec.mapper().getNodeFactory().textNode(s).toString();
  }
}
