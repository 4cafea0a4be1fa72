package dev.tether.session;

import com.fasterxml.jackson.annotation.JsonAutoDetect;
import com.fasterxml.jackson.annotation.JsonAutoDetect.Visibility;
import dev.tether.CborSerializable;
import java.security.MessageDigest;
import java.nio.charset.StandardCharsets;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import org.apache.pekko.actor.Address;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.MailboxSelector;
import org.apache.pekko.actor.typed.PostStop;
import dev.tether.telemetry.TelemetryInterceptor;
import dev.tether.telemetry.TetherMetrics;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.javadsl.TimerScheduler;
import org.apache.pekko.cluster.sharding.typed.ClusterShardingSettings;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.sharding.typed.javadsl.Entity;
import org.apache.pekko.cluster.sharding.typed.javadsl.EntityTypeKey;
import org.apache.pekko.persistence.typed.PersistenceId;
import org.apache.pekko.persistence.typed.RecoveryCompleted;
import org.apache.pekko.persistence.typed.javadsl.CommandHandlerWithReply;
import org.apache.pekko.persistence.typed.javadsl.EffectBuilder;
import org.apache.pekko.persistence.typed.javadsl.EventHandler;
import org.apache.pekko.persistence.typed.javadsl.EventSourcedBehaviorWithEnforcedReplies;
import org.apache.pekko.persistence.typed.javadsl.ReplyEffect;
import org.apache.pekko.persistence.typed.javadsl.RetentionCriteria;
import org.apache.pekko.persistence.typed.javadsl.SignalHandler;

/**
 * One client session: durable, event-sourced, sharded across the cluster.
 *
 * <p>It outlives its WebSocket: when the connection drops the session is detached and keeps
 * queuing messages for the grace period; a {@code resume} with the right token attaches a new
 * connection (on any node) and gets every message after the client's {@code lastSeq}, then the
 * live ones. Only facts are persisted (queued, acked, attached, detached with its deadline); the
 * connection's {@code ActorRef} and the timers are runtime state of this incarnation.
 *
 * <p>Lifecycle: NEW → ATTACHED ⇄ DETACHED → ENDED (logout, kick, grace expiry, abandoned before
 * its first welcome). An ended session's
 * journal rows and snapshots are erased, leaving only a tombstone ({@link SessionStore}).
 *
 * <p>Sessions in memory are remembered entities: if a node dies, its sessions are started again on
 * another node, recover their state from the journal (an attached one detaches, its socket died
 * with the node) and expire on time even if no client ever comes back. A detached session that
 * receives nothing for {@code passivate-detached-after} leaves memory (and the remembered set);
 * its grace period is then enforced by {@link GraceSweeper}, which wakes it once the deadline has
 * passed. Idle attached sessions are never passivated: they hold a live socket.
 */
