package dev.tether.api;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.tether.gateway.FrameCodec;
import dev.tether.gateway.GatewaySettings;
import dev.tether.session.ClientProxy;
import dev.tether.session.Delivery;
import dev.tether.session.Draft;
import dev.tether.session.Membership;
import dev.tether.telemetry.TetherMetrics;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletionStage;
import java.util.function.BiFunction;
import java.util.function.Function;
import java.util.function.Supplier;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.http.javadsl.model.ContentTypes;
import org.apache.pekko.http.javadsl.model.HttpEntities;
import org.apache.pekko.http.javadsl.model.HttpEntity;
import org.apache.pekko.http.javadsl.model.HttpRequest;
import org.apache.pekko.http.javadsl.model.HttpResponse;
import org.apache.pekko.http.javadsl.model.StatusCode;
import org.apache.pekko.http.javadsl.model.StatusCodes;
import org.apache.pekko.http.javadsl.server.AllDirectives;
import org.apache.pekko.http.javadsl.server.ExceptionHandler;
import org.apache.pekko.http.javadsl.server.PathMatchers;
import org.apache.pekko.http.javadsl.server.RejectionHandler;
import org.apache.pekko.http.javadsl.server.Route;
import org.apache.pekko.http.javadsl.unmarshalling.Unmarshaller;
import org.apache.pekko.http.scaladsl.model.EntityStreamSizeException;

/**
 * The backend HTTP API (contract section 7): publish to a session, a user or a room, inspect and
 * kick sessions, plus {@code /metrics} and health. Every answer, errors included, is JSON (the
 * metrics excepted); a publish is answered 202 only once the message is in the outboxes.
 */
public final class BackendApi extends AllDirectives {
  private static final ObjectMapper JSON = FrameCodec.mapper();

  private final ActorSystem<?> system;
  private final GatewaySettings settings;
  private final Delivery delivery;
  private final ClusterSharding sharding;
  private final TetherMetrics metrics;
  private final InspectionApi inspection;
  private final BatchPublish batch;
  private final Duration timeout;
  private final org.apache.pekko.stream.Materializer materializer;

  /**
   * How long a request body may take to arrive, whole: below pekko-http's request-timeout (20 s),
   * so that a body that does not come is answered this JSON 408 rather than pekko-http's plain 503.
   */
  private static final Duration BODY_READ_TIMEOUT = Duration.ofSeconds(15);

  public BackendApi(
      ActorSystem<?> system,
      GatewaySettings settings,
      Delivery delivery,
      TetherMetrics metrics,
      InspectionApi inspection) {
    this.system = system;
    this.settings = settings;
    this.delivery = delivery;
    this.sharding = ClusterSharding.get(system);
    this.metrics = metrics;
    this.inspection = inspection;
    this.batch = new BatchPublish(BatchPublish.Recipients.of(delivery), metrics, settings.maxBatchMessages());
    this.timeout = settings.askTimeout();
    this.materializer = org.apache.pekko.stream.Materializer.matFromSystem(system);
  }

  /** The API and operational routes (the WebSocket does not go through routes: see GatewayListener). */
  public Route route() {
    return handleExceptions(
        exceptionHandler(),
        () ->
            handleRejections(
                rejectionHandler(),
                () ->
                    readBodyFirst(
                        () ->
                            concat(
                                pathPrefix("api", () -> authorized(() -> withValidIds(this::apiRoutes))),
                                path("metrics", () -> get(() -> complete(metrics.scrape()))),
                                path(PathMatchers.segment("health").slash("alive"), () -> get(() -> json(StatusCodes.OK, Map.of("status", "alive")))),
                                path(PathMatchers.segment("health").slash("ready"), () -> get(this::ready)),
                                path("ws", this::upgradeNotFirst),
                                demoPage()))));
  }

  /**
   * Reads the request body before anything answers. pekko-http closes the connection after a
   * response sent before its request's body was read (it could not tell where the next request
   * starts), and a backend still writing its body then gets a reset instead of the answer: the
   * 401 for a wrong token, the 404 for a wrong path, the 400 for a malformed id would reach it as
   * a broken connection, and its pooled connection would be gone.
   *
   * <p>Only a body a route may use is kept in memory: that of an authorized {@code /api} request
   * (at most {@code max-body-bytes}; the routes that take a body read it whole anyway). Any other
   * body (no or a wrong bearer token, a path outside {@code /api}) is read and dropped as it
   * arrives, so a client without the token cannot make the node hold bodies.
   */
  private Route readBodyFirst(Supplier<Route> inner) {
    return extractRequest(
        request -> {
          HttpEntity entity = request.entity();
          if (entity.isStrict()) return inner.get();
          if (!mayUseBody(request)) {
            return onComplete(
                entity.discardBytes(materializer).completionStage(),
                read ->
                    read.isSuccess()
                        ? mapRequest(r -> r.withEntity(HttpEntities.EMPTY), inner)
                        : bodyNotRead(read.failed().get()));
          }
          // The limit is the parser's max-content-length (= max-body-bytes, failing with
          // EntityStreamSizeException); toStrict's own default (8 MiB) would cap a larger setting.
          return onComplete(
              entity.toStrict(BODY_READ_TIMEOUT.toMillis(), Long.MAX_VALUE, materializer),
              read ->
                  read.isSuccess()
                      ? mapRequest(r -> r.withEntity(read.get()), inner)
                      : bodyNotRead(read.failed().get()));
        });
  }

