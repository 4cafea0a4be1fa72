package dev.tether.gateway;

import dev.tether.session.ClientProxy;
import dev.tether.telemetry.TetherMetrics;
import dev.tether.session.SessionStore;
import dev.tether.session.ToConnection;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.Base64;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Supplier;
import dev.tether.telemetry.TelemetryInterceptor;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.MailboxSelector;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.PostStop;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.javadsl.StashBuffer;
import org.apache.pekko.actor.typed.javadsl.TimerScheduler;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.stream.QueueOfferResult;

/**
 * One WebSocket connection: the bridge between a socket and the session ({@link ClientProxy}) it
 * holds, which may live on another node.
 *
 * <p>Frames arrive decoded from the socket's stream, one at a time (the stream waits for an ack,
 * so a flooding client is slowed by TCP, not buffered here). Frames go out through a bounded
 * queue; a client that does not read fast enough overflows it and is closed with 4009, its
 * session keeping the messages for its resume.
 *
 * <p>Phases: awaiting the handshake → awaiting its turn ({@link HandshakeAdmission}, only on a
 * busy node) → handshaking (waiting for the session) → attached → closing.
 */
public final class Connection {

  interface Command {}

  /** A frame from the socket; the socket reads the next one only after this one's {@link StreamAck}. */
  record FrameReceived(ClientFrame frame, ActorRef<StreamAck> ackTo) implements Command {}

  enum StreamAck {
    INSTANCE
  }

  /** The socket is gone (closed by either side, or failed). */
  record StreamEnded() implements Command {}

  record FromSession(ToConnection message) implements Command {}

  private record TombstoneChecked(String reason) implements Command {}

  private enum HandshakeTimedOut implements Command {
    INSTANCE
  }

  private enum SessionUnresponsive implements Command {
    INSTANCE
  }

  /** {@link HandshakeAdmission}: this connection's turn to have its handshake worked on. */
  enum Admitted implements Command {
    INSTANCE
  }

  /** The handshake waited for its turn longer than the admission queue timeout. */
  private enum AdmissionTimedOut implements Command {
    INSTANCE
  }

  /** Re-send the handshake to the session: the first may have gone to a node that just died. */
  private enum RetryHandshake implements Command {
    INSTANCE
  }

  private static final Duration HANDSHAKE_RETRY = Duration.ofSeconds(1);

  private enum HeartbeatCheck implements Command {
    INSTANCE
  }

  private enum CloseStalled implements Command {
    INSTANCE
  }

  /** This node is stopping (graceful shutdown): close with 1012 so the client resumes elsewhere. */
  enum ServerStopping implements Command {
    INSTANCE
  }

  /** The session actor this connection holds stopped (its node died, or it moved). */
  private enum SessionStopped implements Command {
    INSTANCE
  }

  /** The session has not answered this connection's Detach yet: send it again. */
  private enum RetryDetach implements Command {
    INSTANCE
  }

  /**
   * When a Detach is sent again, and for how long, before the connection stops waiting for the
   * session's Released. Between nodes a Detach can be dropped (a full send queue); the session
   * does not watch a connection on another node, so this is what makes its grace period start.
   * A drop pekko reports (DroppedDetaches) is made up for after {@link #DROPPED_DETACH_RETRY}; a
   * Detach merely unanswered is sent again only every {@code detach-resend-after} (30 s), since
   * during a mass disconnect sessions answer late because they are busy, and a short interval
   * would multiply the very traffic that delays them (the first try, with 2 s doubling, sent
   * 37,000 extra Detach messages for 30,000 closes). After {@link #DETACH_GIVE_UP} (at least
   * four tries) the connection stops waiting and logs it: the session then detaches when its
   * client comes back, or when it is recovered elsewhere.
   */
  private static final Duration DROPPED_DETACH_RETRY = Duration.ofSeconds(1);

  private static final Duration DETACH_GIVE_UP = Duration.ofMinutes(2);

  /** What every connection shares. */
  public record Dependencies(
      GatewaySettings settings,
      Authenticator authenticator,
      ClusterSharding sharding,
      SessionStore store,
      TetherMetrics metrics,
      FailedResumeLimiter failedResumes,
      LiveConnections live,
      HandshakeAdmission admission) {}

  /**
   * How a socket that completed its upgrade gets its connection actor: a system actor (not a
   * child of the socket's stream, which does not outlive it on purpose), with the telemetry
   * mailbox.
   */
  public static WebSocketStage.ConnectionStarter starter(ActorSystem<?> system, Dependencies deps) {
    AtomicLong ids = new AtomicLong();
    return (outbox, closeSignal, remote, upgradeWaited) ->
        system.systemActorOf(
            TelemetryInterceptor.instrument(
                "Connection", Command.class, create(deps, outbox, closeSignal, remote, upgradeWaited)),
            "ws-" + ids.incrementAndGet(),
            MailboxSelector.fromConfig("tether.telemetry.mailboxes.connection"));
  }

