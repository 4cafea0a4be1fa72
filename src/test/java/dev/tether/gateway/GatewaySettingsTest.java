package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import org.junit.jupiter.api.Test;

class GatewaySettingsTest {
  private static Config withMaxBatch(int max) {
    return with("tether.gateway.limits.max-batch-messages = " + max);
  }

  private static Config with(String settings) {
    return ConfigFactory.parseString(settings).withFallback(ConfigFactory.load()).resolve();
  }

  @Test
  void theDefaultBatchLimitIsAccepted() {
    assertEquals(1000, GatewaySettings.from(ConfigFactory.load()).maxBatchMessages());
    assertEquals(1024, GatewaySettings.from(withMaxBatch(1024)).maxBatchMessages());
  }

  @Test
  void aBatchLargerThanTheRememberedIdempotencyKeysIsRefusedAtStart() {
    IllegalArgumentException refused =
        assertThrows(IllegalArgumentException.class, () -> GatewaySettings.from(withMaxBatch(1025)));
    assertTrue(refused.getMessage().contains("max-batch-messages"), refused.getMessage());
    assertThrows(IllegalArgumentException.class, () -> GatewaySettings.from(withMaxBatch(0)));
  }

  @Test
  void theAdaptiveHandshakeLimitIsOffByDefault() {
    // It slowed a single node's reconnect storm (docs/BENCHMARKS.md, thirteenth session).
    GatewaySettings defaults = GatewaySettings.from(ConfigFactory.load());
    assertEquals(java.time.Duration.ZERO, defaults.handshakeTargetTurnTime());
    assertEquals(8, defaults.minHandshakesInProgress());
    assertEquals(
        java.time.Duration.ofSeconds(3),
        GatewaySettings.from(with("tether.gateway.admission.target-turn-time = 3s")).handshakeTargetTurnTime());
  }

  @Test
  void theHandshakeQueueTimeoutMustBePositive() {
    assertEquals(java.time.Duration.ofSeconds(8), GatewaySettings.from(ConfigFactory.load()).handshakeQueueTimeout());
    IllegalArgumentException refused =
        assertThrows(
            IllegalArgumentException.class, () -> GatewaySettings.from(with("tether.gateway.admission.queue-timeout = 0s")));
    assertTrue(refused.getMessage().contains("queue-timeout"), refused.getMessage());
  }

  @Test
  void socketsAreSpreadOverFourSelectorsByDefault() {
    // pekko's default is one: a mass disconnect's socket closes then hold up the cluster's links
    // (their heartbeats) on that one thread (application.conf, docs/BENCHMARKS.md sixteenth session).
    assertEquals(4, ConfigFactory.load().getInt("pekko.io.tcp.nr-of-selectors"));
  }

  @Test
  void theLargestAcceptedMessageMustFitInOneMessageBetweenNodes() {
    // The defaults: 1 MiB bodies, 64 KiB frames, 2 MiB between nodes.
    assertEquals(1024 * 1024, GatewaySettings.from(ConfigFactory.load()).maxBodyBytes());

    IllegalArgumentException bodies =
        assertThrows(IllegalArgumentException.class, () -> GatewaySettings.from(with("tether.gateway.limits.max-body-bytes = 4MiB")));
    assertTrue(bodies.getMessage().contains("maximum-frame-size"), bodies.getMessage());
    assertThrows(
        IllegalArgumentException.class, () -> GatewaySettings.from(with("tether.gateway.limits.max-frame-bytes = 2MiB")));
    // Exactly the envelope allowance below the frame is enough.
    assertThrows(
        IllegalArgumentException.class,
        () -> GatewaySettings.from(with("tether.gateway.limits.max-body-bytes = 1985KiB")));
    assertEquals(
        1984 * 1024,
        GatewaySettings.from(with("tether.gateway.limits.max-body-bytes = 1984KiB")).maxBodyBytes());

    GatewaySettings raised =
        GatewaySettings.from(
            with("tether.gateway.limits.max-body-bytes = 4MiB\npekko.remote.artery.advanced.maximum-frame-size = 5MiB"));
    assertEquals(4L * 1024 * 1024, raised.maxBodyBytes());
  }
}
