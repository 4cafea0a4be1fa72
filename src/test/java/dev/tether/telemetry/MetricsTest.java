package dev.tether.telemetry;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.testkit.OneNode;
import dev.tether.testkit.WsClient;
import java.time.Duration;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/** Under traffic, the series an operator watches move (read back from GET /metrics). */
class MetricsTest {
  @RegisterExtension
  static final OneNode node = new OneNode(Map.of("tether.session.grace", "1s"));

  /** The value of one series, e.g. {@code tether_sessions{state="attached"}}; 0 when absent. */
  static double value(String metrics, String series) {
    Matcher m = Pattern.compile("(?m)^" + Pattern.quote(series) + " (\\S+)$").matcher(metrics);
    return m.find() ? Double.parseDouble(m.group(1)) : 0;
  }

  static double valueWithPrefix(String metrics, String seriesPrefix) {
    Matcher m = Pattern.compile("(?m)^" + Pattern.quote(seriesPrefix) + "[^ ]* (\\S+)$").matcher(metrics);
    return m.find() ? Double.parseDouble(m.group(1)) : 0;
  }

  @Test
  void seriesMoveWhenTrafficFlows() throws Exception {
    String before = node.api().get("/metrics").body();
    double processedBefore = value(before, "tether_actor_messages_processed_total{actor=\"ClientProxy\"}");
    double connectionMessagesBefore = value(before, "tether_actor_messages_processed_total{actor=\"Connection\"}");

    try (WsClient a = WsClient.connect(node.port());
        WsClient b = WsClient.connect(node.port())) {
      JsonNode wa = a.hello("metrics-a");
      String id = wa.get("sessionId").asText();
      for (int i = 0; i < 5; i++) node.api().publishToSession(id, "{\"i\":" + i + "}");
      for (int i = 0; i < 5; i++) a.expect("msg");
      a.send("{\"type\":\"ack\",\"seq\":5}");
      a.send("{\"type\":\"teleport\"}");
      a.expectError("bad-frame");

      String during = node.api().get("/metrics").body();
      assertTrue(value(during, "tether_sessions{state=\"attached\"}") >= 1, "attached sessions gauge");
      assertTrue(value(during, "tether_connections_open") >= 2, "open connections");

      // Takeover: b resumes a's session.
      b.resume(wa, 5);
      assertEquals(4002, a.awaitClose());
      b.drop();
    }
    // A session kicked while detached (no socket to close) is counted as a kick all the same.
    try (WsClient c = WsClient.connect(node.port())) {
      String kickedId = c.hello("metrics-c").get("sessionId").asText();
      c.drop();
      assertEquals(204, node.api().delete("/api/sessions/" + kickedId).status());
    }
    // The dropped session expires after its 1 s grace.
    Thread.sleep(2500);

    String after = awaitMetrics(m -> value(m, "tether_expiries_total") >= 1 && valueWithPrefix(m, "tether_shards{type=\"ClientProxy\"") >= 1);
    assertTrue(value(after, "tether_messages_enqueued_total") >= 5);
    assertTrue(value(after, "tether_messages_written_total") >= 5);
    assertTrue(value(after, "tether_messages_acked_total") >= 5);
    assertTrue(value(after, "tether_takeovers_total") >= 1);
    assertTrue(value(after, "tether_welcomes_total{reason=\"resumed\"}") >= 1);
    assertTrue(value(after, "tether_welcomes_total{reason=\"new\"}") >= 1);
    assertTrue(value(after, "tether_bad_frames_total{code=\"bad-frame\"}") >= 1);
    assertTrue(value(after, "tether_persist_latency_seconds_count") >= 5);
    assertTrue(value(after, "tether_handshake_latency_seconds_count{kind=\"hello\"}") >= 2);
    assertTrue(value(after, "tether_handshake_latency_seconds_count{kind=\"resume\"}") >= 1, "resume latency");
    assertTrue(value(after, "tether_kicks_total") >= 1, "a kick of a detached session counts too");
    assertTrue(value(after, "tether_outbox_messages_count") >= 5);
    assertTrue(value(after, "tether_frames_in_total") >= 4);
    assertTrue(value(after, "tether_api_publishes_total{target=\"session\"}") >= 5);
    // Actor telemetry: message rates and processing time per actor class; mailbox depth exported.
    assertTrue(value(after, "tether_actor_messages_processed_total{actor=\"ClientProxy\"}") > processedBefore + 5);
    assertTrue(value(after, "tether_actor_messages_processed_total{actor=\"Connection\"}") > connectionMessagesBefore + 5);
    assertTrue(value(after, "tether_actor_processing_seconds_total{actor=\"ClientProxy\"}") > 0);
    assertTrue(value(after, "tether_actor_messages_enqueued_total{actor=\"ClientProxy\"}") > processedBefore);
    assertTrue(after.contains("tether_actor_mailbox_depth{actor=\"ClientProxy\"}"));
    assertTrue(after.contains("tether_actor_mailbox_depth{actor=\"Connection\"}"));
    assertTrue(after.contains("jvm_memory_used_bytes"));
  }

  private static String awaitMetrics(java.util.function.Predicate<String> ready) throws InterruptedException {
    long deadline = System.nanoTime() + Duration.ofSeconds(15).toNanos();
    String metrics = node.api().get("/metrics").body();
    while (!ready.test(metrics) && System.nanoTime() < deadline) {
      Thread.sleep(250);
      metrics = node.api().get("/metrics").body();
    }
    return metrics;
  }
}
