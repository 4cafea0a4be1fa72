package dev.tether;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigValueFactory;
import dev.tether.api.BackendApi;
import dev.tether.api.InspectionApi;
import dev.tether.gateway.Authenticator;
import dev.tether.gateway.FailedResumeLimiter;
import dev.tether.gateway.GatewaySettings;
import dev.tether.gateway.HandshakeAdmission;
import dev.tether.gateway.HttpConnections;
import dev.tether.gateway.LiveConnections;
import dev.tether.gateway.Connection;
import dev.tether.gateway.GatewayListener;
import dev.tether.inspection.InspectionProjection;
import dev.tether.inspection.InspectionSettings;
import dev.tether.inspection.InspectionStore;
import dev.tether.persistence.Database;
import dev.tether.persistence.DatabaseSettings;
import dev.tether.session.ClientProxy;
import dev.tether.session.ClientProxySettings;
import dev.tether.session.Delivery;
import dev.tether.session.GraceSweeper;
import dev.tether.session.Membership;
import dev.tether.session.NodeDepartures;
import dev.tether.session.SessionStore;
import dev.tether.telemetry.ShardGauges;
import dev.tether.telemetry.TetherMetrics;
import java.time.Clock;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.Address;
import org.apache.pekko.actor.AddressFromURIString;
import org.apache.pekko.actor.CoordinatedShutdown;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.DispatcherSelector;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.cluster.typed.Join;
import org.apache.pekko.cluster.typed.JoinSeedNodes;
import org.apache.pekko.stream.javadsl.Tcp;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One Tether node, wired in one place: database (embedded or external) and migrations, the actor
 * system joined to its cluster, the sharded session and membership entities, and the HTTP server
 * (WebSocket plus backend API). {@link Main} starts one; tests start several.
 */