  /** @param upgradeWaited how long the socket's upgrade waited for its turn ({@link HandshakeAdmission}) */
  static Behavior<Command> create(
      Dependencies deps, SocketOutbox out, CloseSignal closeSignal, String remote, Duration upgradeWaited) {
    // Logs about a connection carry its session id once it has one (logback: %X{sessionId}).
    AtomicReference<Map<String, String>> mdc = new AtomicReference<>(Map.of());
    return Behaviors.withMdc(
        Command.class,
        message -> mdc.get(),
        Behaviors.setup(
            context ->
                Behaviors.withTimers(
                    timers ->
                        Behaviors.withStash(
                            deps.settings().maxPendingFrames(),
                            stash -> new Connection(deps, out, closeSignal, remote, upgradeWaited, mdc, context, timers, stash).start()))));
  }

  private static final SecureRandom RANDOM = new SecureRandom();
  private static final String ANONYMOUS = "anonymous";

  private final GatewaySettings settings;
  private final Authenticator authenticator;
  private final ClusterSharding sharding;
  private final SessionStore store;
  private final TetherMetrics metrics;
  private final FailedResumeLimiter failedResumes;
  private final LiveConnections live;
  private final HandshakeAdmission admission;
  private final HandshakeAdmission.Waiter admissionTurn; // this connection's place in the admission's line
  private final SocketOutbox out;
  private final CloseSignal closeSignal;
  private final String remote;
  private final Duration upgradeWaited;
  private final ActorContext<Command> context;
  private final TimerScheduler<Command> timers;
  private final StashBuffer<Command> stash;
  private final ActorRef<ToConnection> sessionAdapter;
  private final AtomicReference<Map<String, String>> mdc;

  private long lastHeardNanos = System.nanoTime();
  private int badFrames;

  // The session this connection is creating or holds.
  private String sessionId;
  private String resumeToken;
  private long generation;
  private ActorRef<ClientProxy.Command> session;
  private String newSessionUser; // the user of the new session to create when a resume fails
  private String newSessionReason = "new";
  private long handshakeStartedNanos;
  private ClientProxy.Command handshakeCommand; // Open or Resume, re-sent until the session answers
  private boolean checkingTombstone;
  private long lastWrittenSeq;
  private boolean sessionReleased; // detached, ended, or taken over: nothing more to tell it
  private boolean sessionStopped; // the incarnation that welcomed us stopped (moved, passivated, node died)
  private boolean detachUnanswered; // Detach sent, the session's Released not received yet
  private int detachAttempts;
  private boolean detachDropReported; // pekko reported the last Detach dropped: the retry is why
  private long detachFirstSentNanos;

  private Connection(
      Dependencies deps,
      SocketOutbox out,
      CloseSignal closeSignal,
      String remote,
      Duration upgradeWaited,
      AtomicReference<Map<String, String>> mdc,
      ActorContext<Command> context,
      TimerScheduler<Command> timers,
      StashBuffer<Command> stash) {
    this.settings = deps.settings();
    this.authenticator = deps.authenticator();
    this.sharding = deps.sharding();
    this.store = deps.store();
    this.metrics = deps.metrics();
    this.failedResumes = deps.failedResumes();
    this.live = deps.live();
    this.admission = deps.admission();
    this.out = out;
    this.closeSignal = closeSignal;
    this.remote = remote;
    this.upgradeWaited = upgradeWaited;
    this.mdc = mdc;
    this.context = context;
    ActorRef<Command> self = context.getSelf();
    this.admissionTurn = () -> self.tell(Admitted.INSTANCE);
    this.timers = timers;
    this.stash = stash;
    this.sessionAdapter = context.messageAdapter(ToConnection.class, FromSession::new);
  }

  private Behavior<Command> start() {
    metrics.connectionOpened();
    if (live.add(context.getSelf())) {
      // This node began its graceful stop while the socket was upgrading: closeAll has already
      // told the open connections, so this one tells itself (1012: resume on another node).
      context.getSelf().tell(ServerStopping.INSTANCE);
    }
    timers.startSingleTimer(HandshakeTimedOut.INSTANCE, settings.handshakeTimeout());
    return awaitingHandshake();
  }

  // ---------------------------------------------------------------------------------------------
  // Phase 1: nothing but hello or resume, within the handshake timeout

