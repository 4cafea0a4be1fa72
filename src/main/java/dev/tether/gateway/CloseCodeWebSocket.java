package dev.tether.gateway;

import org.apache.pekko.NotUsed;
import org.apache.pekko.event.LoggingAdapter;
import org.apache.pekko.http.impl.engine.ws.FrameEvent;
import org.apache.pekko.http.impl.engine.ws.FrameEvent$;
import org.apache.pekko.http.impl.engine.ws.FrameStart;
import org.apache.pekko.http.impl.engine.ws.UpgradeToWebSocketLowLevel;
import org.apache.pekko.http.impl.engine.ws.WebSocket$;
import org.apache.pekko.http.javadsl.model.HttpResponse;
import org.apache.pekko.http.scaladsl.model.ws.Message;
import org.apache.pekko.http.scaladsl.settings.WebSocketSettings;
import org.apache.pekko.stream.javadsl.Flow;
import org.apache.pekko.stream.FlowShape;
import org.apache.pekko.stream.Graph;
import scala.Option;
import scala.concurrent.duration.FiniteDuration;

/**
 * Accepts a WebSocket upgrade with pekko-http's own WebSocket stack (framing, masking, control
 * frames, ping answers, the close handshake), plus one addition: the final close frame carries the
 * code from the connection's {@link CloseSignal} instead of the fixed 1000/1011.
 *
 * <p>pekko-http has no public API for application close codes (akka/akka-http#2458), so this
 * class reaches into its internal {@code UpgradeToWebSocketLowLevel.handleFrames}, the same route
 * Play Framework takes. It is the only place Tether touches pekko-http internals; the version is
 * pinned in pom.xml and the scenario tests assert every close code.
 */
final class CloseCodeWebSocket {
  private static final byte CLOSE_OPCODE = 0x8; // RFC 6455, section 5.5.1
  private static final byte PONG_OPCODE = 0xA; // RFC 6455, section 5.5.3
  private static final FiniteDuration CLOSE_TIMEOUT = FiniteDuration.apply(3, "seconds");

  /** pekko-http's WebSocket protocol stack: a blueprint, built once and materialized per connection. */
  private final org.apache.pekko.stream.scaladsl.BidiFlow<FrameEvent, Message, Message, FrameEvent, NotUsed> stack;

  CloseCodeWebSocket(WebSocketSettings settings, LoggingAdapter log) {
    this.stack = WebSocket$.MODULE$.stack(true, settings, CLOSE_TIMEOUT, log);
  }

  /**
   * The frames of one connection: the stack around {@code handler}, close frames rewritten. The
   * same step notes the client's protocol pings: the stack answers each with a pong on this very
   * output (and sends no pong of its own accord: periodic keep-alive is off), so a pong going out
   * means a ping came in, without a stage of its own on the way in.
   */
  Flow<FrameEvent, FrameEvent, NotUsed> frames(Flow<Message, Message, NotUsed> handler, CloseSignal closeSignal) {
    return Flow.fromGraph(stack.join(handler.asScala()))
        .map(frame -> withCloseCode(frame, closeSignal));
  }

  /** Answers the upgrade request; pekko-http materializes {@code frames} once the switch is done. */
  HttpResponse accept(org.apache.pekko.http.javadsl.model.ws.WebSocketUpgrade upgrade, Flow<FrameEvent, FrameEvent, NotUsed> frames) {
    UpgradeToWebSocketLowLevel lowLevel = (UpgradeToWebSocketLowLevel) upgrade;
    @SuppressWarnings({"unchecked", "rawtypes"})
    Graph<FlowShape<FrameEvent, FrameEvent>, Object> graph = (Graph) frames;
    return lowLevel.handleFrames(graph, Option.empty());
  }

  private static FrameEvent withCloseCode(FrameEvent frame, CloseSignal closeSignal) {
    if (frame instanceof FrameStart start) {
      byte opcode = start.header().opcode().code();
      if (opcode == PONG_OPCODE) {
        closeSignal.protocolPingReceived();
      } else if (opcode == CLOSE_OPCODE) {
        CloseSignal.Close close = closeSignal.get();
        if (close != null) return FrameEvent$.MODULE$.closeFrame(close.code(), close.reason(), Option.empty());
      }
    }
    return frame;
  }
}