  /** Whether a route may read this request's body: an {@code /api} call with the right bearer token (or in dev mode). */
  private boolean mayUseBody(HttpRequest request) {
    if (!request.getUri().path().startsWith("/api")) return false;
    if (settings.authMode() != GatewaySettings.AuthMode.HMAC) return true;
    return request.getHeader("Authorization").map(header -> bearerMatches(header.value())).orElse(false);
  }

  private Route bodyNotRead(Throwable failure) {
    if (failure instanceof EntityStreamSizeException) {
      return error(StatusCodes.PAYLOAD_TOO_LARGE, "too-large", "request body exceeds the limit");
    }
    if (failure instanceof java.util.concurrent.TimeoutException) {
      return error(
          StatusCodes.REQUEST_TIMEOUT,
          "request-timeout",
          "the request body did not arrive within " + BODY_READ_TIMEOUT.toSeconds() + " s");
    }
    return error(StatusCodes.BAD_REQUEST, "bad-request", "the request body could not be read");
  }

  /**
   * A request for {@code /ws} reaches the routes only when it was not the first request on its
   * TCP connection (WebSocketStage decides once per connection, at its first request line): a
   * proxy that reuses keep-alive connections to the gateway must open a new one per WebSocket.
   * The connection is closed so that the proxy's retry gets a fresh one.
   */
  private Route upgradeNotFirst() {
    return complete(
        errorResponse(
                StatusCodes.BAD_REQUEST,
                "upgrade-not-first",
                "a WebSocket upgrade must be the first request on its connection; open a new connection")
            .addHeader(org.apache.pekko.http.javadsl.model.headers.Connection.create("close")));
  }

  /**
   * The demo page at {@code /} and the JS SDK build at {@code /sdk/}, from the classpath folder
   * {@code web/} (the SDK is compiled there by the build: see clients/js).
   */
  private Route demoPage() {
    return get(
        () ->
            concat(
                pathSingleSlash(() -> getFromResource("web/index.html")),
                pathPrefix("sdk", () -> getFromResourceDirectory("web/sdk")),
                pathPrefix("demo", () -> getFromResourceDirectory("web/demo"))));
  }

  /**
   * Refuses malformed ids before they reach an entity: session ids are what the server issues
   * (a malformed one cannot exist: 404), user ids and room names have no control characters and
   * at most 128 characters (400).
   */
  private Route withValidIds(Supplier<Route> inner) {
    return extractUnmatchedPath(
        unmatched -> {
          String[] segments = unmatched.startsWith("/") ? unmatched.substring(1).split("/", -1) : unmatched.split("/", -1);
          if (segments.length >= 2) {
            String id = java.net.URLDecoder.decode(segments[1].replace("+", "%2B"), StandardCharsets.UTF_8);
            switch (segments[0]) {
              case "sessions" -> {
                if (!FrameCodec.validSessionId(id)) return error(StatusCodes.NOT_FOUND, "not-found", "no such session");
              }
              case "users", "rooms" -> {
                if (!FrameCodec.validName(id)) {
                  return error(StatusCodes.BAD_REQUEST, "bad-request", "ids and names are 1-128 characters without control characters");
                }
              }
              default -> {}
            }
          }
          return inner.get();
        });
  }

  private Route apiRoutes() {
    return concat(
        // GET /api/sessions (the listing), .../messages/{seq}, .../history, /api/cluster
        inspection.routes(),
        path("messages", () -> post(this::publishBatch)),
        pathPrefix(
            "sessions",
            () ->
                pathPrefix(
                    PathMatchers.segment(),
                    sessionId ->
                        concat(
                            pathEnd(
                                () ->
                                    concat(
                                        get(() -> getSession(sessionId)),
                                        delete(() -> kickSession(sessionId)))),
                            path("messages", () -> post(() -> withPublish((data, key) -> publishToSession(sessionId, data, key))))))),
        path(
            PathMatchers.segment("users").slash(PathMatchers.segment()).slash("messages"),
            userId -> post(() -> withPublish((data, key) -> publishToGroup("user", Membership.userId(userId), data, null, key)))),
        path(
            PathMatchers.segment("rooms").slash(PathMatchers.segment()).slash("messages"),
            room -> post(() -> withPublish((data, key) -> publishToGroup("room", Membership.roomId(room), data, room, key)))));
  }