  private Behavior<Command> awaitingHandshake() {
    return Behaviors.receive(Command.class)
        .onMessage(FrameReceived.class, this::onFrameBeforeHandshake)
        .onMessageEquals(HandshakeTimedOut.INSTANCE, this::onHandshakeTimedOut)
        .onMessage(StreamEnded.class, m -> stopped())
        .onMessageEquals(ServerStopping.INSTANCE, () -> close(1012, "server stopping, resume to continue"))
        .onSignal(PostStop.class, s -> onPostStop())
        .build();
  }

  private Behavior<Command> onHandshakeTimedOut() {
    metrics.handshakeTimedOut();
    return close(4001, "handshake timeout");
  }

  private Behavior<Command> onSessionUnresponsive() {
    metrics.handshakeSessionUnavailable();
    return close(1011, "session unavailable");
  }

  /**
   * Leaving the handshake of a new session before its welcome was written (whatever closes the
   * socket: the client, 1011, a bad frame, the node stopping): the client never learned the
   * session's id or resume token, so the session (created when the Open arrives, which may still
   * be on its way) can never be resumed. It is told to end at once rather than wait out a grace
   * period nobody can use. Does nothing once welcomed ({@code handshakeCommand} is cleared then)
   * and for a resume: that client holds its token.
   */
  private void abandonUnwelcomedSession() {
    if (handshakeCommand instanceof ClientProxy.Open) {
      handshakeCommand = null;
      sharding.entityRefFor(ClientProxy.ENTITY_TYPE_KEY, sessionId).tell(new ClientProxy.Abandon(sessionAdapter));
    }
  }

  private Behavior<Command> onFrameBeforeHandshake(FrameReceived received) {
    received.ackTo().tell(StreamAck.INSTANCE);
    lastHeardNanos = System.nanoTime();
    metrics.frameIn();
    ClientFrame frame = received.frame();
    if (frame instanceof ClientFrame.Hello hello) return onHello(hello);
    if (frame instanceof ClientFrame.Resume resume) return onResume(resume);
    if (frame instanceof ClientFrame.Ping) {
      write(FrameCodec.PONG);
      return closingOrSame(); // a client that reads nothing can overflow even its pongs
    }
    if (frame instanceof ClientFrame.TooLarge tooLarge) return frameTooLarge(tooLarge);
    if (frame instanceof ClientFrame.Bad bad) return badFrame(bad.code(), bad.message());
    return badFrame("bad-frame", "the first frame must be hello or resume");
  }

  private Behavior<Command> onHello(ClientFrame.Hello hello) {
    Optional<String> user = authenticator.authenticate(hello.user(), hello.token());
    if (user.isEmpty()) return authFailed();
    newSessionUser = user.get();
    newSessionReason = "new";
    return beginHandshake(this::openNewSession);
  }

  private Behavior<Command> onResume(ClientFrame.Resume resume) {
    if (!failedResumes.allowed(remote)) {
      // Token guessing from this address: refused before any session is asked.
      metrics.badFrame("rate-limited");
      write(FrameCodec.error("rate-limited", "too many failed resumes from this address; retry later"));
      return closingOrSame();
    }
    String claimedUser = null;
    if (authenticator.hasCredentials(resume.user(), resume.token())) {
      Optional<String> user = authenticator.authenticate(resume.user(), resume.token());
      if (user.isEmpty()) return authFailed();
      claimedUser = user.get();
    }
    // The user of the new session, should this resume not continue the old one.
    newSessionUser = claimedUser != null ? claimedUser : authenticator.devMode() ? ANONYMOUS : null;
    sessionId = resume.sessionId();
    resumeToken = resume.resumeToken();
    mdc.set(Map.of("sessionId", sessionId));
    ClientProxy.Command command =
        new ClientProxy.Resume(claimedUser, ClientProxy.hashToken(resume.resumeToken()), resume.lastSeq(), sessionAdapter);
    return beginHandshake(
        () -> {
          sendHandshake(command);
          return handshaking();
        });
  }

  /**
   * The client has sent its handshake: the server's part starts when {@link HandshakeAdmission}
   * gives it a turn (at once, unless the node is busy with many handshakes).
   */
  private Behavior<Command> beginHandshake(Supplier<Behavior<Command>> askSession) {
    timers.cancel(HandshakeTimedOut.INSTANCE);
    handshakeStartedNanos = System.nanoTime(); // the latency clients see includes the wait
    if (admission.enter(admissionTurn, HandshakeAdmission.Step.SESSION)) return admitted(askSession);
    // One budget for both waits: what the upgrade spent waiting for its turn is gone already.
    Duration budgetLeft = settings.handshakeQueueTimeout().minus(upgradeWaited);
    timers.startSingleTimer(AdmissionTimedOut.INSTANCE, budgetLeft.isNegative() ? Duration.ZERO : budgetLeft);
    return awaitingAdmission(askSession);
  }

