package dev.tether.telemetry;

import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import io.micrometer.core.instrument.binder.jvm.JvmGcMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmMemoryMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmThreadMetrics;
import io.micrometer.core.instrument.binder.system.ProcessorMetrics;
import io.micrometer.prometheusmetrics.PrometheusConfig;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import java.time.Duration;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The gateway's Prometheus metrics (served at {@code GET /metrics}). Names follow Prometheus
 * conventions: {@code tether_*_total} counters, {@code *_seconds} histograms.
 */
public final class TetherMetrics {
  private final PrometheusMeterRegistry registry;
  private final AtomicLong openConnections = new AtomicLong();
  private final Counter framesIn;
  private final Counter framesOut;
  private final Counter messagesWritten;
  private final Counter messagesReplayed;
  private final Counter messagesLostReported;
  private final Counter heartbeatTimeouts;
  private final Counter slowConsumers;
  private final Counter kicks;
  private final Counter logouts;
  private final Timer resumeLatency;
  private final ConcurrentHashMap<String, Counter> welcomesByReason = new ConcurrentHashMap<>();
  private final ConcurrentHashMap<String, Counter> badFramesByCode = new ConcurrentHashMap<>();
  private final ConcurrentHashMap<String, Counter> apiPublishes = new ConcurrentHashMap<>();

  public TetherMetrics() {
    registry = new PrometheusMeterRegistry(PrometheusConfig.DEFAULT);
    new JvmMemoryMetrics().bindTo(registry);
    new JvmGcMetrics().bindTo(registry);
    new JvmThreadMetrics().bindTo(registry);
    new ProcessorMetrics().bindTo(registry);
    registry.gauge("tether_connections_open", openConnections);
    framesIn = Counter.builder("tether_frames_in").description("WebSocket frames received").register(registry);
    framesOut = Counter.builder("tether_frames_out").description("WebSocket frames sent").register(registry);
    messagesWritten =
        Counter.builder("tether_messages_written").description("msg frames written to sockets").register(registry);
    messagesReplayed =
        Counter.builder("tether_messages_replayed").description("messages replayed on resume").register(registry);
    messagesLostReported =
        Counter.builder("tether_messages_lost_reported")
            .description("messages reported lost to resuming clients (outbox overflow)")
            .register(registry);
    heartbeatTimeouts =
        Counter.builder("tether_heartbeat_timeouts").description("connections closed 4008").register(registry);
    slowConsumers =
        Counter.builder("tether_slow_consumer_closes").description("connections closed 4009").register(registry);
    kicks = Counter.builder("tether_kicks").description("sessions kicked by the backend").register(registry);
    logouts = Counter.builder("tether_logouts").description("sessions ended by bye").register(registry);
    resumeLatency =
        Timer.builder("tether_handshake_latency")
            .description("hello/resume received to welcome sent")
            .publishPercentileHistogram()
            .maximumExpectedValue(Duration.ofSeconds(10))
            .register(registry);
  }

  public MeterRegistry registry() {
    return registry;
  }

  /** The Prometheus text exposition. */
  public String scrape() {
    return registry.scrape();
  }

  public void connectionOpened() {
    openConnections.incrementAndGet();
  }

  public void connectionClosed() {
    openConnections.decrementAndGet();
  }

  public void frameIn() {
    framesIn.increment();
  }

  public void frameOut() {
    framesOut.increment();
  }

  public void messageWritten() {
    messagesWritten.increment();
  }

  /** A handshake completed; {@code reason} is the welcome's (resumed, new, expired, ...). */
  public void welcomed(String reason, long nanos, int replay, long lost) {
    welcomesByReason
        .computeIfAbsent(
            reason,
            r -> Counter.builder("tether_welcomes").tag("reason", r).description("welcomes by reason").register(registry))
        .increment();
    resumeLatency.record(nanos, TimeUnit.NANOSECONDS);
    messagesReplayed.increment(replay);
    messagesLostReported.increment(lost);
  }

  public void heartbeatTimeout() {
    heartbeatTimeouts.increment();
  }

  public void slowConsumer() {
    slowConsumers.increment();
  }

  public void kicked() {
    kicks.increment();
  }

  public void loggedOut() {
    logouts.increment();
  }

  public void badFrame(String code) {
    badFramesByCode
        .computeIfAbsent(
            code,
            c -> Counter.builder("tether_bad_frames").tag("code", c).description("frames refused, by error code").register(registry))
        .increment();
  }

  public void apiPublish(String target) {
    apiPublishes
        .computeIfAbsent(
            target,
            t -> Counter.builder("tether_api_publishes").tag("target", t).description("backend API publishes").register(registry))
        .increment();
  }
}
