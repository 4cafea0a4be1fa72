package dev.tether.api;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.tether.gateway.FrameCodec;
import dev.tether.inspection.InspectionStore;
import dev.tether.session.ClientProxy;
import dev.tether.session.Membership;
import java.time.Duration;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.function.Function;
import org.apache.pekko.actor.Address;
import org.apache.pekko.actor.typed.ActorSystem;
import dev.tether.Asks;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.apache.pekko.cluster.Member;
import org.apache.pekko.cluster.sharding.ShardRegion;
import org.apache.pekko.cluster.sharding.typed.GetClusterShardingStats;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.sharding.typed.javadsl.EntityTypeKey;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.http.javadsl.model.StatusCode;
import org.apache.pekko.http.javadsl.model.StatusCodes;
import org.apache.pekko.http.javadsl.server.AllDirectives;
import org.apache.pekko.http.javadsl.server.PathMatchers;
import org.apache.pekko.http.javadsl.server.Route;

/**
 * Session inspection (contract section 8.4): the listing and message history come from the read
 * model ({@link InspectionStore}, eventually consistent), a delivery receipt asks the live
 * session first, and {@code /api/cluster} asks the cluster and its shard regions. Mounted under
 * {@code /api} by {@link BackendApi}, so the same bearer token applies.
 */
public final class InspectionApi extends AllDirectives {
  static final int DEFAULT_LIMIT = 100;
  static final int MAX_LIMIT = 1000;
  private static final Set<String> STATES = Set.of("attached", "detached", "ended");
  private static final ObjectMapper JSON = FrameCodec.mapper();

  private final ActorSystem<?> system;
  private final ClusterSharding sharding;
  private final InspectionStore store;
  private final Duration timeout;

  public InspectionApi(ActorSystem<?> system, InspectionStore store, Duration askTimeout) {
    this.system = system;
    this.sharding = ClusterSharding.get(system);
    this.store = store;
    this.timeout = askTimeout;
  }

  /** Routes relative to {@code /api}. */
  public Route routes() {
    return concat(
        pathPrefix(
            "sessions",
            () ->
                concat(
                    pathEnd(() -> get(() -> parameterMap(this::listSessions))),
                    pathPrefix(
                        PathMatchers.segment(),
                        sessionId ->
                            concat(
                                path(
                                    PathMatchers.segment("messages").slash(PathMatchers.segment()),
                                    seq -> get(() -> receipt(sessionId, seq))),
                                path("history", () -> get(() -> parameterMap(params -> history(sessionId, params)))))))),
        path("cluster", () -> get(this::cluster)));
  }

  // ---------------------------------------------------------------------------------------------
  // GET /api/sessions?state=&user=&limit=&cursor=

  private Route listSessions(Map<String, String> params) {
    Optional<String> state = Optional.ofNullable(params.get("state"));
    if (state.isPresent() && !STATES.contains(state.get())) {
      return badRequest("state must be one of attached, detached, ended");
    }
    Optional<String> user = Optional.ofNullable(params.get("user"));
    if (user.isPresent() && user.get().isEmpty()) return badRequest("user must not be empty");
    Optional<Integer> limit = limit(params);
    if (limit.isEmpty()) return badRequest("limit must be an integer from 1 to " + MAX_LIMIT);
    Optional<InspectionStore.Cursor> cursor = Optional.empty();
    if (params.containsKey("cursor")) {
      cursor = InspectionStore.Cursor.decode(params.get("cursor"));
      if (cursor.isEmpty()) return badRequest("cursor is not one this API handed out");
    }
    return answer(
        store.listSessions(state, user, limit.get(), cursor),
        page -> {
          ObjectNode body = JSON.createObjectNode();
          ArrayNode sessions = body.putArray("sessions");
          page.sessions().forEach(row -> sessions.add(sessionJson(row)));
          if (page.next().isPresent()) body.put("nextCursor", page.next().get().encode());
          else body.putNull("nextCursor");
          return json(StatusCodes.OK, body);
        });
  }