public final class TetherNode implements AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(TetherNode.class);

  private final Database database;
  private final ActorSystem<Void> system;
  private final Tcp.ServerBinding binding;
  private final TetherMetrics metrics;

  private TetherNode(Database database, ActorSystem<Void> system, Tcp.ServerBinding binding, TetherMetrics metrics) {
    this.database = database;
    this.system = system;
    this.binding = binding;
    this.metrics = metrics;
  }

  /**
   * Loads application.conf with {@code overrides} on top (tests use them for ports, timeouts and
   * the database), starts everything and returns once the HTTP port is bound.
   */
  public static TetherNode start(Map<String, ?> overrides) {
    Database database = Database.start(DatabaseSettings.from(load(overrides)));
    Map<String, Object> withDatabase = new HashMap<>(overrides);
    withDatabase.putAll(database.configOverrides());
    Config config = load(withDatabase);

    ActorSystem<Void> system = ActorSystem.create(Behaviors.empty(), "tether", config);
    try {
      return wire(database, system, config);
    } catch (RuntimeException e) {
      system.terminate();
      database.close();
      throw e;
    }
  }

  static Config load(Map<String, ?> overrides) {
    ConfigFactory.invalidateCaches();
    Config config =
        ConfigFactory.load(ConfigFactory.parseMap(overrides).withFallback(ConfigFactory.defaultApplication()));
    config = withRequestsDonePhaseAbove(config);
    // The HTTP idle timeout must never close a healthy WebSocket before the heartbeat does.
    Duration idle = config.getDuration("tether.http.idle-timeout");
    Duration heartbeatMargin = config.getDuration("tether.gateway.heartbeat.timeout").multipliedBy(3).dividedBy(2);
    Duration effective = idle.compareTo(heartbeatMargin) >= 0 ? idle : heartbeatMargin;
    return config.withValue(
        "pekko.http.server.idle-timeout", ConfigValueFactory.fromAnyRef(effective.toMillis() + "ms"));
  }

  /**
   * CoordinatedShutdown moves on when a phase's timeout passes: the phase that drains the HTTP
   * requests must last longer than the drain itself, which aborts what is left at its end.
   */
  private static Config withRequestsDonePhaseAbove(Config config) {
    Duration drain = config.getDuration("tether.http.drain-timeout");
    if (drain.isNegative() || drain.isZero()) {
      throw new IllegalArgumentException("tether.http.drain-timeout must be positive, got " + drain);
    }
    return config.withValue(
        "pekko.coordinated-shutdown.phases.service-requests-done.timeout",
        ConfigValueFactory.fromAnyRef(drain.plusSeconds(2).toMillis() + "ms"));
  }

  private static TetherNode wire(Database database, ActorSystem<Void> system, Config config) {
    joinCluster(system, config.getString("tether.cluster.seed-nodes"));

    ClientProxySettings sessionSettings = ClientProxySettings.from(config);
    GatewaySettings gatewaySettings = GatewaySettings.from(config);
    TetherMetrics metrics = new TetherMetrics();
    SessionStore store =
        new SessionStore(
            database.dataSource(),
            system.dispatchers().lookup(DispatcherSelector.blocking()),
            dev.tether.inspection.InspectionProjection.NAME);
    Delivery delivery = new Delivery(system, sessionSettings.askTimeout());

    NodeDepartures nodeDepartures = new NodeDepartures();
    NodeDepartures.follow(system, nodeDepartures);
    ClientProxy.init(
        system,
        new ClientProxy.Dependencies(sessionSettings, store, delivery, Clock.systemUTC(), metrics, nodeDepartures));
    Duration passivateMembershipAfter = config.getDuration("tether.session.passivate-membership-after");
    if (passivateMembershipAfter.isZero() || passivateMembershipAfter.isNegative()) {
      throw new IllegalArgumentException(
          "tether.session.passivate-membership-after must be positive, got " + passivateMembershipAfter);
    }
    Membership.init(system, passivateMembershipAfter);
    scheduleTombstonePurge(system, store, sessionSettings.tombstoneRetention());
    InspectionStore inspectionStore =
        InspectionProjection.init(system, database.dataSource(), InspectionSettings.from(config));
    // Passivated detached sessions have no timer in memory: the sweeper ends them on time.
    GraceSweeper.init(
        system, inspectionStore::detachedPastDeadline, GraceSweeper.Settings.from(config), metrics, Clock.systemUTC());
    ShardGauges.start(
        system, metrics, List.of(ClientProxy.ENTITY_TYPE_KEY, Membership.ENTITY_TYPE_KEY), Duration.ofSeconds(5));

    dev.tether.gateway.DroppedDetaches.follow(system);
    LiveConnections liveConnections = new LiveConnections();
    HttpConnections httpConnections = new HttpConnections();
    HandshakeAdmission admission =
        new HandshakeAdmission(
            gatewaySettings.maxHandshakesInProgress(),
            gatewaySettings.minHandshakesInProgress(),
            gatewaySettings.handshakeTargetTurnTime(),
            System::nanoTime);
    metrics.watchAdmission(admission);
    var connectionDeps =
        new dev.tether.gateway.Connection.Dependencies(
            gatewaySettings,
            new Authenticator(gatewaySettings),
            ClusterSharding.get(system),
            store,
            metrics,
            new FailedResumeLimiter(gatewaySettings.failedResumeBurst(), gatewaySettings.failedResumesPerMinute()),
            liveConnections,
            admission);
    BackendApi api =
        new BackendApi(
            system,
            gatewaySettings,
            delivery,
            metrics,
            new InspectionApi(system, inspectionStore, gatewaySettings.askTimeout()));

    Tcp.ServerBinding binding =
        GatewayListener.bind(
                system,
                gatewaySettings.host(),
                gatewaySettings.port(),
                config.getDuration("pekko.http.server.idle-timeout"),
                api.route(),
                dev.tether.gateway.WebSocketStage.Limits.from(gatewaySettings),
                admission,
                Connection.starter(system, connectionDeps),
                metrics,
                httpConnections)
            .toCompletableFuture()
            .join();
    // New connections stop being accepted first; the sockets are closed in service-stop, below.
    CoordinatedShutdown.get(system)
        .addTask(
            CoordinatedShutdown.PhaseServiceUnbind(),
            "unbind-gateway-port",
            () -> binding.unbind().thenApply(unbound -> org.apache.pekko.Done.getInstance()));
    log.info(
        "Tether listening on http://{}:{} (WebSocket /ws, API /api, metrics /metrics), auth mode {}",
        binding.localAddress().getHostString(),
        binding.localAddress().getPort(),
        gatewaySettings.authMode().name().toLowerCase());
    // Then the API requests already in progress finish (a publish answered 202 was accepted; one
    // cut off unanswered was not started), while the sessions they go to are all still here.
    Duration drainTimeout = config.getDuration("tether.http.drain-timeout");
    CoordinatedShutdown.get(system)
        .addTask(
            CoordinatedShutdown.PhaseServiceRequestsDone(),
            "drain-http-requests",
            () -> httpConnections.drain(drainTimeout));
    // After the port is unbound and before the shards hand off their sessions: close every
    // socket (1012, resume to continue), so each session persists its detach while the journal
    // is still there.
    CoordinatedShutdown.get(system)
        .addTask(
            CoordinatedShutdown.PhaseServiceStop(),
            "close-websockets",
            () -> liveConnections.closeAll(Duration.ofSeconds(10)));
    return new TetherNode(database, system, binding, metrics);
  }

  /** No seed nodes: form a one-node cluster. Otherwise join the listed ones. */
  private static void joinCluster(ActorSystem<?> system, String seedNodes) {
    Cluster cluster = Cluster.get(system);
    if (seedNodes.isBlank()) {
      cluster.manager().tell(Join.create(cluster.selfMember().address()));
      return;
    }
    List<Address> seeds =
        Arrays.stream(seedNodes.split(","))
            .map(String::trim)
            .filter(s -> !s.isEmpty())
            .map(AddressFromURIString::parse)
            .toList();
    cluster.manager().tell(new JoinSeedNodes(seeds));
  }

  private static void scheduleTombstonePurge(ActorSystem<?> system, SessionStore store, Duration retention) {
    system
        .scheduler()
        .scheduleAtFixedRate(
            Duration.ofMinutes(1),
            Duration.ofHours(1),
            () -> store.purgeTombstones(retention),
            system.executionContext());
  }

  public ActorSystem<Void> system() {
    return system;
  }

  public int port() {
    return binding.localAddress().getPort();
  }

  public TetherMetrics metrics() {
    return metrics;
  }

  public Database database() {
    return database;
  }

  /**
   * Stops the node through CoordinatedShutdown (if it is not stopped already), waits for the actor
   * system to terminate, then closes the database: the journal plugin and the projections hold
   * connections until the very end, so it cannot be closed in a shutdown phase.
   */
  @Override
  public void close() {
    system.terminate();
    try {
      system.getWhenTerminated().toCompletableFuture().get(30, TimeUnit.SECONDS);
    } catch (Exception e) {
      log.warn("Actor system did not terminate in time", e);
    }
    database.close();
  }
}
