package dev.tether.gateway;

import com.typesafe.config.Config;
import dev.tether.session.ClientProxy;
import java.time.Duration;

/** The gateway's knobs, read once from {@code tether.gateway} and {@code tether.http}. */
public record GatewaySettings(
    String host,
    int port,
    Duration handshakeTimeout,
    Duration heartbeatInterval,
    Duration heartbeatTimeout,
    int maxFrameBytes,
    int maxBadFrames,
    long maxBodyBytes,
    int outgoingBuffer,
    int maxPendingFrames,
    AuthMode authMode,
    String jwtSecret,
    String apiToken,
    Duration askTimeout,
    int failedResumeBurst,
    int failedResumesPerMinute,
    long outgoingBufferBytes,
    boolean trustForwardedFor,
    int maxBatchMessages) {

  public enum AuthMode {
    DEV,
    HMAC
  }

  public static GatewaySettings from(Config config) {
    Config g = config.getConfig("tether.gateway");
    AuthMode mode = AuthMode.valueOf(g.getString("auth.mode").trim().toUpperCase());
    String secret = g.getString("auth.jwt-secret");
    if (mode == AuthMode.HMAC && secret.isBlank()) {
      throw new IllegalArgumentException("tether.gateway.auth.mode = hmac needs TETHER_JWT_SECRET");
    }
    if (mode == AuthMode.HMAC && g.getString("api.token").isBlank()) {
      // Otherwise every /api call would answer 401 and nothing would say why.
      throw new IllegalArgumentException("tether.gateway.auth.mode = hmac needs TETHER_API_TOKEN for the backend API");
    }
    return new GatewaySettings(
        config.getString("tether.http.host"),
        config.getInt("tether.http.port"),
        g.getDuration("handshake-timeout"),
        g.getDuration("heartbeat.interval"),
        g.getDuration("heartbeat.timeout"),
        (int) g.getBytes("limits.max-frame-bytes").longValue(),
        g.getInt("limits.max-bad-frames"),
        g.getBytes("limits.max-body-bytes"),
        g.getInt("limits.outgoing-buffer"),
        g.getInt("limits.max-pending-frames"),
        mode,
        secret,
        g.getString("api.token"),
        config.getDuration("tether.session.ask-timeout"),
        g.getInt("limits.failed-resume-burst"),
        g.getInt("limits.failed-resumes-per-minute"),
        g.getBytes("limits.outgoing-buffer-bytes"),
        g.getBoolean("trust-forwarded-for"),
        maxBatchMessages(g));
  }

  /**
   * A session remembers the idempotency keys of its last {@link ClientProxy#MAX_REMEMBERED_ORIGINS}
   * keyed publishes; a retried batch must still find every key of its own, so a batch is no larger.
   */
  private static int maxBatchMessages(Config g) {
    int max = g.getInt("limits.max-batch-messages");
    if (max < 1 || max > ClientProxy.MAX_REMEMBERED_ORIGINS) {
      throw new IllegalArgumentException(
          "tether.gateway.limits.max-batch-messages must be 1.." + ClientProxy.MAX_REMEMBERED_ORIGINS
              + " (a session remembers that many idempotency keys), not " + max);
    }
    return max;
  }
}
