package dev.tether.session;

import dev.tether.CborSerializable;
import java.util.List;
import org.apache.pekko.actor.typed.ActorRef;

/**
 * What a {@link ClientProxy} tells the connection that holds it. Everything a connection hears
 * from its session arrives through this one channel, so ordering (welcome, then replay, then
 * live messages) is the ordering of one sender to one receiver, which Pekko preserves.
 */
public sealed interface ToConnection extends CborSerializable {

  /** The handshake succeeded: either a new session or the same one resumed. */
  record Welcome(
      ActorRef<ClientProxy.Command> session,
      String sessionId,
      String userId,
      long generation,
      boolean resumed,
      int replay,
      long lastSeq,
      long clientSeq,
      long lost,
      long graceMillis,
      List<String> rooms,
      java.util.Map<Long, String> refusedUpstream)
      implements ToConnection {
    /** The client's recent sends that were refused (cseq to error code); never null. */
    public java.util.Map<Long, String> refusedUpstream() {
      return refusedUpstream == null ? java.util.Map.of() : refusedUpstream; // from a node without the field
    }

    /**
     * The seq the replay follows: the {@code replay} messages after it come next, then live ones.
     * The same for a resume and for a new session's welcome (whose replay is normally 0, but not
     * when a repeated Open re-attaches a session that already queued messages).
     */
    public long replayAfter() {
      return lastSeq - replay;
    }
  }

  /** A resume of {@code sessionId} that did not continue it; the reason is one of the contract's. */
  record ResumeRejected(String sessionId, String reason) implements ToConnection {}

  record Deliver(OutboxMessage message) implements ToConnection {}

  /** The connection no longer holds the session: {@code taken-over} or {@code kicked}. */
  record Kicked(String reason) implements ToConnection {}

  record UpstreamConfirmed(long cseq) implements ToConnection {}

  record UpstreamRejected(long cseq, String code, String message) implements ToConnection {}

  record RoomJoined(String room) implements ToConnection {}

  record RoomLeft(String room) implements ToConnection {}

  record RoomRejected(String room, String code, String message) implements ToConnection {}

  /**
   * The session has sent this connection every seq up to {@code seq}. Sent only when the client
   * has not acknowledged them a while after the last one: if the connection has written less,
   * the rest was dropped between nodes (see Connection), and no later message will reveal it.
   */
  record WrittenUpTo(long seq) implements ToConnection {}

  record LoggedOut() implements ToConnection {}

  /**
   * The answer to a connection's Detach: the session has it (and detaches, unless that connection
   * no longer held it), so the connection stops sending it again and may stop.
   */
  record Released() implements ToConnection {}

  /**
   * Not from the session: this node's pekko dropped the connection's Detach on its way to another
   * node (a full send queue), so the connection sends it again ({@code gateway.DroppedDetaches}).
   */
  record DetachDropped() implements ToConnection {}
}