  private static ObjectNode sessionJson(InspectionStore.SessionRow row) {
    ObjectNode node = JSON.createObjectNode();
    node.put("sessionId", row.sessionId());
    node.put("userId", row.userId());
    node.put("state", row.state());
    node.put("lastSeq", row.lastSeq());
    node.put("ackedSeq", row.ackedSeq());
    node.put("outboxSize", row.outboxSize());
    putMillis(node, "graceDeadline", row.graceDeadline());
    node.put("resumes", row.resumes());
    node.put("takeovers", row.takeovers());
    node.put("lost", row.lost());
    node.put("createdAt", row.createdAt());
    node.put("updatedAt", row.updatedAt());
    if (row.endedReason() == null) node.putNull("endedReason");
    else node.put("endedReason", row.endedReason());
    return node;
  }

  // ---------------------------------------------------------------------------------------------
  // GET /api/sessions/{id}/messages/{seq}

  private Route receipt(String sessionId, String seqText) {
    long seq;
    try {
      seq = Long.parseLong(seqText);
    } catch (NumberFormatException e) {
      return badRequest("seq must be a positive integer");
    }
    if (seq < 1) return badRequest("seq must be a positive integer");
    CompletionStage<ClientProxy.Receipt> live =
        Asks.direct(
            sharding
                .entityRefFor(ClientProxy.ENTITY_TYPE_KEY, sessionId)
                .ask(replyTo -> new ClientProxy.GetReceipt(seq, replyTo), timeout));
    // The live session knows the status; the read model knows the times (and, once the session
    // is gone, the only status left).
    CompletionStage<ObjectNode> body =
        live.thenCombine(
            store.message(sessionId, seq),
            (receipt, row) -> {
              String status = receipt.status();
              if ("no-session".equals(status)) {
                status = row.map(r -> r.ackedAt() != null ? "acked" : r.lost() ? "lost" : "unknown").orElse("unknown");
              } else if ("acked".equals(status) && row.map(InspectionStore.MessageRow::lost).orElse(false)) {
                // The session knows only its cumulative ack: a message dropped by overflow before
                // it was acknowledged is below a later ack too. The history knows it was lost.
                status = "lost";
              }
              ObjectNode node = JSON.createObjectNode();
              node.put("sessionId", sessionId);
              node.put("seq", seq);
              node.put("status", status);
              putMillis(node, "queuedAt", row.map(InspectionStore.MessageRow::queuedAt).orElse(null));
              putMillis(node, "ackedAt", row.map(InspectionStore.MessageRow::ackedAt).orElse(null));
              return node;
            });
    return answer(body, node -> json(StatusCodes.OK, node));
  }

  // ---------------------------------------------------------------------------------------------
  // GET /api/sessions/{id}/history?from=&limit=

  private Route history(String sessionId, Map<String, String> params) {
    long from = 1;
    if (params.containsKey("from")) {
      try {
        from = Long.parseLong(params.get("from"));
      } catch (NumberFormatException e) {
        return badRequest("from must be a non-negative integer");
      }
      if (from < 0) return badRequest("from must be a non-negative integer");
    }
    Optional<Integer> limit = limit(params);
    if (limit.isEmpty()) return badRequest("limit must be an integer from 1 to " + MAX_LIMIT);
    return answer(
        store.history(sessionId, from, limit.get()),
        page -> {
          ObjectNode body = JSON.createObjectNode();
          ArrayNode messages = body.putArray("messages");
          for (InspectionStore.MessageRow row : page.messages()) {
            ObjectNode m = messages.addObject();
            m.put("seq", row.seq());
            m.put("queuedAt", row.queuedAt());
            putMillis(m, "ackedAt", row.ackedAt());
            m.put("lost", row.lost());
            m.put("bytes", row.bytes());
            m.put("from", row.from());
            if (row.room() == null) m.putNull("room");
            else m.put("room", row.room());
          }
          if (page.next().isPresent()) body.put("next", page.next().get());
          else body.putNull("next");
          return json(StatusCodes.OK, body);
        });
  }

  // ---------------------------------------------------------------------------------------------
  // GET /api/cluster

