package dev.tether.gateway;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.atomic.AtomicLong;
import java.nio.charset.StandardCharsets;
import org.apache.pekko.NotUsed;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import dev.tether.Asks;
import dev.tether.telemetry.TelemetryInterceptor;
import org.apache.pekko.actor.typed.MailboxSelector;
import org.apache.pekko.event.Logging;
import org.apache.pekko.http.impl.engine.ws.FrameEvent;
import org.apache.pekko.http.javadsl.model.HttpResponse;
import org.apache.pekko.http.javadsl.model.RemoteAddress;
import org.apache.pekko.http.javadsl.model.ws.Message;
import org.apache.pekko.http.javadsl.model.ws.TextMessage;
import org.apache.pekko.http.javadsl.model.ws.WebSocketUpgrade;
import org.apache.pekko.http.javadsl.server.AllDirectives;
import org.apache.pekko.http.javadsl.server.Route;
import org.apache.pekko.http.scaladsl.settings.WebSocketSettings;
import org.apache.pekko.stream.Materializer;
import org.apache.pekko.stream.StreamLimitReachedException;
import org.apache.pekko.stream.javadsl.Flow;
import org.apache.pekko.stream.javadsl.Sink;
import org.apache.pekko.stream.javadsl.Source;
import org.apache.pekko.stream.typed.javadsl.ActorSink;

/**
 * {@code GET /ws}: accepts the WebSocket and wires it to a new {@link Connection} actor. Incoming
 * frames are size-checked and decoded in the stream, then handed to the actor one at a time;
 * outgoing frames go through a bounded queue the actor fills.
 */
public final class WebSocketRoute extends AllDirectives {
  private final ActorSystem<?> system;
  private final Connection.Dependencies deps;
  private final Materializer materializer;
  private final CloseCodeWebSocket webSocket;
  private final AtomicLong connectionIds = new AtomicLong();

  public WebSocketRoute(ActorSystem<?> system, Connection.Dependencies deps) {
    this.system = system;
    this.deps = deps;
    this.materializer = Materializer.matFromSystem(system);
    WebSocketSettings settings =
        org.apache.pekko.http.scaladsl.settings.ServerSettings$.MODULE$.apply(system.settings().config()).websocketSettings();
    this.webSocket = new CloseCodeWebSocket(settings, Logging.getLogger(system.classicSystem(), WebSocketRoute.class));
  }

  public Route route() {
    return path(
        "ws",
        () ->
            get(
                () ->
                    clientAddress(
                        address -> extractWebSocketUpgrade(upgrade -> complete(accept(upgrade, address))))));
  }

  /**
   * The client's address: the TCP peer, or (only when tether.gateway.trust-forwarded-for is on)
   * what a reverse proxy put in X-Forwarded-For / X-Real-IP.
   */
  private Route clientAddress(java.util.function.Function<String, Route> inner) {
    if (deps.settings().trustForwardedFor()) {
      return extractClientIP(ip -> inner.apply(ip.getAddress().map(a -> a.getHostAddress()).orElse("unknown")));
    }
    return extractRequest(
        request ->
            inner.apply(
                request
                    .getAttribute(org.apache.pekko.http.javadsl.model.AttributeKeys.remoteAddress)
                    .flatMap(RemoteAddress::getAddress)
                    .map(a -> a.getHostAddress())
                    .orElse("unknown")));
  }

  /**
   * Accepts the upgrade. Everything of one connection (its actor, its queue, its stream stages)
   * is created when pekko-http materializes the WebSocket, inside one small {@code
   * fromMaterializer} blueprint: a blueprint built per connection out of many stages stays
   * referenced for the connection's lifetime, and the outgoing queue, materialized inside the
   * same stream rather than pre-materialized, needs no stream (actor) of its own. Together about
   * a third of an idle connection's heap (docs/BENCHMARKS.md, "memory per session").
   */
  private HttpResponse accept(WebSocketUpgrade upgrade, String remote) {
    Flow<FrameEvent, FrameEvent, NotUsed> frames =
        Flow.<FrameEvent, FrameEvent, NotUsed>fromMaterializer((mat, attributes) -> connectionFrames(remote))
            .mapMaterializedValue(ignored -> NotUsed.getInstance());
    return webSocket.accept(upgrade, frames);
  }