  // ---------------------------------------------------------------------------------------------
  // Publishing

  private Route publishToSession(String sessionId, String data, String idempotencyKey) {
    metrics.apiPublish("session");
    return answer(
        delivery.toSession(sessionId, Draft.fromBackend(data, null, idempotencyKey)),
        result ->
            result instanceof ClientProxy.Enqueued enqueued
                ? json(StatusCodes.ACCEPTED, Map.of("seq", enqueued.seq()))
                : error(StatusCodes.NOT_FOUND, "not-found", "no such session (it may have ended)"));
  }

  private Route publishToGroup(String kind, String groupId, String data, String room, String idempotencyKey) {
    metrics.apiPublish(kind);
    String countField = "room".equals(kind) ? "members" : "sessions";
    return answer(
        delivery.toGroup(groupId, Draft.fromBackend(data, room, idempotencyKey), null),
        count -> json(StatusCodes.ACCEPTED, Map.of(countField, count)));
  }

  /** {@code POST /api/messages}: see {@link BatchPublish}. */
  private Route publishBatch() {
    return optionalHeaderValueByName(
        "Idempotency-Key",
        header -> {
          if (header.isPresent()) {
            return error(
                StatusCodes.BAD_REQUEST,
                "bad-request",
                "a batch takes an 'idempotencyKey' per entry, not the Idempotency-Key header");
          }
          return entity(
              Unmarshaller.entityToString(),
              body -> {
                List<BatchPublish.Entry> entries;
                try {
                  entries = batch.parse(JSON.readTree(body));
                } catch (JsonProcessingException | RuntimeException e) {
                  return error(StatusCodes.BAD_REQUEST, "bad-request", "body is not valid JSON");
                } catch (BatchPublish.Invalid e) {
                  return error(StatusCodes.BAD_REQUEST, "bad-request", e.getMessage());
                }
                // deliver never fails by design (an unanswered entry is "unavailable"); should a bug
                // make it fail, the client still gets a JSON error rather than pekko's plain text.
                return answer(batch.deliver(entries), answer -> json(StatusCodes.ACCEPTED, answer));
              });
        });
  }

  // ---------------------------------------------------------------------------------------------
  // Inspection and kicks

  private Route getSession(String sessionId) {
    CompletionStage<ClientProxy.StateReply> reply =
        sharding
            .entityRefFor(ClientProxy.ENTITY_TYPE_KEY, sessionId)
            .ask(ClientProxy.GetState::new, timeout);
    return answer(
        reply,
        state -> {
          ClientProxy.SessionView view = state.view();
          if (view == null) return error(StatusCodes.NOT_FOUND, "not-found", "no such session");
          return json(StatusCodes.OK, sessionJson(view));
        });
  }

  private static ObjectNode sessionJson(ClientProxy.SessionView view) {
    ObjectNode node = JSON.createObjectNode();
    node.put("sessionId", view.sessionId());
    node.put("userId", view.userId());
    node.put("state", view.state());
    node.put("lastSeq", view.lastSeq());
    node.put("ackedSeq", view.ackedSeq());
    ObjectNode outbox = node.putObject("outbox");
    outbox.put("size", view.outboxSize());
    outbox.put("bytes", view.outboxBytes());
    node.put("clientSeq", view.clientSeq());
    view.rooms().forEach(node.putArray("rooms")::add);
    if (view.graceDeadline() == null) node.putNull("graceDeadline");
    else node.put("graceDeadline", view.graceDeadline());
    node.put("resumes", view.resumes());
    node.put("takeovers", view.takeovers());
    node.put("lost", view.lost());
    node.put("generation", view.generation());
    node.put("createdAt", view.createdAt());
    return node;
  }

  private Route kickSession(String sessionId) {
    CompletionStage<ClientProxy.KickResult> reply =
        sharding.entityRefFor(ClientProxy.ENTITY_TYPE_KEY, sessionId).ask(ClientProxy.Kick::new, timeout);
    return answer(
        reply,
        result ->
            result.found()
                ? complete(StatusCodes.NO_CONTENT)
                : error(StatusCodes.NOT_FOUND, "not-found", "no such session (it may have ended)"));
  }

  private Route ready() {
    boolean up = Cluster.get(system).selfMember().status() == MemberStatus.up();
    return up
        ? json(StatusCodes.OK, Map.of("status", "ready"))
        : json(StatusCodes.SERVICE_UNAVAILABLE, Map.of("status", "joining"));
  }

