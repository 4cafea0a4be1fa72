package dev.tether.inspection;

import com.typesafe.config.Config;
import java.time.Duration;

/** The read model's knobs, read once from {@code tether.inspection}. */
public record InspectionSettings(Duration historyRetention, Duration endedRetention, Duration purgeInterval) {

  public static InspectionSettings from(Config config) {
    Config c = config.getConfig("tether.inspection");
    return new InspectionSettings(
        c.getDuration("history-retention"), c.getDuration("ended-retention"), c.getDuration("purge-interval"));
  }
}