public final class ClientProxy
    extends EventSourcedBehaviorWithEnforcedReplies<ClientProxy.Command, ClientProxy.Event, ClientProxy.State> {

  public static final EntityTypeKey<Command> ENTITY_TYPE_KEY =
      EntityTypeKey.create(Command.class, "ClientProxy");

  /** How many distinct senders a session remembers for de-duplicating retried deliveries. */
  public static final int MAX_REMEMBERED_ORIGINS = 1024;

  private static final Duration RETRY_DELAY = Duration.ofSeconds(1);
  private static final Duration READ_MODEL_POLL = Duration.ofMillis(250);
  private static final Duration READ_MODEL_POLL_MAX = Duration.ofSeconds(4);

  private static Duration min(Duration a, Duration b) {
    return a.compareTo(b) <= 0 ? a : b;
  }

  // ---------------------------------------------------------------------------------------------
  // Commands

  public interface Command extends CborSerializable {}

  /** A {@code hello}: start this (new) session for {@code userId}, held by {@code connection}. */
  public record Open(String userId, String tokenHash, ActorRef<ToConnection> connection) implements Command {}

  /**
   * A {@code resume}: continue the session if the token matches, and the user too when the
   * client named one ({@code userId} null: the resume token alone authenticates).
   */
  public record Resume(String userId, String tokenHash, long lastSeq, ActorRef<ToConnection> connection)
      implements Command {}

  /**
   * The connection of {@code generation} is gone without a {@code bye}: the grace period starts.
   * The session answers {@code replyTo} with {@link ToConnection.Released} as soon as it has the
   * Detach; the connection sends it again until then, because between nodes pekko drops ordinary
   * messages when a link's send queue is full. {@code replyTo} is null from a node of an earlier
   * release.
   */
  public record Detach(long generation, ActorRef<ToConnection> replyTo) implements Command {}

  /** Queue a downstream message (from the backend or from another client). */
  public record Enqueue(Draft draft, ActorRef<EnqueueResult> replyTo) implements Command {}

  /**
   * Queue several downstream messages in this order, persisted together (a batch publish): one
   * journal write for all of them, and one answer.
   */
  public record EnqueueAll(List<Draft> drafts, ActorRef<EnqueuedAll> replyTo) implements Command {}

  /** Cumulative acknowledgement: everything up to {@code seq} may be forgotten. */
  public record Ack(long generation, long seq) implements Command {}

  /** An upstream {@code send}; answered {@code sent} once durably accepted. */
  public record SendUpstream(long generation, long cseq, Target target, String data, boolean echo)
      implements Command {}

  public record Join(long generation, String room) implements Command {}

  public record Leave(long generation, String room) implements Command {}

  /**
   * The connection that sent {@link Open} gave up before it could write the welcome (its socket
   * closed, or the session answered too late): the client never learned this session's id or
   * resume token, so nobody can ever resume it. It ends now ({@code abandoned}) instead of holding
   * a grace period, a passivation and a sweep that nobody can use. Under an overload, every
   * handshake a client gave up on used to leave such a session behind.
   */
  public record Abandon(ActorRef<ToConnection> connection) implements Command {}

  /** A {@code bye}: end the session now, with no grace. */
  public record Logout(long generation) implements Command {}

  /**
   * Sent by {@link GraceSweeper} to a session the read model shows detached past its deadline:
   * it may have left memory, so its own grace timer is gone. Ends it if the deadline has passed.
   */
  public record ExpireIfDue() implements Command {}

  /** The backend ends the session ({@code DELETE /api/sessions/{id}}). */
  public record Kick(ActorRef<KickResult> replyTo) implements Command {}

  public record GetState(ActorRef<StateReply> replyTo) implements Command {}

  /** What became of message {@code seq}: see {@link Receipt}. */
  public record GetReceipt(long seq, ActorRef<Receipt> replyTo) implements Command {}

  // Internal messages: timers and the completions of asynchronous work.
  private enum GraceExpired implements Command {
    INSTANCE
  }

  /** A detached session received nothing for {@code passivate-detached-after}. */
  private enum PassivateIfIdle implements Command {
    INSTANCE
  }

  /**
   * {@code check-written-after} a write: if the client has not acknowledged it, the connection is
   * told how far the session wrote (it closes 1012 if it wrote less: a delivery was dropped).
   */
  private enum CheckWritten implements Command {
    INSTANCE
  }

  private enum DetachAfterRecovery implements Command {
    INSTANCE
  }

  private enum RetryPendingWork implements Command {
    INSTANCE
  }

  /**
   * The attached connection's actor stopped (a connection on this node) or the node it was on
   * left the cluster: detach if it still holds us.
   */
  private record ConnectionTerminated(ActorRef<ToConnection> connection) implements Command {}

  private record UpstreamDeliveryDone(long cseq, boolean delivered) implements Command {}

  private record UserIndexDone(boolean ok) implements Command {}

  private record RoomMembershipDone(String room, boolean ok) implements Command {}

  private record EraseDone(SessionStore.Erased erased) implements Command {}

  // ---------------------------------------------------------------------------------------------
  // Replies

  public sealed interface EnqueueResult extends CborSerializable {}

  /**
   * Durably queued as {@code seq}; {@code duplicate} when it was a retry of a message already
   * queued (then {@code seq} is the original's).
   */
  public record Enqueued(long seq, boolean duplicate) implements EnqueueResult {}

  /** Not queued: {@code unknown} (no such session), {@code ended}, or {@code not-member} of the room. */
  public record NotDelivered(String reason) implements EnqueueResult {}

  /**
   * The answer to {@link EnqueueAll}: one outcome per draft, in order. (A concrete record per
   * entry rather than a list of {@link EnqueueResult}, which would need type information on the
   * wire.)
   */
  public record EnqueuedAll(List<Outcome> outcomes) implements CborSerializable {
    /** Queued as {@code seq} ({@code duplicate} for a retry), or, when {@code notDelivered} is set, not queued. */
    public record Outcome(long seq, boolean duplicate, String notDelivered) {
      static Outcome of(EnqueueResult result) {
        return result instanceof Enqueued e
            ? new Outcome(e.seq(), e.duplicate(), null)
            : new Outcome(0, false, ((NotDelivered) result).reason());
      }

      public EnqueueResult result() {
        return notDelivered == null ? new Enqueued(seq, duplicate) : new NotDelivered(notDelivered);
      }
    }

    static EnqueuedAll of(List<EnqueueResult> results) {
      return new EnqueuedAll(results.stream().map(Outcome::of).toList());
    }

    static EnqueuedAll allNotDelivered(int count, String reason) {
      return new EnqueuedAll(java.util.Collections.nCopies(count, new Outcome(0, false, reason)));
    }
  }

  public record KickResult(boolean found) implements CborSerializable {}

  /**
   * The live session's view of one message: {@code queued} (in the outbox, not yet handed to a
   * socket), {@code written} (handed to the client's socket by this incarnation), {@code acked},
   * {@code lost} (dropped by outbox overflow before it was acked), {@code unknown} (no such seq),
   * or {@code no-session}.
   */
  public record Receipt(String status) implements CborSerializable {}

  /** The session's state, or {@code view == null} when there is no such session. */
  public record StateReply(SessionView view) implements CborSerializable {}

  public record SessionView(
      String sessionId,
      String userId,
      String state,
      long lastSeq,
      long ackedSeq,
      int outboxSize,
      long outboxBytes,
      long clientSeq,
      List<String> rooms,
      Long graceDeadline,
      long resumes,
      long takeovers,
      long lost,
      long generation,
      long createdAt)
      implements CborSerializable {}

  // ---------------------------------------------------------------------------------------------
  // Events

  public interface Event extends CborSerializable {}

  public record Opened(String sessionId, String userId, String tokenHash, long ts) implements Event {}

  public record Attached(long generation, boolean resumed, boolean takeover, long ts) implements Event {}

  public record Detached(long graceDeadline) implements Event {}

  public record UserIndexed() implements Event {}

  /**
   * A message entered the outbox. {@code evictThrough} is the highest seq dropped to keep the
   * outbox within its bounds (0 if none); those count as lost.
   */
  public record MessageQueued(OutboxMessage message, String origin, long originSeq, long evictThrough)
      implements Event {}

  public record Acked(long seq) implements Event {}

  public record UpstreamAccepted(long cseq, Target target, String data, boolean echo, long ts)
      implements Event {}

  /** The upstream message was accepted (its cseq is used) but not delivered, e.g. not in the room. */
  public record UpstreamRefused(long cseq, String code) implements Event {}

  public record UpstreamDelivered(long cseq) implements Event {}

  public record JoinedRoom(String room) implements Event {}

  public record LeftRoom(String room) implements Event {}

  /** The session is over: {@code logout}, {@code kicked}, {@code expired} or {@code abandoned}. */
  public record Ended(String reason, long ts) implements Event {}

  // ---------------------------------------------------------------------------------------------
  // State

  public enum Status {
    NEW,
    ATTACHED,
    DETACHED,
    ENDED
  }

  /** An accepted upstream message not yet handed to all of its recipients. */
  public record PendingUpstream(long cseq, Target target, String data, boolean echo, long ts)
      implements CborSerializable {}

  /**
   * The last {@code originSeq} queued from one origin (a sending session, or an API idempotency
   * key), the seq it was queued as, and when.
   */
  public record OriginMark(long seq, long queuedSeq, long ts) implements CborSerializable {}

  /**
   * The session's durable state. Mutable for speed (an outbox is copied on no event), and only
   * ever touched by this actor's event handler.
   */
  @JsonAutoDetect(
      fieldVisibility = Visibility.ANY,
      getterVisibility = Visibility.NONE,
      isGetterVisibility = Visibility.NONE)
  public static final class State implements CborSerializable {
    Status status = Status.NEW;
    String sessionId;
    String userId;
    String tokenHash;
    long createdAt;
    TreeMap<Long, OutboxMessage> outbox = new TreeMap<>();
    long outboxBytes;
    long nextSeq = 1;
    long ackedSeq;
    long clientSeq;
    TreeSet<String> rooms = new TreeSet<>();
    long generation;
    long graceDeadline;
    long resumes;
    long takeovers;
    long lost;
    boolean userIndexed;
    String endReason;
    TreeMap<Long, PendingUpstream> pendingUpstream = new TreeMap<>();
    HashMap<String, OriginMark> origins = new HashMap<>();
    /**
     * The client's last {@link #REFUSALS_KEPT} refused sends (cseq to error code). A refusal uses
     * up its cseq, so {@code clientSeq} covers it; the welcome lists these so that a client whose
     * error frame was lost in a drop does not take the send for accepted, and a re-sent refused
     * cseq is refused again rather than confirmed.
     */
    TreeMap<Long, String> refusedUpstream = new TreeMap<>();

    public Status status() {
      return status;
    }

    public long lastSeq() {
      return nextSeq - 1;
    }

    public boolean isLive() {
      return status == Status.ATTACHED || status == Status.DETACHED;
    }

    public String tokenHash() {
      return tokenHash;
    }

    public TreeMap<Long, OutboxMessage> outbox() {
      return outbox;
    }

    public long outboxBytes() {
      return outboxBytes;
    }

    public long ackedSeq() {
      return ackedSeq;
    }

    public long clientSeq() {
      return clientSeq;
    }

    public TreeSet<String> rooms() {
      return rooms;
    }

    public long generation() {
      return generation;
    }

    public long graceDeadline() {
      return graceDeadline;
    }

    public long lost() {
      return lost;
    }

    public long resumes() {
      return resumes;
    }

    public long takeovers() {
      return takeovers;
    }

    public String userId() {
      return userId;
    }

    public String endReason() {
      return endReason;
    }

    public boolean userIndexed() {
      return userIndexed;
    }

    public TreeMap<Long, PendingUpstream> pendingUpstream() {
      return pendingUpstream;
    }

    SessionView view() {
      String shown =
          switch (status) {
            case ATTACHED -> "attached";
            case DETACHED -> "detached";
            case ENDED -> "ended";
            case NEW -> "new";
          };
      return new SessionView(
          sessionId,
          userId,
          shown,
          lastSeq(),
          ackedSeq,
          outbox.size(),
          outboxBytes,
          clientSeq,
          List.copyOf(rooms),
          status == Status.DETACHED ? graceDeadline : null,
          resumes,
          takeovers,
          lost,
          generation,
          createdAt);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Wiring

  /** What a session needs from its surroundings. */
  public record Dependencies(
      ClientProxySettings settings,
      SessionStore store,
      Delivery delivery,
      Clock clock,
      TetherMetrics metrics,
      NodeDepartures nodeDepartures) {

    /**
     * Without a shared metrics registry or cluster events (unit tests): the session reports to a
     * private registry, and no other node ever leaves.
     */
    public Dependencies(ClientProxySettings settings, SessionStore store, Delivery delivery, Clock clock) {
      this(settings, store, delivery, clock, new TetherMetrics(), new NodeDepartures());
    }
  }

  public static void init(ActorSystem<?> system, Dependencies deps) {
    ClusterSharding.get(system)
        .init(
            Entity.of(
                    ENTITY_TYPE_KEY,
                    ctx ->
                        TelemetryInterceptor.instrument(
                            "ClientProxy", Command.class, create(ctx.getEntityId(), deps, ctx.getShard())))
                .withEntityProps(MailboxSelector.fromConfig("tether.telemetry.mailboxes.client-proxy"))
                // Passivation is the session's own decision (detached and idle, or over), never
                // pekko's idle strategy: an attached session can be quiet for long and still hold a socket.
                .withSettings(
                    ClusterShardingSettings.create(system).withRememberEntities(true).withNoPassivationStrategy()));
  }

  /**
   * @param shard the shard to ask for passivation when the session is over; null outside sharding
   *     (unit tests), where the session stops itself instead
   */
  public static Behavior<Command> create(
      String sessionId, Dependencies deps, ActorRef<ClusterSharding.ShardCommand> shard) {
    // Everything the session logs carries its id (logback: %X{sessionId}).
    return Behaviors.withMdc(
        Command.class,
        Map.of("sessionId", sessionId),
        Behaviors.setup(
            context ->
                Behaviors.withTimers(timers -> new ClientProxy(sessionId, deps, shard, context, timers))));
  }

  /** SHA-256 of a resume token, hex encoded: the server keeps only this. */
  public static String hashToken(String token) {
    try {
      byte[] digest = MessageDigest.getInstance("SHA-256").digest(token.getBytes(StandardCharsets.UTF_8));
      return java.util.HexFormat.of().formatHex(digest);
    } catch (java.security.NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }

  private final String sessionId;
  private final ClientProxySettings settings;
  private final SessionStore store;
  private final Delivery delivery;
  private final Clock clock;
  private final TetherMetrics metrics;
  private final NodeDepartures nodeDepartures;
  private final ActorRef<ClusterSharding.ShardCommand> shard;
  private final ActorContext<Command> context;
  private final TimerScheduler<Command> timers;

  // Runtime state of this incarnation: never persisted.
  private ActorRef<ToConnection> connection;
  /** While the connection is on another node: the subscription to that node's departure. */
  private NodeDepartures.Subscription connectionNode;
  /**
   * The last connections that held this session and lost it (taken over or detached), so that a
   * handshake one of them re-sent before it heard its welcome cannot take the session back from
   * its successor. Created on first use; a few entries are enough, as such a repeat arrives
   * within a second or two.
   */
  private java.util.ArrayDeque<ActorRef<ToConnection>> formerConnections;
  /**
   * A join is waiting for its room to confirm the member. The client's later frames (a send to
   * that room, a leave, a bye) wait in the stash until it is done, so that they are judged in the
   * order the client sent them.
   */
  private boolean joining;
  private boolean deliveringUpstream;
  /** Highest seq handed to the current connection (runtime: the socket writes it right away). */
  private long writtenUpTo;
  private boolean erasing;
  /** When the ended session stops waiting for the read model and is erased regardless (0: not ended yet). */
  private long eraseWaitEndsNanos;
  /** How long until the next look at the read model's progress, doubling (null: first look). */
  private Duration readModelPoll;
  /** The state this incarnation is counted under in the sessions gauge (attached, detached, none). */
  private String countedAs;

  private ClientProxy(
      String sessionId,
      Dependencies deps,
      ActorRef<ClusterSharding.ShardCommand> shard,
      ActorContext<Command> context,
      TimerScheduler<Command> timers) {
    super(PersistenceId.ofUniqueId(persistenceIdOf(sessionId)));
    this.sessionId = sessionId;
    this.settings = deps.settings();
    this.store = deps.store();
    this.delivery = deps.delivery();
    this.clock = deps.clock();
    this.metrics = deps.metrics();
    this.nodeDepartures = deps.nodeDepartures();
    this.shard = shard;
    this.context = context;
    this.timers = timers;
  }

  @Override
  public State emptyState() {
    return new State();
  }

  @Override
  public RetentionCriteria retentionCriteria() {
    return RetentionCriteria.snapshotEvery(settings.snapshotEvery(), 2).withDeleteEventsOnSnapshot();
  }

  /** The journal's persistence id of a session: {@code ClientProxy|<sessionId>}. */
  public static String persistenceIdOf(String sessionId) {
    return PersistenceId.of(ENTITY_TYPE_KEY.name(), sessionId).id();
  }

  /** How many refused sends a session remembers for its client (see {@code State.refusedUpstream}). */
  static final int REFUSALS_KEPT = 64;

  /** How many former connections a session remembers (see {@code formerConnections}). */
  private static final int FORMER_CONNECTIONS_KEPT = 8;

  /** Number of tag slices the session read model's projection is split into (one instance each). */
  public static final int TAG_SLICES = 4;

  /** The tag of a session's events: {@code session-<slice>}, the slice fixed by its id. */
  public static String tagFor(String sessionId) {
    return "session-" + Math.floorMod(sessionId.hashCode(), TAG_SLICES);
  }

  /** Every event is tagged, so the inspection read model (a projection) sees the whole lifecycle. */
  @Override
  public java.util.Set<String> tagsFor(Event event) {
    return java.util.Set.of(tagFor(sessionId));
  }

  @Override
  public SignalHandler<State> signalHandler() {
    return newSignalHandlerBuilder()
        .onSignal(RecoveryCompleted.instance(), this::onRecovered)
        .onSignal(
            PostStop.instance(),
            state -> {
              countAs(null);
              stopFollowingConnection();
            })
        .build();
  }

  // ---------------------------------------------------------------------------------------------
  // Command handlers, grouped by lifecycle state

  /**
   * One plain function per lifecycle state rather than pekko's handler builder: the builder's
   * cases and their lambdas are built for every session actor (some 40 cases, 3 KB of each live
   * session's heap), and it matches each command against them one by one.
   */
  @Override
  public CommandHandlerWithReply<Command, Event, State> commandHandler() {
    return this::onCommand;
  }

  private ReplyEffect<Event, State> onCommand(State state, Command cmd) {
    if (state.status == Status.DETACHED && cmd != PassivateIfIdle.INSTANCE) schedulePassivation();
    return switch (state.status) {
      case NEW -> whenNew(state, cmd);
      case ATTACHED, DETACHED -> whenLive(state, cmd);
      case ENDED -> whenEnded(state, cmd);
    };
  }

  private ReplyEffect<Event, State> whenNew(State state, Command cmd) {
    if (cmd instanceof Open c) return onOpen(state, c);
    if (cmd instanceof Resume c) return rejectAndStop(c.connection(), "unknown");
    if (cmd instanceof Enqueue c) return notDeliveredAndStop(c.replyTo(), "unknown");
    if (cmd instanceof EnqueueAll c) return replyAndStop(c.replyTo(), EnqueuedAll.allNotDelivered(c.drafts().size(), "unknown"));
    // A query for a session that does not exist started this entity: answer and go away, so
    // that probing random ids leaves nothing running (or remembered).
    if (cmd instanceof Kick c) return replyAndStop(c.replyTo(), new KickResult(false));
    if (cmd instanceof GetState c) return replyAndStop(c.replyTo(), new StateReply(null));
    if (cmd instanceof GetReceipt c) return replyAndStop(c.replyTo(), new Receipt("no-session"));
    return stopUnknown();
  }

  private ReplyEffect<Event, State> whenLive(State state, Command cmd) {
    if (joining && waitsForJoin(cmd)) return Effect().stash();
    // The hot ones first: a delivery, an acknowledgement.
    if (cmd instanceof Enqueue c) return onEnqueue(state, c);
    if (cmd instanceof Ack c) return onAck(state, c);
    if (cmd instanceof EnqueueAll c) return onEnqueueAll(state, c);
    if (cmd instanceof SendUpstream c) return onSendUpstream(state, c);
    if (cmd instanceof UpstreamDeliveryDone c) return onUpstreamDeliveryDone(state, c);
    if (cmd instanceof Open c) return onRepeatedOpen(state, c);
    if (cmd instanceof Abandon c) return onAbandon(state, c);
    if (cmd instanceof Resume c) return onResume(state, c);
    if (cmd instanceof Detach c) return onDetach(state, c);
    if (cmd instanceof Join c) return onJoin(state, c);
    if (cmd instanceof RoomMembershipDone c) return onRoomMembershipDone(state, c);
    if (cmd instanceof Leave c) return onLeave(state, c);
    if (cmd instanceof Logout c) return onLogout(state, c);
    if (cmd instanceof Kick c) return onKick(state, c);
    if (cmd instanceof GetState c) return onGetState(state, c);
    if (cmd instanceof GetReceipt c) return onGetReceipt(state, c);
    if (cmd instanceof GraceExpired c) return onGraceExpired(state, c);
    if (cmd instanceof ExpireIfDue c) return onExpireIfDue(state, c);
    if (cmd instanceof PassivateIfIdle c) return onPassivateIfIdle(state, c);
    if (cmd instanceof CheckWritten) return onCheckWritten(state);
    if (cmd instanceof DetachAfterRecovery c) return onDetachAfterRecovery(state, c);
    if (cmd instanceof ConnectionTerminated c) return onConnectionTerminated(state, c);
    if (cmd instanceof UserIndexDone c) return onUserIndexDone(state, c);
    if (cmd instanceof RetryPendingWork c) return onRetryPendingWork(state, c);
    return Effect().unhandled().thenNoReply();
  }

  private ReplyEffect<Event, State> whenEnded(State state, Command cmd) {
    if (cmd instanceof Resume c) return rejectResume(c.connection(), endedReason(state));
    if (cmd instanceof Enqueue c) return Effect().reply(c.replyTo(), new NotDelivered("ended"));
    if (cmd instanceof EnqueueAll c) return Effect().reply(c.replyTo(), EnqueuedAll.allNotDelivered(c.drafts().size(), "ended"));
    if (cmd instanceof Kick c) return Effect().reply(c.replyTo(), new KickResult(false));
    if (cmd instanceof GetState c) return onGetState(state, c);
    if (cmd instanceof GetReceipt c) return Effect().reply(c.replyTo(), new Receipt("no-session"));
    if (cmd instanceof UpstreamDeliveryDone c) return onUpstreamDeliveryDone(state, c);
    if (cmd instanceof RetryPendingWork c) return onRetryPendingWork(state, c);
    if (cmd instanceof EraseDone c) return onEraseDone(state, c);
    if (cmd instanceof RoomMembershipDone) {
      // Ended (kicked) during a join: what waited for it is answered as an ended session's.
      joining = false;
      return Effect().noReply().thenUnstashAll();
    }
    return Effect().noReply();
  }

  private ReplyEffect<Event, State> onOpen(State state, Open cmd) {
    long now = clock.millis();
    return Effect()
        .persist(
            List.of(
                new Opened(sessionId, cmd.userId(), cmd.tokenHash(), now),
                new Attached(1, false, false, now)))
        .thenRun(
            newState -> {
              holdConnection(cmd.connection());
              countStatus(newState);
              cmd.connection().tell(welcome(newState, false, newState.lastSeq(), 0, 0));
              indexUser(newState);
            })
        .thenNoReply();
  }

  private ReplyEffect<Event, State> onAbandon(State state, Abandon cmd) {
    // Generation 1 is the connection that opened the session: after any resume a client holds
    // the token. It may have detached already (its stop can overtake the Abandon).
    boolean opener = cmd.connection().equals(connection) || isFormer(cmd.connection());
    if (state.generation != 1 || !opener) return Effect().noReply();
    metrics.abandoned();
    return end("abandoned", null);
  }

  private ReplyEffect<Event, State> onResume(State state, Resume cmd) {
    // Compare hashes in constant time; a wrong token or another user never touches the session.
    boolean tokenMatches =
        MessageDigest.isEqual(
            state.tokenHash.getBytes(StandardCharsets.US_ASCII),
            cmd.tokenHash().getBytes(StandardCharsets.US_ASCII));
    if (!tokenMatches || (cmd.userId() != null && !state.userId.equals(cmd.userId()))) {
      return rejectResume(cmd.connection(), "invalid-token");
    }
    if (cmd.connection().equals(connection) || isFormer(cmd.connection())) {
      // The connection re-sent its resume (no answer came in time): the welcome is on its way,
      // or it already came and the connection has been taken over or detached since.
      return Effect().noReply();
    }
    return attach(state, cmd.connection(), cmd.lastSeq(), true);
  }

  /**
   * Attaches {@code newConnection}: persists the implicit ack of {@code lastSeq} and the new
   * generation, then tells the connection welcome and replays everything after {@code lastSeq}.
   */
  private ReplyEffect<Event, State> attach(
      State state, ActorRef<ToConnection> newConnection, long lastSeq, boolean resumed) {
    // lastSeq is what the client has fully processed: an implicit ack. A client claiming more
    // than exists is held to what exists.
    long clientLast = Math.min(lastSeq, state.lastSeq());
    long from = Math.max(clientLast, state.ackedSeq);
    long firstRetained = state.outbox.isEmpty() ? state.nextSeq : state.outbox.firstKey();
    long lostForClient = Math.max(0, firstRetained - 1 - from);
    boolean takeover = connection != null;
    ActorRef<ToConnection> previous = connection;

    int ackedCount = state.outbox.headMap(clientLast, true).size();
    List<Event> events = new ArrayList<>(2);
    if (clientLast > state.ackedSeq) events.add(new Acked(clientLast));
    events.add(new Attached(state.generation + 1, resumed, takeover, clock.millis()));
    return Effect()
        .persist(events)
        .thenRun(
            newState -> {
              timers.cancel(GraceExpired.INSTANCE);
              timers.cancel(PassivateIfIdle.INSTANCE);
              if (previous != null) {
                previous.tell(new ToConnection.Kicked("taken-over"));
                metrics.takeover();
              }
              if (clientLast > state.ackedSeq) metrics.acked(ackedCount);
              holdConnection(newConnection);
              countStatus(newState);
              List<OutboxMessage> replay = List.copyOf(newState.outbox.tailMap(from, false).values());
              connection.tell(welcome(newState, resumed, from, replay.size(), lostForClient));
              for (OutboxMessage message : replay) connection.tell(new ToConnection.Deliver(message));
              writtenUpTo = newState.lastSeq();
              if (!replay.isEmpty()) checkWrittenLater();
            })
        .thenNoReply();
  }

  private ReplyEffect<Event, State> onDetach(State state, Detach cmd) {
    // Answered at once, before Detached is persisted: from here on the session no longer needs
    // the connection's word. Should the persist fail, the session stops, and its recovery finds
    // it attached with no connection and detaches it then (DetachAfterRecovery). Answering only
    // after the persist made every closing socket wait out the journal's queue during a mass
    // disconnect, and send its Detach again meanwhile.
    if (cmd.replyTo() != null) cmd.replyTo().tell(new ToConnection.Released());
    if (cmd.generation() != state.generation || state.status != Status.ATTACHED) return Effect().noReply();
    return detach();
  }

  private ReplyEffect<Event, State> onConnectionTerminated(State state, ConnectionTerminated cmd) {
    if (state.status != Status.ATTACHED || !cmd.connection().equals(connection)) return Effect().noReply();
    return detach();
  }

  /**
   * Makes {@code newConnection} the one that holds the session, and follows it: should it be gone
   * without a Detach (its node died), the session detaches anyway and its grace period starts.
   */
  private void holdConnection(ActorRef<ToConnection> newConnection) {
    releaseConnection();
    connection = newConnection;
    Address node = newConnection.path().address();
    if (node.hasGlobalScope()) {
      // On another node: its Detach is re-sent until answered, so only the node's loss remains
      // to be heard of, from the cluster (NodeDepartures says why not pekko's remote watch).
      connectionNode = nodeDepartures.subscribe(node, () -> context.getSelf().tell(new ConnectionTerminated(newConnection)));
    } else {
      // On this node a watch costs no message between nodes, and catches a connection that failed.
      context.watchWith(newConnection, new ConnectionTerminated(newConnection));
    }
  }

  private void releaseConnection() {
    if (connection != null) {
      stopFollowingConnection();
      rememberFormer(connection);
    }
    connection = null;
  }

  private void stopFollowingConnection() {
    if (connectionNode != null) {
      nodeDepartures.cancel(connectionNode);
      connectionNode = null;
    } else if (connection != null) {
      context.unwatch(connection);
    }
  }

  private void rememberFormer(ActorRef<ToConnection> former) {
    if (formerConnections == null) formerConnections = new java.util.ArrayDeque<>(FORMER_CONNECTIONS_KEPT);
    if (formerConnections.size() == FORMER_CONNECTIONS_KEPT) formerConnections.removeFirst();
    formerConnections.addLast(former);
  }

  /**
   * A connection that already held this session and lost it: whatever handshake it sends now was
   * re-sent before it learned that (its socket is closing), and must not take the session back.
   */
  private boolean isFormer(ActorRef<ToConnection> candidate) {
    return formerConnections != null && formerConnections.contains(candidate);
  }

  private ReplyEffect<Event, State> onDetachAfterRecovery(State state, DetachAfterRecovery cmd) {
    // The node that held the connection died; no connection is attached to this incarnation.
    if (state.status != Status.ATTACHED || connection != null) return Effect().noReply();
    return detach();
  }

  private ReplyEffect<Event, State> detach() {
    long deadline = clock.millis() + settings.grace().toMillis();
    // The connection is let go before Detached is persisted: commands wait while the event is
    // persisted, and a failed persist stops the session, so nothing can use it meanwhile.
    releaseConnection();
    return Effect()
        .persist(new Detached(deadline))
        .thenRun(
            newState -> {
              countStatus(newState);
              timers.startSingleTimer(GraceExpired.INSTANCE, settings.grace());
              schedulePassivation();
            })
        .thenNoReply();
  }

  private ReplyEffect<Event, State> onGraceExpired(State state, GraceExpired cmd) {
    // The timer was armed for the remaining grace; no wall-clock check (ManualTime-friendly).
    if (state.status != Status.DETACHED) return Effect().noReply();
    return end("expired", null);
  }

  private ReplyEffect<Event, State> onExpireIfDue(State state, ExpireIfDue cmd) {
    // Woken by the sweeper: this incarnation may have just been recovered (and armed its grace
    // timer from the deadline), or it may be attached again by now.
    if (state.status != Status.DETACHED || clock.millis() < state.graceDeadline) return Effect().noReply();
    return end("expired", null);
  }

  /** (Re)starts the idle countdown of a detached session: any command it handles restarts it. */
  private void schedulePassivation() {
    timers.startSingleTimer(PassivateIfIdle.INSTANCE, settings.passivateDetachedAfter());
  }

  private void checkWrittenLater() {
    if (!timers.isTimerActive(CheckWritten.INSTANCE)) timers.startSingleTimer(CheckWritten.INSTANCE, settings.checkWrittenAfter());
  }

  private ReplyEffect<Event, State> onCheckWritten(State state) {
    if (connection != null && writtenUpTo > state.ackedSeq) connection.tell(new ToConnection.WrittenUpTo(writtenUpTo));
    return Effect().noReply();
  }

  private ReplyEffect<Event, State> onPassivateIfIdle(State state, PassivateIfIdle cmd) {
    if (state.status != Status.DETACHED) return Effect().noReply();
    if (deliveringUpstream || !state.pendingUpstream.isEmpty() || !state.userIndexed) {
      // Work in flight would answer a stopped actor (it is redone on recovery, but needlessly).
      schedulePassivation();
      return Effect().noReply();
    }
    if (shard != null) {
      metrics.passivated();
      passivate();
    }
    return Effect().noReply();
  }

  private ReplyEffect<Event, State> onEnqueue(State state, Enqueue cmd) {
    QueuePlan plan = planQueue(state, List.of(cmd.draft()));
    return persistQueued(state, plan).thenReply(cmd.replyTo(), newState -> plan.results().get(0));
  }

  private ReplyEffect<Event, State> onEnqueueAll(State state, EnqueueAll cmd) {
    QueuePlan plan = planQueue(state, cmd.drafts());
    return persistQueued(state, plan).thenReply(cmd.replyTo(), newState -> EnqueuedAll.of(plan.results()));
  }

  /** What queueing a run of drafts does: each draft's result, and the events to persist for it. */
  private record QueuePlan(List<EnqueueResult> results, List<MessageQueued> events) {}

  /**
   * Decides, draft by draft and before anything is persisted, what each becomes: refused (not a
   * member of its room), recognised as a retry (its origin already queued it, possibly earlier
   * in the same run), or a new message with the next seq and the oldest messages it evicts.
   */
  private QueuePlan planQueue(State state, List<Draft> drafts) {
    List<EnqueueResult> results = new ArrayList<>(drafts.size());
    List<MessageQueued> events = new ArrayList<>(drafts.size());
    Map<String, OriginMark> originsInRun = new HashMap<>();
    OutboxBounds bounds = new OutboxBounds(state);
    long nextSeq = state.nextSeq;
    long now = clock.millis();
    for (Draft draft : drafts) {
      if (draft.room() != null && !state.rooms.contains(draft.room())) {
        results.add(new NotDelivered("not-member"));
        continue;
      }
      if (draft.origin() != null) {
        OriginMark mark = originsInRun.getOrDefault(draft.origin(), state.origins.get(draft.origin()));
        if (mark != null && draft.originSeq() <= mark.seq()) {
          results.add(new Enqueued(mark.queuedSeq(), true));
          continue;
        }
      }
      OutboxMessage message = new OutboxMessage(nextSeq++, draft.data(), draft.from(), draft.room(), now);
      events.add(new MessageQueued(message, draft.origin(), draft.originSeq(), bounds.add(message)));
      results.add(new Enqueued(message.seq(), false));
      if (draft.origin() != null) originsInRun.put(draft.origin(), new OriginMark(draft.originSeq(), message.seq(), now));
    }
    return new QueuePlan(results, events);
  }

  /** Persists the planned messages (if any), then counts them and writes them to the socket. */
  private EffectBuilder<Event, State> persistQueued(State state, QueuePlan plan) {
    if (plan.events().isEmpty()) return Effect().none();
    long received = System.nanoTime();
    long lostBefore = state.lost;
    List<Event> events = new ArrayList<>(plan.events());
    return Effect()
        .persist(events)
        .thenRun(
            newState -> {
              metrics.enqueued(
                  plan.events().size(),
                  newState.outbox.size(),
                  newState.outboxBytes,
                  newState.lost - lostBefore,
                  System.nanoTime() - received);
              if (connection != null) {
                for (MessageQueued queued : plan.events()) connection.tell(new ToConnection.Deliver(queued.message()));
                writtenUpTo = plan.events().get(plan.events().size() - 1).message().seq();
                checkWrittenLater();
              }
            });
  }

  /**
   * The outbox's bounds as a run of messages is added: walks the outbox oldest first (then the
   * run's own earlier messages) to find the highest seq each addition must evict. A message is
   * never evicted by its own addition, so one larger than {@code max-bytes} is still queued.
   */
  private final class OutboxBounds {
    private final java.util.Iterator<OutboxMessage> queued;
    private final java.util.ArrayDeque<OutboxMessage> addedInRun = new java.util.ArrayDeque<>();
    private int count;
    private long bytes;

    OutboxBounds(State state) {
      this.queued = state.outbox.values().iterator();
      this.count = state.outbox.size();
      this.bytes = state.outboxBytes;
    }

    /** Returns the highest seq this addition evicts, 0 if it evicts nothing. */
    long add(OutboxMessage message) {
      count++;
      bytes += message.bytes();
      // 0 unless this very addition evicts: a later message of the run that fits must not repeat
      // an earlier eviction (its event would claim an eviction and take the read model's slow path).
      long evictThrough = 0;
      while (count > settings.outboxMaxMessages() || bytes > settings.outboxMaxBytes()) {
        OutboxMessage oldest = queued.hasNext() ? queued.next() : addedInRun.pollFirst();
        if (oldest == null) break;
        evictThrough = oldest.seq();
        count--;
        bytes -= oldest.bytes();
      }
      addedInRun.addLast(message);
      return evictThrough;
    }
  }

  private ReplyEffect<Event, State> onAck(State state, Ack cmd) {
    if (cmd.generation() != state.generation) return Effect().noReply();
    long seq = Math.min(cmd.seq(), state.lastSeq());
    if (seq <= state.ackedSeq) return Effect().noReply();
    int acked = state.outbox.headMap(seq, true).size();
    return Effect().persist(new Acked(seq)).thenRun(s -> metrics.acked(acked)).thenNoReply();
  }

  private ReplyEffect<Event, State> onSendUpstream(State state, SendUpstream cmd) {
    if (cmd.generation() != state.generation || connection == null) return Effect().noReply();
    ActorRef<ToConnection> replyTo = connection;
    long cseq = cmd.cseq();
    if (cseq <= state.clientSeq) {
      // A resend after a drop: answered as the first time, and delivered nothing.
      String refused = state.refusedUpstream.get(cseq);
      if (refused != null) {
        return Effect().reply(replyTo, new ToConnection.UpstreamRejected(cseq, refused, "this send was refused: " + refused));
      }
      return Effect().reply(replyTo, new ToConnection.UpstreamConfirmed(cseq));
    }
    if (cseq != state.clientSeq + 1) {
      return Effect()
          .reply(
              replyTo,
              new ToConnection.UpstreamRejected(
                  cseq, "out-of-order", "expected cseq " + (state.clientSeq + 1) + ", got " + cseq));
    }
    if (cmd.target().kind() == Target.Kind.ROOM && !state.rooms.contains(cmd.target().id())) {
      return Effect()
          .persist(new UpstreamRefused(cseq, "not-in-room"))
          .thenReply(
              replyTo,
              s ->
                  new ToConnection.UpstreamRejected(
                      cseq, "not-in-room", "join " + cmd.target().id() + " before sending to it"));
    }
    long received = System.nanoTime();
    return Effect()
        .persist(new UpstreamAccepted(cseq, cmd.target(), cmd.data(), cmd.echo(), clock.millis()))
        .thenRun(
            newState -> {
              metrics.upstreamAccepted(System.nanoTime() - received);
              deliverNextUpstream(newState);
            })
        .thenReply(replyTo, s -> new ToConnection.UpstreamConfirmed(cseq));
  }

  /** Hands the oldest accepted upstream message to its recipients, one at a time, in cseq order. */
  private void deliverNextUpstream(State state) {
    if (deliveringUpstream || state.pendingUpstream.isEmpty()) return;
    PendingUpstream next = state.pendingUpstream.firstEntry().getValue();
    String room = next.target().kind() == Target.Kind.ROOM ? next.target().id() : null;
    Draft draft = new Draft(next.data(), "user:" + state.userId, room, sessionId, next.cseq());
    deliveringUpstream = true;
    context.pipeToSelf(
        delivery.deliver(next.target(), draft, next.echo() ? null : sessionId),
        (count, failure) -> new UpstreamDeliveryDone(next.cseq(), failure == null));
  }

  private ReplyEffect<Event, State> onUpstreamDeliveryDone(State state, UpstreamDeliveryDone done) {
    deliveringUpstream = false;
    if (!done.delivered()) {
      context.getLog().warn("Upstream cseq {} not yet delivered; retrying", done.cseq());
      timers.startSingleTimer(RetryPendingWork.INSTANCE, RETRY_DELAY);
      return Effect().noReply();
    }
    return Effect()
        .persist(new UpstreamDelivered(done.cseq()))
        .thenRun(
            newState -> {
              deliverNextUpstream(newState);
              eraseIfOver(newState);
            })
        .thenNoReply();
  }

  private ReplyEffect<Event, State> onRetryPendingWork(State state, RetryPendingWork cmd) {
    deliverNextUpstream(state);
    if (state.isLive()) indexUser(state);
    eraseIfOver(state);
    return Effect().noReply();
  }

  /**
   * What must not overtake a join: the client's frames that depend on its rooms (a send, a leave,
   * another join, a bye), and the end of its connection (a detach, the connection stopping),
   * which would otherwise make a bye sent right after the join, just before the socket closed,
   * arrive from a connection that no longer holds the session. A resume does not wait: a client
   * coming back must not queue behind the joins of its old connection (which its generation then
   * makes stale).
   */
  private static boolean waitsForJoin(Command cmd) {
    return cmd instanceof SendUpstream
        || cmd instanceof Join
        || cmd instanceof Leave
        || cmd instanceof Logout
        || cmd instanceof Detach
        || cmd instanceof ConnectionTerminated;
  }

  private ReplyEffect<Event, State> onJoin(State state, Join cmd) {
    if (cmd.generation() != state.generation || connection == null) return Effect().noReply();
    if (state.rooms.contains(cmd.room())) {
      return Effect().reply(connection, new ToConnection.RoomJoined(cmd.room()));
    }
    // The room learns of the member first: a crash in between leaves an extra member, which
    // Delivery removes when the session answers "not-member"; never a member the room misses.
    context.pipeToSelf(
        delivery.addMember(Membership.roomId(cmd.room()), sessionId),
        (done, failure) -> new RoomMembershipDone(cmd.room(), failure == null));
    joining = true;
    return Effect().noReply();
  }

  /** The room answered a join; what the client sent after the join is handled next. */
  private ReplyEffect<Event, State> onRoomMembershipDone(State state, RoomMembershipDone done) {
    joining = false;
    if (connection == null) {
      // The connection went away meanwhile; the room keeps its extra member until it heals.
      return Effect().noReply().thenUnstashAll();
    }
    ActorRef<ToConnection> replyTo = connection;
    if (!done.ok()) {
      return Effect()
          .reply(replyTo, new ToConnection.RoomRejected(done.room(), "internal", "room unavailable, try again"))
          .thenUnstashAll();
    }
    if (state.rooms.contains(done.room())) {
      return Effect().reply(replyTo, new ToConnection.RoomJoined(done.room())).thenUnstashAll();
    }
    return Effect()
        .persist(new JoinedRoom(done.room()))
        .thenReply(replyTo, s -> new ToConnection.RoomJoined(done.room()))
        .thenUnstashAll();
  }

  private ReplyEffect<Event, State> onLeave(State state, Leave cmd) {
    if (cmd.generation() != state.generation || connection == null) return Effect().noReply();
    ActorRef<ToConnection> replyTo = connection;
    if (!state.rooms.contains(cmd.room())) {
      return Effect()
          .reply(replyTo, new ToConnection.RoomRejected(cmd.room(), "not-in-room", "not a member of " + cmd.room()));
    }
    return Effect()
        .persist(new LeftRoom(cmd.room()))
        .thenRun(s -> forgetMembership(Membership.roomId(cmd.room())))
        .thenReply(replyTo, s -> new ToConnection.RoomLeft(cmd.room()));
  }

  private ReplyEffect<Event, State> onLogout(State state, Logout cmd) {
    if (cmd.generation() != state.generation || connection == null) return Effect().noReply();
    return end("logout", new ToConnection.LoggedOut());
  }

  private ReplyEffect<Event, State> onKick(State state, Kick cmd) {
    return Effect()
        .persist(new Ended("kicked", clock.millis()))
        .thenRun(
            newState -> {
              metrics.kicked();
              afterEnd(newState, new ToConnection.Kicked("kicked"));
            })
        .thenReply(cmd.replyTo(), s -> new KickResult(true));
  }

  private ReplyEffect<Event, State> end(String reason, ToConnection farewell) {
    return Effect()
        .persist(new Ended(reason, clock.millis()))
        .thenRun(newState -> afterEnd(newState, farewell))
        .thenNoReply();
  }

  private void afterEnd(State state, ToConnection farewell) {
    timers.cancel(GraceExpired.INSTANCE);
    timers.cancel(PassivateIfIdle.INSTANCE);
    countStatus(state);
    if ("expired".equals(state.endReason)) metrics.expired();
    if (connection != null && farewell != null) connection.tell(farewell);
    releaseConnection();
    forgetMembership(Membership.userId(state.userId));
    for (String room : state.rooms) forgetMembership(Membership.roomId(room));
    eraseIfOver(state);
  }

  private ReplyEffect<Event, State> onGetState(State state, GetState cmd) {
    return Effect().reply(cmd.replyTo(), new StateReply(state.view()));
  }

  private ReplyEffect<Event, State> onGetReceipt(State state, GetReceipt cmd) {
    long seq = cmd.seq();
    String status;
    if (seq < 1 || seq > state.lastSeq()) status = "unknown";
    else if (seq <= state.ackedSeq) status = "acked";
    else if (!state.outbox.containsKey(seq)) status = "lost";
    else if (seq <= writtenUpTo) status = "written";
    else status = "queued";
    return Effect().reply(cmd.replyTo(), new Receipt(status));
  }

  private ReplyEffect<Event, State> onUserIndexDone(State state, UserIndexDone done) {
    if (state.userIndexed) return Effect().noReply();
    if (!done.ok()) {
      timers.startSingleTimer(RetryPendingWork.INSTANCE, RETRY_DELAY);
      return Effect().noReply();
    }
    return Effect().persist(new UserIndexed()).thenNoReply();
  }

  /**
   * An Open for a session that exists: the connection re-sent its handshake because no answer
   * came (a shard was moving). From the connection that holds the session, the welcome is
   * already on its way; otherwise (this incarnation restarted after persisting the first Open)
   * the same token attaches it again. Anything else is not this connection's session.
   */
  private ReplyEffect<Event, State> onRepeatedOpen(State state, Open cmd) {
    if (cmd.connection().equals(connection) || isFormer(cmd.connection())) return Effect().noReply();
    boolean sameClient =
        MessageDigest.isEqual(
                state.tokenHash.getBytes(StandardCharsets.US_ASCII), cmd.tokenHash().getBytes(StandardCharsets.US_ASCII))
            && state.userId.equals(cmd.userId());
    if (!sameClient) {
      context.getLog().warn("Ignoring Open for existing session {} from another client", sessionId);
      return Effect().noReply();
    }
    return attach(state, cmd.connection(), 0, false);
  }

  private ReplyEffect<Event, State> rejectResume(ActorRef<ToConnection> replyTo, String reason) {
    return Effect().reply(replyTo, new ToConnection.ResumeRejected(sessionId, reason));
  }

  /** An entity with no session was started by a stray message: answer, then go away. */
  private ReplyEffect<Event, State> rejectAndStop(ActorRef<ToConnection> replyTo, String reason) {
    passivate();
    return Effect().reply(replyTo, new ToConnection.ResumeRejected(sessionId, reason));
  }

  private <R> ReplyEffect<Event, State> replyAndStop(ActorRef<R> replyTo, R reply) {
    passivate();
    return Effect().reply(replyTo, reply);
  }

  private ReplyEffect<Event, State> stopUnknown() {
    passivate();
    return Effect().noReply();
  }

  private ReplyEffect<Event, State> notDeliveredAndStop(ActorRef<EnqueueResult> replyTo, String reason) {
    passivate();
    return Effect().reply(replyTo, new NotDelivered(reason));
  }

  private static String endedReason(State state) {
    return "expired".equals(state.endReason) ? "expired" : "ended";
  }

  // ---------------------------------------------------------------------------------------------
  // Side work: user index, rooms, erasure, passivation

  private void indexUser(State state) {
    if (state.userIndexed) return;
    context.pipeToSelf(
        delivery.addMember(Membership.userId(state.userId), sessionId),
        (done, failure) -> new UserIndexDone(failure == null));
  }

  private void forgetMembership(String groupId) {
    delivery.removeMember(groupId, sessionId);
  }

  /**
   * Once an ended session has handed over its accepted upstream messages, erase it: as soon as
   * the inspection read model has seen its last events (their receipts outlive the session), or
   * after {@code read-model-wait-before-erase} regardless.
   */
  private void eraseIfOver(State state) {
    if (state.status != Status.ENDED || !state.pendingUpstream.isEmpty() || erasing) return;
    erasing = true;
    if (eraseWaitEndsNanos == 0) eraseWaitEndsNanos = System.nanoTime() + settings.readModelWaitBeforeErase().toNanos();
    boolean stillWaiting = System.nanoTime() - eraseWaitEndsNanos < 0;
    context.pipeToSelf(
        store.erase(sessionId, state.userId, endedReason(state), stillWaiting),
        (erased, failure) -> {
          if (failure != null) context.getLog().warn("Erasing session {} failed", sessionId, failure);
          return new EraseDone(failure == null ? erased : null);
        });
  }

  private ReplyEffect<Event, State> onEraseDone(State state, EraseDone done) {
    erasing = false;
    if (done.erased() == SessionStore.Erased.READ_MODEL_BEHIND) {
      // The projection polls every 200 ms, so the first look again comes soon; when many sessions
      // end at once (a mass expiry) the projection lags, and the looks space out.
      readModelPoll = readModelPoll == null ? READ_MODEL_POLL : min(readModelPoll.multipliedBy(2), READ_MODEL_POLL_MAX);
      // ...but not past the end of the wait, when the erase goes ahead regardless.
      Duration left = Duration.ofNanos(Math.max(0, eraseWaitEndsNanos - System.nanoTime()));
      timers.startSingleTimer(RetryPendingWork.INSTANCE, min(readModelPoll, left));
      return Effect().noReply();
    }
    if (done.erased() == null) {
      timers.startSingleTimer(RetryPendingWork.INSTANCE, RETRY_DELAY);
      return Effect().noReply();
    }
    if (shard == null) return Effect().stop().thenNoReply();
    passivate();
    // Commands stashed behind a join the end cut short are answered (as an ended session's)
    // before the shard stops this entity.
    return Effect().noReply().thenUnstashAll();
  }

  private void passivate() {
    if (shard != null) shard.tell(new ClusterSharding.Passivate<>(context.getSelf()));
  }

  /** Keeps the per-node sessions gauge right: each incarnation counts itself once. */
  private void countAs(String state) {
    if (java.util.Objects.equals(countedAs, state)) return;
    metrics.sessionStateChanged(countedAs, state);
    countedAs = state;
  }

  private void countStatus(State state) {
    countAs(
        switch (state.status) {
          case ATTACHED -> "attached";
          case DETACHED -> "detached";
          default -> null;
        });
  }

  private void onRecovered(State state) {
    // Derived, so recomputed: a snapshot taken by a version that counted characters stays exact.
    state.outboxBytes = state.outbox.values().stream().mapToLong(OutboxMessage::bytes).sum();
    countStatus(state);
    switch (state.status) {
      case DETACHED -> {
        long remaining = Math.max(0, state.graceDeadline - clock.millis());
        timers.startSingleTimer(GraceExpired.INSTANCE, Duration.ofMillis(remaining));
        schedulePassivation();
      }
      case ATTACHED -> context.getSelf().tell(DetachAfterRecovery.INSTANCE);
      case ENDED -> eraseIfOver(state);
      case NEW -> {}
    }
    if (state.isLive()) indexUser(state);
    deliverNextUpstream(state);
  }

  private ToConnection.Welcome welcome(State state, boolean resumed, long from, int replay, long lost) {
    return new ToConnection.Welcome(
        context.getSelf(),
        sessionId,
        state.userId,
        state.generation,
        resumed,
        replay,
        state.lastSeq(),
        state.clientSeq,
        lost,
        settings.grace().toMillis(),
        List.copyOf(state.rooms),
        Map.copyOf(state.refusedUpstream));
  }

  // ---------------------------------------------------------------------------------------------
  // Event handler: the only place state changes

  @Override
  public EventHandler<State, Event> eventHandler() {
    return ClientProxy::applyEvent; // a plain function, for the reason given at commandHandler
  }

  private static State applyEvent(State state, Event event) {
    if (event instanceof MessageQueued e) return applyMessageQueued(state, e);
    if (event instanceof Acked e) return applyAcked(state, e);
    if (event instanceof Opened e) return applyOpened(state, e);
    if (event instanceof Attached e) return applyAttached(state, e);
    if (event instanceof Detached e) return applyDetached(state, e);
    if (event instanceof UserIndexed) {
      state.userIndexed = true;
      return state;
    }
    if (event instanceof UpstreamAccepted e) {
      state.clientSeq = e.cseq();
      state.pendingUpstream.put(e.cseq(), new PendingUpstream(e.cseq(), e.target(), e.data(), e.echo(), e.ts()));
      return state;
    }
    if (event instanceof UpstreamRefused e) {
      state.clientSeq = e.cseq();
      state.refusedUpstream.put(e.cseq(), e.code());
      if (state.refusedUpstream.size() > REFUSALS_KEPT) state.refusedUpstream.pollFirstEntry();
      return state;
    }
    if (event instanceof UpstreamDelivered e) {
      state.pendingUpstream.remove(e.cseq());
      return state;
    }
    if (event instanceof JoinedRoom e) {
      state.rooms.add(e.room());
      return state;
    }
    if (event instanceof LeftRoom e) {
      state.rooms.remove(e.room());
      return state;
    }
    if (event instanceof Ended e) return applyEnded(state, e);
    throw new IllegalStateException("unknown event " + event.getClass().getName());
  }

  private static State applyOpened(State state, Opened e) {
    state.sessionId = e.sessionId();
    state.userId = e.userId();
    state.tokenHash = e.tokenHash();
    state.createdAt = e.ts();
    return state;
  }

  private static State applyAttached(State state, Attached e) {
    state.status = Status.ATTACHED;
    state.generation = e.generation();
    state.graceDeadline = 0;
    if (e.resumed()) state.resumes++;
    if (e.takeover()) state.takeovers++;
    return state;
  }

  private static State applyDetached(State state, Detached e) {
    state.status = Status.DETACHED;
    state.graceDeadline = e.graceDeadline();
    return state;
  }

  private static State applyMessageQueued(State state, MessageQueued e) {
    OutboxMessage message = e.message();
    while (!state.outbox.isEmpty() && state.outbox.firstKey() <= e.evictThrough()) {
      state.outboxBytes -= state.outbox.pollFirstEntry().getValue().bytes();
      state.lost++;
    }
    state.outbox.put(message.seq(), message);
    state.outboxBytes += message.bytes();
    state.nextSeq = message.seq() + 1;
    if (e.origin() != null) rememberOrigin(state, e.origin(), new OriginMark(e.originSeq(), message.seq(), message.ts()));
    return state;
  }

  private static void rememberOrigin(State state, String origin, OriginMark mark) {
    state.origins.put(origin, mark);
    if (state.origins.size() <= MAX_REMEMBERED_ORIGINS) return;
    String oldest = null;
    long oldestTs = Long.MAX_VALUE;
    for (Map.Entry<String, OriginMark> entry : state.origins.entrySet()) {
      if (entry.getValue().ts() < oldestTs) {
        oldestTs = entry.getValue().ts();
        oldest = entry.getKey();
      }
    }
    state.origins.remove(oldest);
  }

  private static State applyAcked(State state, Acked e) {
    while (!state.outbox.isEmpty() && state.outbox.firstKey() <= e.seq()) {
      state.outboxBytes -= state.outbox.pollFirstEntry().getValue().bytes();
    }
    state.ackedSeq = Math.max(state.ackedSeq, e.seq());
    return state;
  }

  private static State applyEnded(State state, Ended e) {
    state.status = Status.ENDED;
    state.endReason = e.reason();
    state.graceDeadline = 0;
    // Nothing of the conversation is kept once the session is over.
    state.outbox.clear();
    state.outboxBytes = 0;
    return state;
  }
}