  private Behavior<Command> admitted(Supplier<Behavior<Command>> askSession) {
    // The session answers within the ask timeout unless the cluster is in trouble.
    timers.startSingleTimer(SessionUnresponsive.INSTANCE, settings.askTimeout().multipliedBy(2));
    return askSession.get();
  }

  // ---------------------------------------------------------------------------------------------
  // Phase 1b: the handshake waits for its turn; client frames wait in the bounded stash

  private Behavior<Command> awaitingAdmission(Supplier<Behavior<Command>> askSession) {
    return Behaviors.receive(Command.class)
        .onMessageEquals(
            Admitted.INSTANCE,
            () -> {
              timers.cancel(AdmissionTimedOut.INSTANCE);
              return admitted(askSession);
            })
        .onMessageEquals(AdmissionTimedOut.INSTANCE, this::onAdmissionTimedOut)
        .onMessage(FrameReceived.class, this::onFrameDuringHandshake)
        .onMessage(StreamEnded.class, m -> stopped())
        .onMessageEquals(ServerStopping.INSTANCE, () -> close(1012, "server stopping, resume to continue"))
        .onSignal(PostStop.class, s -> onPostStop())
        .build();
  }

  private Behavior<Command> onAdmissionTimedOut() {
    admission.refusedBusy();
    return close(1013, "server busy, try again later");
  }

  private Behavior<Command> openNewSession() {
    sessionId = "s_" + randomToken(15);
    resumeToken = "r_" + randomToken(32);
    mdc.set(Map.of("sessionId", sessionId));
    sendHandshake(new ClientProxy.Open(newSessionUser, ClientProxy.hashToken(resumeToken), sessionAdapter));
    return handshaking();
  }

  /**
   * Sends the handshake to the session and re-sends it every second until it answers: while a
   * dead node's shards are being moved, a message can be lost on the way. The session answers a
   * repeat from the connection it already holds with nothing (its welcome is on its way).
   */
  private void sendHandshake(ClientProxy.Command command) {
    handshakeCommand = command;
    sharding.entityRefFor(ClientProxy.ENTITY_TYPE_KEY, sessionId).tell(command);
    timers.startTimerWithFixedDelay(RetryHandshake.INSTANCE, HANDSHAKE_RETRY, HANDSHAKE_RETRY);
  }

  // ---------------------------------------------------------------------------------------------
  // Phase 2: waiting for the session to answer; client frames wait in a bounded stash

  private Behavior<Command> handshaking() {
    return Behaviors.receive(Command.class)
        .onMessage(FromSession.class, this::onSessionDuringHandshake)
        .onMessage(TombstoneChecked.class, this::onTombstoneChecked)
        .onMessage(FrameReceived.class, this::onFrameDuringHandshake)
        .onMessageEquals(SessionUnresponsive.INSTANCE, this::onSessionUnresponsive)
        .onMessageEquals(RetryHandshake.INSTANCE, this::onRetryHandshake)
        .onMessage(StreamEnded.class, m -> stopped())
        .onMessageEquals(ServerStopping.INSTANCE, () -> close(1012, "server stopping, resume to continue"))
        .onSignal(PostStop.class, s -> onPostStop())
        .build();
  }

  private Behavior<Command> onRetryHandshake() {
    if (handshakeCommand != null && !checkingTombstone) {
      sharding.entityRefFor(ClientProxy.ENTITY_TYPE_KEY, sessionId).tell(handshakeCommand);
    }
    return Behaviors.same();
  }

  private Behavior<Command> onFrameDuringHandshake(FrameReceived received) {
    received.ackTo().tell(StreamAck.INSTANCE);
    lastHeardNanos = System.nanoTime();
    metrics.frameIn();
    ClientFrame frame = received.frame();
    if (frame instanceof ClientFrame.Ping) {
      write(FrameCodec.PONG);
      return closingOrSame(); // a client that reads nothing can overflow even its pongs
    }
    if (frame instanceof ClientFrame.Hello || frame instanceof ClientFrame.Resume) {
      return badFrame("bad-frame", "a handshake is already in progress");
    }
    if (stash.isFull()) return protocolError("too many frames before the welcome");
    // Frames a client pipelines after its handshake (acks, sends) are handled once attached.
    stash.stash(new FrameReceived(frame, context.getSystem().ignoreRef()));
    return Behaviors.same();
  }

