package dev.tether.gateway;

import dev.tether.Asks;
import java.time.Duration;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.Done;
import org.apache.pekko.NotUsed;
import org.apache.pekko.http.javadsl.model.HttpRequest;
import org.apache.pekko.http.javadsl.model.HttpResponse;
import org.apache.pekko.japi.function.Function;
import org.apache.pekko.stream.KillSwitches;
import org.apache.pekko.stream.SharedKillSwitch;
import org.apache.pekko.stream.javadsl.Flow;
import org.apache.pekko.util.ByteString;

/**
 * The plain HTTP connections open on this node (backend API, health, metrics), so that a graceful
 * stop lets the requests already in progress finish instead of cutting them off: a backend whose
 * publish was accepted gets its 202, and one whose connection closes unanswered knows nothing was
 * started on it. This is what pekko-http's own binding does on {@code terminate}; the gateway's
 * listener (one port for WebSockets and HTTP, {@link GatewayListener}) has to do it itself.
 *
 * <p>{@link #drain}, called after the port is unbound: an idle kept-alive connection is closed at
 * once; a request in progress is answered, with {@code Connection: close}, and its connection then
 * closes; whatever is still open after the drain timeout is aborted.
 */
public final class HttpConnections {
  private static final org.apache.pekko.http.javadsl.model.headers.Connection CLOSE =
      org.apache.pekko.http.javadsl.model.headers.Connection.create("close");

  private final Set<Tracked> open = ConcurrentHashMap.newKeySet();
  private final CompletableFuture<Done> allClosed = new CompletableFuture<>();
  private volatile boolean draining;

  /** Registers a new connection; call {@link Tracked#closed} when its stream has ended. */
  Tracked open() {
    Tracked connection = new Tracked();
    open.add(connection);
    return connection;
  }

  /**
   * Closes the idle connections now and each busy one once its request is answered; completes when
   * all are closed, or after {@code max}, aborting the ones still open.
   */
  public CompletionStage<Done> drain(Duration max) {
    draining = true;
    for (Tracked connection : open) connection.closeIfIdle();
    if (open.isEmpty()) allClosed.complete(Done.getInstance());
    // At the deadline whatever is still open is cut off, including a connection accepted before
    // the port closed whose first request came only after the drain began (its answers carry
    // Connection: close, but it was not there to be waited for).
    CompletableFuture.delayedExecutor(max.toMillis(), TimeUnit.MILLISECONDS, Runnable::run)
        .execute(
            () -> {
              for (Tracked connection : open) connection.abort();
            });
    return allClosed.completeOnTimeout(Done.getInstance(), max.toMillis(), TimeUnit.MILLISECONDS);
  }

  /** One HTTP connection: how many of its requests are in progress, and the switches that close it. */
  final class Tracked {
    /** Ends the incoming requests: pekko-http answers what it has and closes the connection. */
    private final SharedKillSwitch stopReading = KillSwitches.shared("http-connection-in");
    /**
     * Cuts the connection off, both ways. The incoming switch alone may no longer be running when
     * the deadline comes (pekko-http stopped reading), while a stuck request still holds the
     * connection: the outgoing side is what ends it then.
     */
    private final SharedKillSwitch cutOff = KillSwitches.shared("http-connection-out");
    private int inProgress; // guarded by this

    /** Placed on the connection's incoming bytes. */
    Flow<ByteString, ByteString, NotUsed> incoming() {
      return Flow.<ByteString>create().via(stopReading.flow()).via(cutOff.flow());
    }

    /** Placed on the connection's outgoing bytes. */
    Flow<ByteString, ByteString, NotUsed> outgoing() {
      return Flow.<ByteString>create().via(cutOff.flow());
    }

    /**
     * Runs one request through {@code handler}. Once the node is draining, the answer carries
     * {@code Connection: close}, so pekko-http closes the connection after sending it.
     */
    CompletionStage<HttpResponse> serve(HttpRequest request, Function<HttpRequest, CompletionStage<HttpResponse>> handler) {
      synchronized (this) {
        inProgress++;
      }
      CompletionStage<HttpResponse> answer;
      try {
        // Asks.direct: continue on the thread that answers, not on the JDK's async executor.
        answer = Asks.direct(handler.apply(request));
      } catch (Exception e) {
        answer = CompletableFuture.failedFuture(e);
      }
      return answer.handle(
          (response, failure) -> {
            synchronized (this) {
              inProgress--;
            }
            if (failure != null) throw new java.util.concurrent.CompletionException(failure);
            return draining ? response.addHeader(CLOSE) : response;
          });
    }

    private synchronized void closeIfIdle() {
      if (inProgress == 0) stopReading.shutdown();
    }

    private void abort() {
      cutOff.abort(new IllegalStateException("the server stopped before this connection's request finished"));
    }

    /** Called once the connection's stream has ended, however it ended. */
    void closed() {
      open.remove(this);
      if (draining && open.isEmpty()) allClosed.complete(Done.getInstance());
    }
  }
}