  // ---------------------------------------------------------------------------------------------
  // Plumbing: auth, bodies, JSON answers

  /** In hmac mode every /api call needs {@code Authorization: Bearer <api token>}. */
  private Route authorized(Supplier<Route> inner) {
    if (settings.authMode() != GatewaySettings.AuthMode.HMAC) return inner.get();
    return optionalHeaderValueByName(
        "Authorization",
        header -> {
          if (header.isPresent() && bearerMatches(header.get())) return inner.get();
          return error(StatusCodes.UNAUTHORIZED, "unauthorized", "missing or wrong bearer token");
        });
  }

  private boolean bearerMatches(String header) {
    String expected = "Bearer " + settings.apiToken();
    return !settings.apiToken().isEmpty()
        && MessageDigest.isEqual(header.getBytes(StandardCharsets.UTF_8), expected.getBytes(StandardCharsets.UTF_8));
  }

  /**
   * A publish: the body's {@code data} and the optional {@code Idempotency-Key} header (an
   * addition to the contract: a retry with the same key is not queued twice).
   */
  private Route withPublish(BiFunction<String, String, Route> inner) {
    return optionalHeaderValueByName(
        "Idempotency-Key",
        key -> {
          if (key.isPresent() && (key.get().isEmpty() || key.get().length() > 128)) {
            return error(StatusCodes.BAD_REQUEST, "bad-request", "Idempotency-Key must be 1-128 characters");
          }
          return withData(data -> inner.apply(data, key.orElse(null)));
        });
  }

  /** The request body must be a JSON object with a {@code data} field; gives its compact JSON text. */
  private Route withData(Function<String, Route> inner) {
    return entity(
        Unmarshaller.entityToString(),
        body -> {
          JsonNode node;
          try {
            node = JSON.readTree(body);
          } catch (JsonProcessingException | RuntimeException e) {
            return error(StatusCodes.BAD_REQUEST, "bad-request", "body is not valid JSON");
          }
          if (node == null || !node.isObject() || !node.has("data")) {
            return error(StatusCodes.BAD_REQUEST, "bad-request", "body must be a JSON object with a 'data' field");
          }
          return inner.apply(node.get("data").toString());
        });
  }

  private <T> Route answer(CompletionStage<T> stage, Function<T, Route> onSuccess) {
    return onComplete(
        stage,
        result ->
            result.isSuccess()
                ? onSuccess.apply(result.get())
                : error(StatusCodes.SERVICE_UNAVAILABLE, "unavailable", "the session did not answer in time; retry"));
  }

  private Route json(StatusCode status, Object body) {
    return complete(jsonResponse(status, body));
  }

  private Route error(StatusCode status, String code, String message) {
    return complete(errorResponse(status, code, message));
  }

  static HttpResponse jsonResponse(StatusCode status, Object body) {
    try {
      return HttpResponse.create()
          .withStatus(status)
          .withEntity(HttpEntities.create(ContentTypes.APPLICATION_JSON, JSON.writeValueAsString(body)));
    } catch (JsonProcessingException e) {
      throw new IllegalStateException(e);
    }
  }

  static HttpResponse errorResponse(StatusCode status, String code, String message) {
    return jsonResponse(status, Map.of("error", code, "message", message));
  }

  private static ExceptionHandler exceptionHandler() {
    return ExceptionHandler.newBuilder()
        .match(
            EntityStreamSizeException.class,
            e -> completeWithResponse(errorResponse(StatusCodes.PAYLOAD_TOO_LARGE, "too-large", "request body exceeds the limit")))
        .matchAny(
            e -> completeWithResponse(errorResponse(StatusCodes.INTERNAL_SERVER_ERROR, "internal", "internal error")))
        .build();
  }

  private static Route completeWithResponse(HttpResponse response) {
    return new AllDirectives() {}.complete(response);
  }

  /** pekko-http's default rejection answers, re-dressed as JSON errors. */
  private static RejectionHandler rejectionHandler() {
    return RejectionHandler.defaultHandler()
        .mapRejectionResponse(
            response -> {
              if (response.entity().getContentType().equals(ContentTypes.APPLICATION_JSON)) return response;
              String text =
                  Optional.of(response.entity())
                      .filter(e -> e.isStrict())
                      .map(e -> ((org.apache.pekko.http.javadsl.model.HttpEntity.Strict) e).getData().utf8String())
                      .orElse(response.status().reason());
              String code = response.status().intValue() == 404 ? "not-found" : response.status().intValue() == 413 ? "too-large" : "bad-request";
              return errorResponse(response.status(), code, text.isBlank() ? response.status().reason() : text);
            });
  }
}