  private Behavior<Command> onSessionDuringHandshake(FromSession fromSession) {
    ToConnection message = fromSession.message();
    // Answers to an earlier attempt (a re-sent handshake, or the session given up on) are ignored.
    if (message instanceof ToConnection.Welcome welcome && welcome.sessionId().equals(sessionId)) {
      return onWelcome(welcome);
    }
    if (message instanceof ToConnection.ResumeRejected rejected
        && rejected.sessionId().equals(sessionId)
        && !checkingTombstone) {
      return onResumeRejected(rejected);
    }
    return Behaviors.same();
  }

  private Behavior<Command> onResumeRejected(ToConnection.ResumeRejected rejected) {
    timers.cancel(RetryHandshake.INSTANCE);
    handshakeCommand = null;
    if (!"unknown".equals(rejected.reason())) return startOver(rejected.reason());
    checkingTombstone = true;
    // No such session now; a tombstone tells whether it existed and how it ended.
    String forgotten = sessionId;
    context.pipeToSelf(
        store.tombstoneReason(forgotten),
        (reason, failure) ->
            new TombstoneChecked(failure == null && reason.isPresent() ? reason.get() : "unknown"));
    return Behaviors.same();
  }

  private Behavior<Command> onTombstoneChecked(TombstoneChecked checked) {
    checkingTombstone = false;
    return startOver(checked.reason());
  }

  /** The resume did not continue the session: a new one is created, and the welcome says why. */
  private Behavior<Command> startOver(String reason) {
    // Only a wrong token (or user) for a session that exists is what guessing looks like.
    // Expired, ended and unknown sessions are what honest clients get after an outage, many of
    // them behind one NAT address; counting those would lock all of them out together.
    if ("invalid-token".equals(reason)) failedResumes.failed(remote);
    if (newSessionUser == null) {
      // hmac mode and the resume carried no token: nobody to create a session for.
      return authFailed();
    }
    newSessionReason = reason;
    return openNewSession();
  }

  private Behavior<Command> onWelcome(ToConnection.Welcome welcome) {
    admission.leave(admissionTurn);
    timers.cancel(SessionUnresponsive.INSTANCE);
    timers.cancel(RetryHandshake.INSTANCE);
    handshakeCommand = null;
    generation = welcome.generation();
    session = welcome.session();
    context.watchWith(session, SessionStopped.INSTANCE);
    lastWrittenSeq = welcome.replayAfter();
    String reason = welcome.resumed() ? "resumed" : newSessionReason;
    write(
        FrameCodec.welcome(
            new FrameCodec.WelcomeFrame(
                welcome.sessionId(),
                resumeToken,
                welcome.resumed(),
                reason,
                welcome.replay(),
                welcome.lastSeq(),
                welcome.clientSeq(),
                welcome.lost(),
                settings.heartbeatInterval().toMillis(),
                settings.heartbeatTimeout().toMillis(),
                welcome.graceMillis(),
                welcome.rooms(),
                welcome.userId(),
                welcome.refusedUpstream())));
    metrics.welcomed(reason, welcome.resumed(), System.nanoTime() - handshakeStartedNanos, welcome.replay(), welcome.lost());
    // The welcome itself can overflow the queue of a client that stopped reading (its pongs
    // filled it): the socket is then closing (4009) and the session was told so.
    if (closing != null) return closing;
    timers.startSingleTimer(HeartbeatCheck.INSTANCE, settings.heartbeatTimeout());
    return stash.unstashAll(attached());
  }

  // ---------------------------------------------------------------------------------------------
  // Phase 3: attached to a session

  private Behavior<Command> attached() {
    return Behaviors.receive(Command.class)
        .onMessage(FrameReceived.class, this::onFrameAttached)
        .onMessage(FromSession.class, this::onSessionAttached)
        .onMessageEquals(HeartbeatCheck.INSTANCE, this::onHeartbeatCheck)
        .onMessage(StreamEnded.class, m -> stopped())
        .onMessageEquals(SessionStopped.INSTANCE, this::onSessionStopped)
        .onMessageEquals(ServerStopping.INSTANCE, () -> close(1012, "server stopping, resume to continue"))
        .onSignal(PostStop.class, s -> onPostStop())
        .build();
  }

