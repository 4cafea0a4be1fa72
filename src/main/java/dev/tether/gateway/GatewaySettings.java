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
    int maxBatchMessages,
    int maxHandshakesInProgress,
    int minHandshakesInProgress,
    Duration handshakeTargetTurnTime,
    Duration handshakeQueueTimeout,
    Duration detachResendAfter) {

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
    requireClusterFrameHolds(config, g.getBytes("limits.max-body-bytes"), g.getBytes("limits.max-frame-bytes"));
    if (g.getDuration("admission.queue-timeout").compareTo(Duration.ZERO) <= 0) {
      // Zero would refuse every handshake that has to wait at all, even for a millisecond.
      throw new IllegalArgumentException("tether.gateway.admission.queue-timeout must be positive");
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
        maxBatchMessages(g),
        g.getInt("admission.max-in-progress"),
        g.getInt("admission.min-in-progress"),
        g.getDuration("admission.target-turn-time"),
        g.getDuration("admission.queue-timeout"),
        positive(g, "detach-resend-after"));
  }

  private static Duration positive(Config g, String key) {
    Duration value = g.getDuration(key);
    if (value.isNegative() || value.isZero()) throw new IllegalArgumentException("tether.gateway." + key + " must be positive, got " + value);
    return value;
  }

  /**
   * What a message between nodes adds to the {@code data} it carries: recipient and sender paths,
   * the sharding envelope, idempotency key (at most 128 characters), room, CBOR framing. A few
   * hundred bytes in practice; the allowance is generous so that no accepted message is near it.
   */
  static final long CLUSTER_ENVELOPE_ALLOWANCE = 64 * 1024;

  /**
   * Every message the gateway accepts (a backend publish up to max-body-bytes, an upstream frame
   * up to max-frame-bytes) must fit in one message between nodes, or it would reach a session
   * on the same node and fail, on every retry, for a session on another one.
   */
  private static void requireClusterFrameHolds(Config config, long maxBodyBytes, long maxFrameBytes) {
    String key = "pekko.remote.artery.advanced.maximum-frame-size";
    long clusterFrame = config.getBytes(key);
    long largest = Math.max(maxBodyBytes, maxFrameBytes) + CLUSTER_ENVELOPE_ALLOWANCE;
    if (largest > clusterFrame) {
      throw new IllegalArgumentException(
          key + " (TETHER_CLUSTER_MAX_FRAME_SIZE) is " + clusterFrame + " bytes; it must hold the largest accepted"
              + " message, max(tether.gateway.limits.max-body-bytes, max-frame-bytes) + 64 KiB = " + largest
              + " bytes, or a message for a session on another node could never be delivered");
    }
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
