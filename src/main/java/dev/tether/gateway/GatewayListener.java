package dev.tether.gateway;

import dev.tether.Asks;
import dev.tether.telemetry.TetherMetrics;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.CompletionStage;
import org.apache.pekko.Done;
import org.apache.pekko.NotUsed;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.event.Logging;
import org.apache.pekko.event.LoggingAdapter;
import org.apache.pekko.japi.function.Function;
import org.apache.pekko.http.javadsl.Http;
import org.apache.pekko.http.javadsl.model.HttpRequest;
import org.apache.pekko.http.javadsl.model.HttpResponse;
import org.apache.pekko.http.javadsl.server.Route;
import org.apache.pekko.http.javadsl.settings.ServerSettings;
import org.apache.pekko.stream.Materializer;
import org.apache.pekko.stream.TLSProtocol;
import org.apache.pekko.stream.javadsl.BidiFlow;
import org.apache.pekko.stream.javadsl.Flow;
import org.apache.pekko.stream.javadsl.Keep;
import org.apache.pekko.stream.javadsl.Sink;
import org.apache.pekko.stream.javadsl.TLSPlacebo;
import org.apache.pekko.stream.javadsl.Tcp;
import org.apache.pekko.util.ByteString;

/**
 * The gateway's one port. Each TCP connection runs as one {@link WebSocketStage}, which looks at
 * its request line once: a request for {@code /ws} is a WebSocket and stays in that stage;
 * anything else (the backend API, health, metrics) is handed to pekko-http's server pipeline and
 * the routes.
 *
 * <p>pekko-http's own binding would also serve the WebSocket, but a socket it upgrades keeps the
 * HTTP pipeline and the WebSocket stack materialized for its whole life (about 40 stages); with
 * tens of thousands of idle sockets that is most of a session's memory and most of the CPU of a
 * reconnect (docs/BENCHMARKS.md, eighth session).
 */
public final class GatewayListener {
  private GatewayListener() {}

  /**
   * Binds {@code host:port}. {@code idleTimeout} closes an HTTP connection that sends and receives
   * nothing for that long (it also ends slow, trickling requests); a WebSocket has its own
   * deadlines instead: the upgrade request within the handshake timeout, then the heartbeat.
   * pekko-http's server settings (request limits, pipelining, max-connections, backlog, socket
   * options) apply as they would to its own binding. Every HTTP connection is listed in
   * {@code httpConnections}, so that a graceful stop can let its requests finish.
   */
  public static CompletionStage<Tcp.ServerBinding> bind(
      ActorSystem<?> system,
      String host,
      int port,
      Duration idleTimeout,
      Route route,
      WebSocketStage.Limits webSocketLimits,
      HandshakeAdmission admission,
      WebSocketStage.ConnectionStarter webSockets,
      TetherMetrics metrics,
      HttpConnections httpConnections) {
    ServerSettings httpSettings = ServerSettings.create(system.settings().config());
    LoggingAdapter log = Logging.getLogger(system.classicSystem(), GatewayListener.class);
    Materializer materializer = Materializer.matFromSystem(system);
    Function<HttpRequest, CompletionStage<HttpResponse>> routes = route.function(system);
    return Tcp.get(system)
        .bind(host, port, httpSettings.getBacklog(), httpSettings.getSocketOptions(), false, Optional.empty())
        .mapAsyncUnordered(
            httpSettings.getMaxConnections(),
            incoming -> {
              InetSocketAddress peer = incoming.remoteAddress();
              // The stage reads the request line and either is the WebSocket or hands the
              // connection to pekko-http's pipeline (built here only for such a connection).
              Flow<ByteString, ByteString, CompletionStage<Done>> connection =
                  Flow.of(ByteString.class)
                      .via(
                          new WebSocketStage(
                              address(peer),
                              webSocketLimits,
                              admission,
                              webSockets,
                              metrics,
                              () -> {
                                HttpConnections.Tracked tracked = httpConnections.open();
                                return Flow.of(ByteString.class)
                                    .via(tracked.incoming())
                                    .via(httpServer(system, httpSettings, peer, log, tracked, routes, idleTimeout))
                                    .via(tracked.outgoing())
                                    .watchTermination(
                                        (notUsed, ended) -> {
                                          Asks.direct(ended).whenComplete((done, failure) -> tracked.closed());
                                          return notUsed;
                                        });
                              }))
                      .watchTermination(Keep.right());
              // The slot of max-connections is free again when the connection has ended.
              // (Asks.direct: pekko's CompletionStage would run this continuation on the JDK's
              // async executor, which on 2 cores starts a new thread per task: one per closed
              // connection, 180,000 of them in a reconnect storm of 15,000.)
              return Asks.direct(incoming.handleWith(connection, materializer))
                  .exceptionally(failure -> Done.getInstance());
            })
        .to(Sink.ignore())
        .run(materializer);
  }

  /** pekko-http's server pipeline for one plain HTTP connection (no TLS: Tether sits behind a proxy for that). */
  private static Flow<ByteString, ByteString, NotUsed> httpServer(
      ActorSystem<?> system,
      ServerSettings settings,
      InetSocketAddress peer,
      LoggingAdapter log,
      HttpConnections.Tracked connection,
      Function<HttpRequest, CompletionStage<HttpResponse>> routes,
      Duration idleTimeout) {
    // No TLS here: the placebo only adapts pekko-http's TLS-shaped interface to plain bytes.
    @SuppressWarnings({"unchecked", "rawtypes"})
    BidiFlow<TLSProtocol.SslTlsOutbound, ByteString, ByteString, TLSProtocol.SslTlsInbound, NotUsed> plain =
        (BidiFlow) TLSPlacebo.getInstance();
    // Requests are answered in order (pekko-http's pipelining limit bounds how many are in progress).
    Flow<HttpRequest, HttpResponse, NotUsed> requests =
        Flow.of(HttpRequest.class)
            .mapAsync(settings.getPipeliningLimit(), request -> connection.serve(request, routes));
    return requests.join(
        Http.get(system)
            .serverLayer(settings, Optional.of(peer), log)
            .atop(plain)
            .atop(BidiFlow.<ByteString, ByteString>bidirectionalIdleTimeout(idleTimeout)));
  }

  private static String address(InetSocketAddress peer) {
    return peer.getAddress() == null ? "unknown" : peer.getAddress().getHostAddress();
  }
}
