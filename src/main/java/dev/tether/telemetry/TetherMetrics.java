package dev.tether.telemetry;

import dev.tether.gateway.HandshakeAdmission;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.DistributionSummary;
import io.micrometer.core.instrument.FunctionCounter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import io.micrometer.core.instrument.binder.jvm.JvmGcMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmMemoryMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmThreadMetrics;
import io.micrometer.core.instrument.binder.system.ProcessorMetrics;
import io.micrometer.prometheusmetrics.PrometheusConfig;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;

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
  private final Counter handshakeTimeouts;
  private final Counter handshakeSessionUnavailable;
  private final Counter slowConsumers;
  private final Counter kicks;
  private final Counter logouts;
  private final Timer helloLatency;
  private final Timer resumeLatency;
  private final ConcurrentHashMap<String, Counter> welcomesByReason = new ConcurrentHashMap<>();
  private final ConcurrentHashMap<String, Counter> badFramesByCode = new ConcurrentHashMap<>();
  private final ConcurrentHashMap<String, Counter> apiPublishes = new ConcurrentHashMap<>();

  // Sessions (ClientProxy), per node.
  private final AtomicLong sessionsAttached = new AtomicLong();
  private final AtomicLong sessionsDetached = new AtomicLong();
  private final Counter takeovers;
  private final Counter expiries;
  private final Counter abandoned;
  private final Counter passivations;
  private final Counter sweeperWakes;
  private final Counter messagesEnqueued;
  private final Counter messagesAcked;
  private final Counter messagesEvicted;
  private final Counter upstreamAccepted;
  private final DistributionSummary outboxDepth;
  private final DistributionSummary outboxBytes;
  private final Timer persistLatency;
  private final Counter deliveryGaps;
  private final Counter detachResendsDropped;
  private final Counter detachResendsUnanswered;
  private final Counter detachResendsSessionMoved;
  private final ConcurrentHashMap<String, AtomicLong> shardGauges = new ConcurrentHashMap<>();

  public TetherMetrics() {
    registry = new PrometheusMeterRegistry(PrometheusConfig.DEFAULT);
    new JvmMemoryMetrics().bindTo(registry);
    new JvmGcMetrics().bindTo(registry);
    new JvmThreadMetrics().bindTo(registry);
    new ProcessorMetrics().bindTo(registry);
    // Open file descriptors against the limit: every socket is one (see OPERATIONS.md).
    new io.micrometer.core.instrument.binder.system.FileDescriptorMetrics().bindTo(registry);
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
    // Failed handshakes are not in the latency histogram (it times welcomes), so they are
    // counted here: under overload the p99 of the handshakes that made it can look fine.
    handshakeTimeouts = handshakeFailures("timeout");
    handshakeSessionUnavailable = handshakeFailures("session-unavailable");
    heartbeatTimeouts =
        Counter.builder("tether_heartbeat_timeouts").description("connections closed 4008").register(registry);
    deliveryGaps =
        Counter.builder("tether_delivery_gaps")
            .description("sockets closed 1012 because a message from their session did not arrive (dropped between nodes); the client resumes and gets it")
            .register(registry);
    detachResendsDropped = detachResends("dropped");
    detachResendsUnanswered = detachResends("unanswered");
    detachResendsSessionMoved = detachResends("session-moved");
    slowConsumers =
        Counter.builder("tether_slow_consumer_closes").description("connections closed 4009").register(registry);
    kicks = Counter.builder("tether_kicks").description("sessions kicked by the backend").register(registry);
    logouts = Counter.builder("tether_logouts").description("sessions ended by bye").register(registry);
    helloLatency =
        Timer.builder("tether_handshake_latency")
            .tag("kind", "hello")
            .description("hello or resume received to welcome sent; kind=resume only for resumes that continued their session")
            .publishPercentileHistogram()
            .maximumExpectedValue(Duration.ofSeconds(10))
            .register(registry);
    resumeLatency =
        Timer.builder("tether_handshake_latency")
            .tag("kind", "resume")
            .description("hello or resume received to welcome sent; kind=resume only for resumes that continued their session")
            .publishPercentileHistogram()
            .maximumExpectedValue(Duration.ofSeconds(10))
            .register(registry);

    String sessionsByState = "live sessions hosted on this node, by state";
    stateGauge("tether_sessions", "attached", sessionsByState, sessionsAttached::get);
    stateGauge("tether_sessions", "detached", sessionsByState, sessionsDetached::get);
    takeovers = Counter.builder("tether_takeovers").description("resumes that took a session from a live socket").register(registry);
    expiries = Counter.builder("tether_expiries").description("sessions ended by grace expiry").register(registry);
    abandoned =
        Counter.builder("tether_sessions_abandoned")
            .description("new sessions ended because their connection gave up before the welcome")
            .register(registry);
    passivations =
        Counter.builder("tether_sessions_passivated")
            .description("detached sessions that left memory after passivate-detached-after without a command")
            .register(registry);
    sweeperWakes =
        Counter.builder("tether_grace_sweeper_wakes")
            .description("sessions woken by the grace sweeper because their grace deadline had passed")
            .register(registry);
    messagesEnqueued = Counter.builder("tether_messages_enqueued").description("messages queued in outboxes").register(registry);
    messagesAcked = Counter.builder("tether_messages_acked").description("messages acknowledged by clients").register(registry);
    messagesEvicted =
        Counter.builder("tether_messages_lost").description("messages dropped by outbox overflow").register(registry);
    upstreamAccepted = Counter.builder("tether_upstream_accepted").description("client sends durably accepted").register(registry);
    outboxDepth =
        DistributionSummary.builder("tether_outbox_messages")
            .description("outbox depth (messages) seen at each enqueue")
            .publishPercentileHistogram()
            .maximumExpectedValue(100_000.0)
            .register(registry);
    outboxBytes =
        DistributionSummary.builder("tether_outbox_bytes")
            .description("outbox size (bytes) seen at each enqueue")
            .baseUnit("bytes")
            .publishPercentileHistogram()
            .maximumExpectedValue(64.0 * 1024 * 1024)
            .register(registry);
    persistLatency =
        Timer.builder("tether_persist_latency")
            .description("session command received to its event persisted")
            .publishPercentileHistogram()
            .maximumExpectedValue(Duration.ofSeconds(10))
            .register(registry);
    registerActorTelemetry();
  }

  // Sessions ----------------------------------------------------------------------------------

  /** A session hosted here changed between attached, detached and gone (null). */
  public void sessionStateChanged(String from, String to) {
    adjust(from, -1);
    adjust(to, 1);
  }

  private void adjust(String state, int delta) {
    if ("attached".equals(state)) sessionsAttached.addAndGet(delta);
    else if ("detached".equals(state)) sessionsDetached.addAndGet(delta);
  }

  public void takeover() {
    takeovers.increment();
  }

  public void expired() {
    expiries.increment();
  }

  /** A new session ended because the client never got its welcome (see ClientProxy.Abandon). */
  public void abandoned() {
    abandoned.increment();
  }

  public void passivated() {
    passivations.increment();
  }

  public void sweeperWoke(int sessions) {
    sweeperWakes.increment(sessions);
  }

  /** {@code messages} were queued by one persist (a publish, or a batch for one session). */
  public void enqueued(int messages, int outboxMessages, long outboxSizeBytes, long evicted, long persistNanos) {
    messagesEnqueued.increment(messages);
    outboxDepth.record(outboxMessages);
    outboxBytes.record(outboxSizeBytes);
    if (evicted > 0) messagesEvicted.increment(evicted);
    persistLatency.record(persistNanos, TimeUnit.NANOSECONDS);
  }

  public void acked(long messages) {
    messagesAcked.increment(messages);
  }

  public void upstreamAccepted(long persistNanos) {
    upstreamAccepted.increment();
    persistLatency.record(persistNanos, TimeUnit.NANOSECONDS);
  }

  /** Shards and entities of an entity type hosted on this node (refreshed periodically). */
  public void shardsHosted(String entityType, int shards, int entities) {
    shardGauge("tether_shards", entityType).set(shards);
    shardGauge("tether_entities", entityType).set(entities);
  }

  private AtomicLong shardGauge(String name, String entityType) {
    return shardGauges.computeIfAbsent(
        name + "/" + entityType,
        k -> {
          AtomicLong value = new AtomicLong();
          Gauge.builder(name, value, AtomicLong::get)
              .tag("type", entityType)
              .description(name.equals("tether_shards") ? "shards hosted on this node" : "entities hosted on this node")
              .register(registry);
          return value;
        });
  }

  /** Actor classes whose mailboxes and message handling are measured. */
  public static final List<String> INSTRUMENTED_ACTORS = List.of("ClientProxy", "Connection", "Membership");

  private void registerActorTelemetry() {
    for (String actor : INSTRUMENTED_ACTORS) {
      ActorTelemetry t = ActorTelemetry.of(actor);
      Gauge.builder("tether_actor_mailbox_depth", t, ActorTelemetry::mailboxDepth)
          .tag("actor", actor)
          .description("messages waiting in the mailboxes of all actors of this class")
          .register(registry);
      FunctionCounter.builder("tether_actor_messages_enqueued", t, ActorTelemetry::enqueuedTotal)
          .tag("actor", actor)
          .description("messages put into mailboxes of this actor class")
          .register(registry);
      FunctionCounter.builder("tether_actor_messages_processed", t, ActorTelemetry::processedTotal)
          .tag("actor", actor)
          .description("messages handled by actors of this class")
          .register(registry);
      FunctionCounter.builder("tether_actor_processing_seconds", t, ActorTelemetry::processingSecondsTotal)
          .tag("actor", actor)
          .description("time actors of this class spent handling messages")
          .register(registry);
    }
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
  public void welcomed(String reason, boolean resumed, long nanos, int replay, long lost) {
    welcomesByReason
        .computeIfAbsent(
            reason,
            r -> Counter.builder("tether_welcomes").tag("reason", r).description("welcomes by reason").register(registry))
        .increment();
    (resumed ? resumeLatency : helloLatency).record(nanos, TimeUnit.NANOSECONDS);
    messagesReplayed.increment(replay);
    messagesLostReported.increment(lost);
  }

  private Counter detachResends(String reason) {
    return Counter.builder("tether_detach_resends")
        .tag("reason", reason)
        .description(
            "Detach messages sent again: dropped = pekko reported one dropped on its way to another node,"
                + " unanswered = the session had not answered within detach-resend-after,"
                + " session-moved = the session's incarnation stopped first (sent to the next one)")
        .register(registry);
  }

  private Counter handshakeFailures(String reason) {
    return Counter.builder("tether_handshake_failures")
        .tag("reason", reason)
        .description(HANDSHAKE_FAILURES)
        .register(registry);
  }

  private static final String HANDSHAKE_FAILURES =
      "sockets closed before their welcome: timeout = no hello/resume within handshake-timeout (4001),"
          + " session-unavailable = the session did not answer within 2 x ask-timeout (1011),"
          + " busy = waited longer than admission.queue-timeout for its turn (upgrade: 503, hello/resume: 1013)";

  /** No {@code hello} or {@code resume} within the handshake timeout: closed 4001. */
  public void handshakeTimedOut() {
    handshakeTimeouts.increment();
  }

  private void stateGauge(String name, String state, String description, Supplier<Number> value) {
    Gauge.builder(name, value).tag("state", state).description(description).register(registry);
  }

  /** Reports how many handshakes the node works on and how many wait their turn. */
  public void watchAdmission(HandshakeAdmission admission) {
    String handshakesByState = "WebSocket handshake steps (upgrade; hello/resume to welcome) worked on, or waiting their turn";
    stateGauge("tether_handshakes", "in-progress", handshakesByState, admission::inProgress);
    stateGauge("tether_handshakes", "waiting", handshakesByState, admission::waiting);
    Gauge.builder("tether_handshakes_limit", admission, HandshakeAdmission::limit)
        .description("Handshake steps this node works on at once now (admission.max-in-progress unless turns have been slower than admission.target-turn-time)")
        .register(registry);
    // Counted by the admission itself: the WebSocket stage (503) and the connection actor (1013) both turn clients away.
    FunctionCounter.builder("tether_handshake_failures", admission, HandshakeAdmission::refusedBusyCount)
        .tag("reason", "busy")
        .description(HANDSHAKE_FAILURES)
        .register(registry);
  }

  /** The session did not answer the handshake in time: closed 1011. */
  public void handshakeSessionUnavailable() {
    handshakeSessionUnavailable.increment();
  }

  public void heartbeatTimeout() {
    heartbeatTimeouts.increment();
  }

  public void deliveryGap() {
    deliveryGaps.increment();
  }

  /** Why a closed socket's connection sent its session's Detach again. */
  public enum DetachResendReason {
    /** pekko reported the Detach dropped on its way to another node */
    DROPPED,
    /** the session had not answered within detach-resend-after */
    UNANSWERED,
    /** the session's incarnation stopped before answering: sent to the next one through sharding */
    SESSION_MOVED
  }

  public void detachResent(DetachResendReason reason) {
    switch (reason) {
      case DROPPED -> detachResendsDropped.increment();
      case UNANSWERED -> detachResendsUnanswered.increment();
      case SESSION_MOVED -> detachResendsSessionMoved.increment();
    }
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