  private Behavior<Command> onFrameAttached(FrameReceived received) {
    received.ackTo().tell(StreamAck.INSTANCE);
    lastHeardNanos = System.nanoTime();
    metrics.frameIn();
    ClientFrame frame = received.frame();
    if (frame instanceof ClientFrame.Ack ack) {
      session.tell(new ClientProxy.Ack(generation, ack.seq()));
    } else if (frame instanceof ClientFrame.Send send) {
      session.tell(new ClientProxy.SendUpstream(generation, send.cseq(), send.to(), send.data(), send.echo()));
    } else if (frame instanceof ClientFrame.Join join) {
      session.tell(new ClientProxy.Join(generation, join.room()));
    } else if (frame instanceof ClientFrame.Leave leave) {
      session.tell(new ClientProxy.Leave(generation, leave.room()));
    } else if (frame instanceof ClientFrame.Ping) {
      write(FrameCodec.PONG);
    } else if (frame instanceof ClientFrame.Bye) {
      session.tell(new ClientProxy.Logout(generation));
    } else if (frame instanceof ClientFrame.Hello || frame instanceof ClientFrame.Resume) {
      return badFrame("bad-frame", "this connection already holds a session");
    } else if (frame instanceof ClientFrame.TooLarge tooLarge) {
      return frameTooLarge(tooLarge);
    } else if (frame instanceof ClientFrame.Bad bad) {
      return badFrame(bad.code(), bad.message());
    }
    return closingOrSame();
  }

  /** The seq after the last one written never arrived: the client resumes, and gets it from the outbox. */
  private Behavior<Command> missedMessage() {
    metrics.deliveryGap();
    context.getLog().warn("session {}: seq {} did not arrive (after {}); closing 1012 so the client resumes", sessionId, lastWrittenSeq + 1, lastWrittenSeq);
    return close(1012, "missed a message, resume to continue");
  }

  private Behavior<Command> onSessionAttached(FromSession fromSession) {
    ToConnection message = fromSession.message();
    if (message instanceof ToConnection.Deliver deliver) {
      // Replay and live messages come from one sender in order, each seq one more than the last
      // (the welcome says where the replay starts), so a seq further ahead means one was lost on
      // the way: between nodes pekko drops messages when a link's send queue is full. Writing it
      // would show the client a gap, and its cumulative ack would then forget the missing one.
      // Instead the client resumes, and the session replays from its outbox what it missed.
      // (The last messages of a burst have no later one to reveal their loss: the session's
      // WrittenUpTo does, check-written-after later.)
      long seq = deliver.message().seq();
      if (seq > lastWrittenSeq + 1) return missedMessage();
      // A seq already written is a duplicate; this guard keeps it from the client.
      if (seq == lastWrittenSeq + 1) {
        lastWrittenSeq = seq;
        if (write(FrameCodec.msg(deliver.message()))) metrics.messageWritten();
      }
    } else if (message instanceof ToConnection.WrittenUpTo written) {
      // Sent after the deliveries it counts, on the same link: short of it, the rest was dropped.
      if (written.seq() > lastWrittenSeq) return missedMessage();
    } else if (message instanceof ToConnection.UpstreamConfirmed confirmed) {
      write(FrameCodec.sent(confirmed.cseq()));
    } else if (message instanceof ToConnection.UpstreamRejected rejected) {
      write(FrameCodec.sendError(rejected.cseq(), rejected.code(), rejected.message()));
    } else if (message instanceof ToConnection.RoomJoined joined) {
      write(FrameCodec.joined(joined.room()));
    } else if (message instanceof ToConnection.RoomLeft left) {
      write(FrameCodec.left(left.room()));
    } else if (message instanceof ToConnection.RoomRejected rejected) {
      write(FrameCodec.roomError(rejected.room(), rejected.code(), rejected.message()));
    } else if (message instanceof ToConnection.Kicked kicked) {
      sessionReleased = true;
      write(FrameCodec.kicked(kicked.reason()));
      boolean takenOver = "taken-over".equals(kicked.reason());
      return close(takenOver ? 4002 : 4004, takenOver ? "taken over" : "kicked");
    } else if (message instanceof ToConnection.LoggedOut) {
      sessionReleased = true;
      write(FrameCodec.BYE);
      metrics.loggedOut();
      return close(1000, "bye");
    }
    return closingOrSame();
  }

  /**
   * The heartbeat deadline: one timer, due when the client will have been silent for the
   * timeout, pushed back by as much as the client spoke since. A client that pings every interval
   * costs one timer per timeout rather than a periodic check (15,000 idle sockets checked ten
   * times per timeout were 3,300 timer messages a second), and a silent one is closed on time.
   */
  private Behavior<Command> onHeartbeatCheck() {
    long now = System.nanoTime();
    // A frame or a protocol-level ping (answered inside the socket's stream) counts as heard.
    long silentNanos = Math.min(now - lastHeardNanos, now - closeSignal.lastHeardNanos());
    long timeoutNanos = settings.heartbeatTimeout().toNanos();
    if (silentNanos >= timeoutNanos) {
      metrics.heartbeatTimeout();
      return close(4008, "heartbeat timeout");
    }
    timers.startSingleTimer(HeartbeatCheck.INSTANCE, Duration.ofNanos(timeoutNanos - silentNanos));
    return Behaviors.same();
  }