  /** The frame-level stream of one connection, wired to a new {@link Connection} actor. */
  private Flow<FrameEvent, FrameEvent, NotUsed> connectionFrames(String remote) {
    CloseSignal closeSignal = new CloseSignal();
    DeferredQueue<Message> queue = new DeferredQueue<>();
    ActorRef<Connection.Command> connection =
        system.systemActorOf(
            TelemetryInterceptor.instrument(
                "Connection", Connection.Command.class, Connection.create(deps, queue, closeSignal, remote)),
            "ws-" + connectionIds.incrementAndGet(),
            MailboxSelector.fromConfig("tether.telemetry.mailboxes.connection"));

    // Frames leave the queue when the socket can take them; what is still queued is counted in
    // bytes too, so a client that stops reading holds a bounded amount of memory. The actor
    // queues pekko-http's TextMessage.Strict, which is the scaladsl type the stack wants.
    Source<org.apache.pekko.http.scaladsl.model.ws.Message, NotUsed> outgoing =
        Source.<Message>queue(deps.settings().outgoingBuffer())
            .mapMaterializedValue(
                materialized -> {
                  queue.set(materialized);
                  return NotUsed.getInstance();
                })
            .map(
                message -> {
                  closeSignal.dequeued(message.asTextMessage().getStrictText().length());
                  return (org.apache.pekko.http.scaladsl.model.ws.Message) message;
                });

    Sink<org.apache.pekko.http.scaladsl.model.ws.Message, NotUsed> incoming =
        Flow.<org.apache.pekko.http.scaladsl.model.ws.Message>create()
            // scaladsl's TextMessage and BinaryMessage extend their javadsl counterparts
            .mapAsync(1, message -> decode((Message) message))
            .to(
                ActorSink.<ClientFrame, Connection.Command, Connection.StreamAck>actorRefWithBackpressure(
                    connection,
                    (ackTo, frame) -> new Connection.FrameReceived(frame, ackTo),
                    Connection.StreamStarted::new,
                    Connection.StreamAck.INSTANCE,
                    new Connection.StreamEnded(),
                    failure -> new Connection.StreamEnded()));

    // Coupled: when either side ends (the client closes, or the actor completes the queue),
    // the other ends too.
    return webSocket.frames(Flow.fromSinkAndSourceCoupled(incoming, outgoing), closeSignal);
  }

  /** One WebSocket message to one frame, refusing binary messages and anything over the size limit. */
  private CompletionStage<ClientFrame> decode(Message message) {
    int limit = deps.settings().maxFrameBytes();
    if (!message.isText()) {
      message.asBinaryMessage().getStreamedData().runWith(Sink.ignore(), materializer);
      return CompletableFuture.completedFuture(
          new ClientFrame.Bad("bad-frame", "binary frames are not supported; send JSON text frames"));
    }
    TextMessage text = message.asTextMessage();
    if (text.isStrict()) return CompletableFuture.completedFuture(decodeText(text.getStrictText(), limit));
    // A fragmented message is collected only up to the limit; the rest is discarded unread.
    return Asks.direct(
            text.getStreamedText()
                .limitWeighted(limit, part -> (long) part.length())
                .runFold(new StringBuilder(), StringBuilder::append, materializer))
        .thenApply(collected -> decodeText(collected.toString(), limit))
        .exceptionally(
            failure ->
                failure instanceof StreamLimitReachedException
                        || failure.getCause() instanceof StreamLimitReachedException
                    ? new ClientFrame.TooLarge(limit + 1L)
                    : new ClientFrame.Bad("bad-frame", "could not read the frame"));
  }

  private static ClientFrame decodeText(String text, int limit) {
    // Characters are at most 3 bytes in UTF-8 (4 for a surrogate pair of 2 chars), so only
    // long texts need counting.
    if ((long) text.length() * 3 > limit) {
      int bytes = text.getBytes(StandardCharsets.UTF_8).length;
      if (bytes > limit) return new ClientFrame.TooLarge(bytes);
    }
    return FrameCodec.decode(text);
  }
}
