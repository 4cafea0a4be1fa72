package dev.tether.gateway;

import static dev.tether.testkit.Eventually.awaitAssert;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.TetherNode;
import dev.tether.session.ClientProxy;
import dev.tether.session.Membership;
import dev.tether.testkit.Api;
import dev.tether.testkit.Eventually;
import dev.tether.testkit.TestDatabase;
import dev.tether.testkit.TestNodes;
import dev.tether.testkit.WsClient;
import java.time.Duration;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.apache.pekko.cluster.sharding.ShardRegion;
import org.apache.pekko.cluster.sharding.typed.ClusterShardingQuery;
import org.apache.pekko.cluster.sharding.typed.GetShardRegionState;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.sharding.typed.javadsl.EntityTypeKey;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Detached sessions leave memory (passivation) and lose nothing: a publish brings one back for
 * as long as it takes to queue the message, a resume replays everything missed, and the grace
 * sweeper still ends one on time although it holds no timer in memory.
 */
class PassivationScenarioTest {
  private static final Duration GRACE = Duration.ofSeconds(4);
  private static final Duration PASSIVATE_AFTER = Duration.ofMillis(300);
  private static final Duration SWEEP_INTERVAL = Duration.ofMillis(300);
  private static final Duration PASSIVATE_MEMBERSHIP_AFTER = Duration.ofMillis(600);
  private static String dbUrl;
  private static TetherNode node;
  private static Api api;

  @BeforeAll
  static void startNode() {
    dbUrl = TestDatabase.newDatabase();
    node =
        TestNodes.start(
            dbUrl,
            Map.of(
                "tether.session.grace", GRACE.toMillis() + "ms",
                "tether.session.passivate-detached-after", PASSIVATE_AFTER.toMillis() + "ms",
                "tether.session.grace-sweeper.interval", SWEEP_INTERVAL.toMillis() + "ms",
                "tether.session.passivate-membership-after", PASSIVATE_MEMBERSHIP_AFTER.toMillis() + "ms"));
    api = new Api(node.port());
  }

  @AfterAll
  static void stopNode() {
    if (node != null) node.close();
  }