  // ---------------------------------------------------------------------------------------------
  // Errors and closing

  private Behavior<Command> badFrame(String code, String message) {
    badFrames++;
    metrics.badFrame(code);
    write(FrameCodec.error(code, message));
    if (badFrames > settings.maxBadFrames()) return protocolError("too many bad frames");
    return closingOrSame();
  }

  private Behavior<Command> frameTooLarge(ClientFrame.TooLarge tooLarge) {
    metrics.badFrame("frame-too-large");
    write(
        FrameCodec.error(
            "frame-too-large",
            "frame of " + tooLarge.bytes() + "+ bytes exceeds the limit of " + settings.maxFrameBytes()));
    return close(4003, "frame too large");
  }

  private Behavior<Command> protocolError(String reason) {
    return close(4003, reason);
  }

  private Behavior<Command> authFailed() {
    metrics.badFrame("auth-failed");
    write(FrameCodec.error("auth-failed", "missing or invalid credentials"));
    return close(4005, "authentication failed");
  }

  /** Writes a frame; false when the client is too slow to take it (then the socket is closing). */
  private boolean write(String json) {
    if (closing != null) return false; // the outgoing queue is completed or failed
    boolean overBytes = closeSignal.queued(json.length()) > settings.outgoingBufferBytes();
    QueueOfferResult result = overBytes ? QueueOfferResult.dropped() : out.offer(json);
    if (result == QueueOfferResult.enqueued()) {
      metrics.frameOut();
      return true;
    }
    if (result == QueueOfferResult.dropped()) {
      metrics.slowConsumer();
      closeSignal.set(4009, "slow consumer");
      releaseSession();
      // abort() drops what is buffered, so the close does not wait behind frames the client
      // is not reading. The session still holds them all.
      out.abort();
      closing = closing();
    }
    return false;
  }

  private Behavior<Command> closing;

  private Behavior<Command> closingOrSame() {
    return closing != null ? closing : Behaviors.same();
  }

  private Behavior<Command> close(int code, String reason) {
    if (closing != null) return closing;
    closeSignal.set(code, reason);
    abandonUnwelcomedSession();
    if (code != 1000 && code != 4002 && code != 4004) releaseSession();
    out.complete();
    closing = closing();
    return closing;
  }

  /**
   * Tells the session its connection is gone, so its grace period starts now, not later; sent
   * again until the session answers {@link ToConnection.Released}: shortly when pekko reports it
   * dropped, otherwise every {@code detach-resend-after}.
   */
  private void releaseSession() {
    if (session != null && !sessionReleased) {
      sessionReleased = true;
      detachUnanswered = true;
      detachFirstSentNanos = System.nanoTime();
      sendDetach(null);
    }
  }

  /** @param resendReason why it is sent again, null the first time */
  private void sendDetach(TetherMetrics.DetachResendReason resendReason) {
    if (resendReason != null) metrics.detachResent(resendReason);
    detachAttempts++;
    detachDropReported = false;
    ClientProxy.Detach detach = new ClientProxy.Detach(generation, sessionAdapter);
    if (sessionStopped) {
      // The incarnation we knew is gone: a Detach sent to it would be lost, and the session
      // would stay attached in the journal with no grace deadline (for instance when a
      // resume slipped in just before it passivated). Through sharding it reaches the next
      // incarnation, which detaches this generation and starts the grace period.
      sharding.entityRefFor(ClientProxy.ENTITY_TYPE_KEY, sessionId).tell(detach);
    } else {
      session.tell(detach);
    }
    timers.startSingleTimer(RetryDetach.INSTANCE, settings.detachResendAfter());
  }

  /** @return true when the connection is done waiting (answered, or given up) */
  private boolean onRetryDetach() {
    if (!detachUnanswered) return true;
    if (System.nanoTime() - detachFirstSentNanos >= DETACH_GIVE_UP.toNanos() && detachAttempts >= 4) {
      detachUnanswered = false;
      context.getLog()
          .warn(
              "session {}: no answer to {} Detach messages in {} s; stopping without it (its grace starts when it is recovered)",
              sessionId,
              detachAttempts,
              Duration.ofNanos(System.nanoTime() - detachFirstSentNanos).toSeconds());
      return true;
    }
    sendDetach(detachDropReported ? TetherMetrics.DetachResendReason.DROPPED : TetherMetrics.DetachResendReason.UNANSWERED);
    return false;
  }

