package dev.tether.gateway;

import dev.tether.session.Target;

/** A frame from a client, decoded and validated by {@link FrameCodec}. */
public sealed interface ClientFrame {

  /** @param user the user in dev mode; @param token the JWT in hmac mode */
  record Hello(String user, String token, String client) implements ClientFrame {
    /** Never prints the credential (dead-letter and debug logs print messages). */
    @Override
    public String toString() {
      return "Hello[user=" + user + ", token=" + (token == null ? "none" : "<redacted>") + ", client=" + client + "]";
    }
  }

  /** {@code user}/{@code token} are optional additions: the credentials for a fallback new session. */
  record Resume(String sessionId, String resumeToken, long lastSeq, String user, String token)
      implements ClientFrame {
    /** Never prints the resume token or the credential. */
    @Override
    public String toString() {
      return "Resume[sessionId=" + sessionId + ", lastSeq=" + lastSeq + ", user=" + user + ", secrets=<redacted>]";
    }
  }

  record Ack(long seq) implements ClientFrame {}

  record Send(long cseq, Target to, String data, boolean echo) implements ClientFrame {}

  record Join(String room) implements ClientFrame {}

  record Leave(String room) implements ClientFrame {}

  record Ping() implements ClientFrame {}

  record Bye() implements ClientFrame {}

  /** Anything that is not a valid frame: answered with an {@code error}, the socket stays open. */
  record Bad(String code, String message) implements ClientFrame {}

  /** A frame over the size limit: answered with {@code frame-too-large} and close 4003. */
  record TooLarge(long bytes) implements ClientFrame {}
}
