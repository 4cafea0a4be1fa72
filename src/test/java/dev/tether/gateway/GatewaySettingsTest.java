package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import org.junit.jupiter.api.Test;

class GatewaySettingsTest {
  private static Config withMaxBatch(int max) {
    return ConfigFactory.parseString("tether.gateway.limits.max-batch-messages = " + max)
        .withFallback(ConfigFactory.load())
        .resolve();
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
}