  /**
   * What can reach a connection once its socket is closing: the session's answer to its Detach,
   * or word that pekko dropped the Detach on its way (a full send queue), which is then sent
   * again shortly. Anything else can no longer reach the client.
   */
  private void onDetachNews(ToConnection message) {
    if (message instanceof ToConnection.Released) {
      detachUnanswered = false;
      timers.cancel(RetryDetach.INSTANCE);
    } else if (message instanceof ToConnection.DetachDropped && detachUnanswered) {
      detachDropReported = true;
      timers.startSingleTimer(RetryDetach.INSTANCE, DROPPED_DETACH_RETRY);
    }
  }

  /** The session's incarnation stopped under us: the client resumes to find it where it is now. */
  private Behavior<Command> onSessionStopped() {
    sessionStopped = true;
    return close(1012, "session moved, resume to continue");
  }

  /** The same, after the socket began closing: a Detach not answered yet goes to the next incarnation. */
  private Behavior<Command> onSessionStoppedWhileClosing() {
    sessionStopped = true;
    if (detachUnanswered) sendDetach(TetherMetrics.DetachResendReason.SESSION_MOVED);
    return Behaviors.same();
  }

  // Phase 4: the close frame is on its way; wait for the stream to end (at most a few seconds).
  private Behavior<Command> closing() {
    admission.leave(admissionTurn); // however the socket came to close (also a slow consumer's overflow)
    timers.cancel(AdmissionTimedOut.INSTANCE);
    timers.cancel(HeartbeatCheck.INSTANCE);
    timers.cancel(RetryHandshake.INSTANCE); // a closing socket must not attach a session again
    timers.startSingleTimer(CloseStalled.INSTANCE, Duration.ofSeconds(10));
    return Behaviors.receive(Command.class)
        .onMessage(FrameReceived.class, r -> {
          r.ackTo().tell(StreamAck.INSTANCE);
          return Behaviors.same();
        })
        .onMessage(FromSession.class, m -> {
          onDetachNews(m.message());
          return Behaviors.same();
        })
        .onMessage(StreamEnded.class, m -> stopped())
        .onMessageEquals(CloseStalled.INSTANCE, this::stopped)
        .onMessageEquals(SessionStopped.INSTANCE, this::onSessionStoppedWhileClosing)
        .onMessageEquals(RetryDetach.INSTANCE, () -> {
          onRetryDetach();
          return Behaviors.same();
        })
        .onMessageEquals(Admitted.INSTANCE, Behaviors::same) // a turn granted as it closed: given back already
        .onSignal(PostStop.class, s -> onPostStop())
        .build();
  }

  /**
   * The socket is gone. The session is told Detach, which starts its grace period; the actor
   * stays until the session answers (at most {@link #DETACH_GIVE_UP}), since a session on another
   * node has no other way to learn that this connection is gone while its node lives.
   */
  private Behavior<Command> stopped() {
    admission.leave(admissionTurn);
    abandonUnwelcomedSession();
    releaseSession();
    metrics.connectionClosed();
    if (!detachUnanswered) return Behaviors.stopped();
    timers.cancel(CloseStalled.INSTANCE);
    return Behaviors.receive(Command.class)
        .onMessage(
            FromSession.class,
            m -> {
              onDetachNews(m.message());
              return detachUnanswered ? Behaviors.same() : Behaviors.stopped();
            })
        .onMessageEquals(RetryDetach.INSTANCE, () -> onRetryDetach() ? Behaviors.stopped() : Behaviors.same())
        .onMessageEquals(SessionStopped.INSTANCE, this::onSessionStoppedWhileClosing)
        .onMessage(FrameReceived.class, r -> {
          r.ackTo().tell(StreamAck.INSTANCE);
          return Behaviors.same();
        })
        .onSignal(PostStop.class, s -> onPostStop())
        .build();
  }

  /** However the actor stops (also by a failure), it is no longer an open connection. */
  private Behavior<Command> onPostStop() {
    live.remove(context.getSelf());
    admission.leave(admissionTurn);
    // A failure skipped stopped(): the session still hears of it, once (nothing is left to retry).
    if (session != null && !sessionReleased) {
      sessionReleased = true;
      session.tell(new ClientProxy.Detach(generation, null));
    }
    return Behaviors.same();
  }

  private static String randomToken(int bytes) {
    byte[] random = new byte[bytes];
    RANDOM.nextBytes(random);
    return Base64.getUrlEncoder().withoutPadding().encodeToString(random);
  }
}