  @Test
  void aPassivatedSessionQueuesWhileAwayAndResumesWithEveryMissedMessage() {
    JsonNode welcome;
    String id;
    try (WsClient ws = WsClient.connect(node.port())) {
      welcome = ws.hello("sleeper");
      id = welcome.get("sessionId").asText();
      api.publishToSession(id, "{\"n\":1}");
      assertEquals(1, ws.expect("msg").get("seq").asLong());
      // An attached session that is quiet for longer than passivate-detached-after stays: it holds a socket.
      Eventually.pause(PASSIVATE_AFTER.multipliedBy(3));
      assertTrue(inMemory(id), "an attached session is never passivated");
      ws.drop();
    }
    double passivatedBefore = passivations();
    awaitAssert(Duration.ofSeconds(5), () -> assertFalse(inMemory(id), "detached session left memory"));

    // Each publish wakes the session from the journal, which queues it durably and sleeps again.
    for (int n = 2; n <= 4; n++) assertEquals(n, api.publishToSession(id, "{\"n\":" + n + "}"));
    awaitAssert(Duration.ofSeconds(5), () -> assertFalse(inMemory(id), "left memory again"));
    assertTrue(passivations() >= passivatedBefore + 2, "passivated after the drop and after the publishes");

    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode resumed = ws.resume(welcome, 1);
      assertTrue(resumed.get("resumed").asBoolean(), resumed::toString);
      assertEquals(3, resumed.get("replay").asInt(), resumed::toString);
      for (int n = 2; n <= 4; n++) {
        JsonNode msg = ws.expect("msg");
        assertEquals(n, msg.get("seq").asLong());
        assertEquals(n, msg.get("data").get("n").asInt());
      }
      api.publishToSession(id, "{\"n\":5}");
      assertEquals(5, ws.expect("msg").get("seq").asLong());
      ws.expectNoFrame(Duration.ofMillis(300));
    }
  }

  @Test
  void aPassivatedSessionStillExpiresAtItsDeadline() {
    JsonNode welcome;
    long droppedAt;
    try (WsClient ws = WsClient.connect(node.port())) {
      welcome = ws.hello("never-back");
      ws.drop();
      droppedAt = System.nanoTime();
    }
    String id = welcome.get("sessionId").asText();
    double wokenBefore = sweeperWakes();
    awaitAssert(Duration.ofSeconds(5), () -> assertFalse(inMemory(id), "detached session left memory"));

    // Out of memory there is no grace timer: only the sweeper can end it.
    awaitAssert(Duration.ofSeconds(15), () -> assertEquals(1, expiredTombstones(id)));
    long endedAfter = System.nanoTime() - droppedAt;
    assertTrue(endedAfter >= GRACE.toNanos(), "not before its deadline: " + endedAfter / 1_000_000 + " ms");
    assertTrue(sweeperWakes() > wokenBefore, "woken by the grace sweeper");

    try (WsClient ws = WsClient.connect(node.port())) {
      ws.send(
          "{\"type\":\"resume\",\"sessionId\":\"" + id + "\",\"resumeToken\":\""
              + welcome.get("resumeToken").asText() + "\",\"lastSeq\":0}");
      JsonNode answer = ws.expect("welcome");
      assertFalse(answer.get("resumed").asBoolean());
      assertEquals("expired", answer.get("reason").asText());
    }
  }

  @Test
  void anIdleUsersSessionIndexLeavesMemoryAndStillFansOut() {
    try (WsClient ws = WsClient.connect(node.port())) {
      String id = ws.hello("quiet-user").get("sessionId").asText();
      // The user's index (Membership "user:quiet-user") was written when the session opened.
      awaitAssert(
          Duration.ofSeconds(10),
          () -> assertFalse(running(Membership.ENTITY_TYPE_KEY).contains(Membership.userId("quiet-user")), "index left memory"));
      assertTrue(inMemory(id), "the attached session stays");

      // A publish to the user reads the index back from the journal and reaches the session.
      Api.Response answer = api.post("/api/users/quiet-user/messages", "{\"data\":{\"n\":1}}");
      assertEquals(202, answer.status(), answer.body());
      assertEquals(1, answer.json().get("sessions").asInt(), answer.body());
      JsonNode msg = ws.expect("msg");
      assertEquals(1, msg.get("seq").asLong());
      assertEquals(1, msg.get("data").get("n").asInt());
      ws.expectNoFrame(Duration.ofMillis(300));
    }
  }

  @Test
  void aNodeRefusesToStartWithoutAPositiveMembershipPassivation() {
    IllegalArgumentException refused =
        assertThrows(
            IllegalArgumentException.class,
            () -> TestNodes.start(dbUrl, Map.of("tether.session.passivate-membership-after", "0s")));
    assertTrue(refused.getMessage().contains("tether.session.passivate-membership-after"), refused.getMessage());
  }

  private static long expiredTombstones(String sessionId) {
    return TestDatabase.count(
        dbUrl, "SELECT count(*) FROM session_tombstones WHERE session_id = ? AND reason = 'expired'", sessionId);
  }

  /** Whether the node's shard region runs the session's entity (asking its state would wake it). */
  private static boolean inMemory(String sessionId) {
    return running(ClientProxy.ENTITY_TYPE_KEY).contains(sessionId);
  }

  /** The entities of one type that this node's shard region runs now. */
  private static Set<String> running(EntityTypeKey<?> type) {
    try {
      ShardRegion.CurrentShardRegionState state =
          AskPattern.<ClusterShardingQuery, ShardRegion.CurrentShardRegionState>ask(
                  ClusterSharding.get(node.system()).shardState(),
                  replyTo -> new GetShardRegionState(type, replyTo),
                  Duration.ofSeconds(5),
                  node.system().scheduler())
              .toCompletableFuture()
              .get(6, TimeUnit.SECONDS);
      return state.getShards().stream().flatMap(s -> s.getEntityIds().stream()).collect(Collectors.toSet());
    } catch (Exception e) {
      throw new AssertionError("shard region state", e);
    }
  }

  private static double passivations() {
    return node.metrics().registry().get("tether_sessions_passivated").counter().count();
  }

  private static double sweeperWakes() {
    return node.metrics().registry().get("tether_grace_sweeper_wakes").counter().count();
  }
}