  private Route cluster() {
    CompletableFuture<ShardRegion.ClusterShardingStats> sessions =
        shardingStats(ClientProxy.ENTITY_TYPE_KEY).toCompletableFuture();
    CompletableFuture<ShardRegion.ClusterShardingStats> memberships =
        shardingStats(Membership.ENTITY_TYPE_KEY).toCompletableFuture();
    CompletionStage<ObjectNode> body =
        sessions.thenCombine(
            memberships,
            (sessionStats, membershipStats) -> {
              Cluster cluster = Cluster.get(system);
              Address self = cluster.selfMember().address();
              ObjectNode node = JSON.createObjectNode();
              node.put("self", self.toString());
              ArrayNode nodes = node.putArray("nodes");
              Set<Member> unreachable = cluster.state().getUnreachable();
              for (Member member : cluster.state().getMembers()) {
                ObjectNode n = nodes.addObject();
                n.put("address", member.address().toString());
                n.put("status", member.status().toString().toLowerCase(Locale.ROOT));
                n.put("reachable", !unreachable.contains(member));
                new TreeSet<>(member.getRoles()).forEach(n.putArray("roles")::add);
                ObjectNode sharding = n.putObject("sharding");
                sharding.set(ClientProxy.ENTITY_TYPE_KEY.name(), regionJson(sessionStats, member.address()));
                sharding.set(Membership.ENTITY_TYPE_KEY.name(), regionJson(membershipStats, member.address()));
              }
              return node;
            });
    return answer(body, node -> json(StatusCodes.OK, node));
  }

  private CompletionStage<ShardRegion.ClusterShardingStats> shardingStats(EntityTypeKey<?> key) {
    // The regions get a little less than the HTTP ask, so a slow one is left out, not the whole answer.
    Duration regionTimeout = timeout.multipliedBy(3).dividedBy(4);
    return Asks.direct(
        AskPattern.ask(
            sharding.shardState(),
            replyTo -> new GetClusterShardingStats(key, regionTimeout, replyTo),
            timeout,
            system.scheduler()));
  }

  private static ObjectNode regionJson(ShardRegion.ClusterShardingStats stats, Address address) {
    ShardRegion.ShardRegionStats region = stats.getRegions().get(address);
    ObjectNode node = JSON.createObjectNode();
    int shards = 0;
    long entities = 0;
    int failed = 0;
    if (region != null) {
      for (Object count : region.getStats().values()) {
        shards++;
        entities += ((Number) count).longValue();
      }
      failed = region.getFailed().size();
    }
    node.put("shards", shards);
    node.put("entities", entities);
    node.put("failedShards", failed);
    return node;
  }

  // ---------------------------------------------------------------------------------------------
  // Plumbing

  /** The {@code limit} parameter: default 100, 1..1000; empty when invalid. */
  private static Optional<Integer> limit(Map<String, String> params) {
    String text = params.get("limit");
    if (text == null) return Optional.of(DEFAULT_LIMIT);
    try {
      int limit = Integer.parseInt(text);
      return limit >= 1 && limit <= MAX_LIMIT ? Optional.of(limit) : Optional.empty();
    } catch (NumberFormatException e) {
      return Optional.empty();
    }
  }

  private static void putMillis(ObjectNode node, String field, Long millis) {
    if (millis == null) node.putNull(field);
    else node.put(field, millis.longValue());
  }

  private <T> Route answer(CompletionStage<T> stage, Function<T, Route> onSuccess) {
    return onComplete(
        stage,
        result ->
            result.isSuccess()
                ? onSuccess.apply(result.get())
                : error(StatusCodes.SERVICE_UNAVAILABLE, "unavailable", "not available right now; retry"));
  }

  private Route badRequest(String message) {
    return error(StatusCodes.BAD_REQUEST, "bad-request", message);
  }

  private Route json(StatusCode status, Object body) {
    return complete(BackendApi.jsonResponse(status, body));
  }

  private Route error(StatusCode status, String code, String message) {
    return complete(BackendApi.errorResponse(status, code, message));
  }
}
