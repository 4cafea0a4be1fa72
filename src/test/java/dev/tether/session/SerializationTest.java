package dev.tether.session;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tether.CborSerializable;
import java.lang.reflect.Modifier;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.pekko.Done;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.SerializationTestKit;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.serialization.SerializationExtension;
import org.apache.pekko.serialization.jackson.JacksonCborSerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every command, event, reply and state of the session and membership entities survives a round
 * trip through Pekko serialization (the production bindings: Jackson CBOR), unchanged.
 */
class SerializationTest {
  private static ActorTestKit testKit;
  private static SerializationTestKit serialization;

  @BeforeAll
  static void start() {
    testKit = ActorTestKit.create("SerializationTest", SessionTestSystems.config(10));
    serialization = new SerializationTestKit(testKit.system());
  }

  @AfterAll
  static void stop() {
    testKit.shutdownTestKit();
  }

  static Stream<Object> messages() {
    ActorRef<ToConnection> connection = testKit.<ToConnection>createTestProbe().getRef();
    ActorRef<ClientProxy.EnqueueResult> enqueueReply = testKit.<ClientProxy.EnqueueResult>createTestProbe().getRef();
    ActorRef<ClientProxy.EnqueuedAll> enqueueAllReply = testKit.<ClientProxy.EnqueuedAll>createTestProbe().getRef();
    ActorRef<ClientProxy.KickResult> kickReply = testKit.<ClientProxy.KickResult>createTestProbe().getRef();
    ActorRef<ClientProxy.StateReply> stateReply = testKit.<ClientProxy.StateReply>createTestProbe().getRef();
    ActorRef<ClientProxy.Receipt> receiptReply = testKit.<ClientProxy.Receipt>createTestProbe().getRef();
    ActorRef<ClientProxy.Command> session = testKit.<ClientProxy.Command>createTestProbe().getRef();
    ActorRef<Done> done = testKit.<Done>createTestProbe().getRef();
    ActorRef<Membership.Members> members = testKit.<Membership.Members>createTestProbe().getRef();

    Target room = new Target(Target.Kind.ROOM, "lobby");
    Target user = new Target(Target.Kind.USER, "bob");
    Target someSession = new Target(Target.Kind.SESSION, "s_abc");
    OutboxMessage roomMessage = new OutboxMessage(42, "{\"any\":\"json\"}", "user:bob", "lobby", 1763765000000L);
    OutboxMessage backendMessage = new OutboxMessage(7, "[1,2,3]", "backend", null, 1763765000001L);
    Draft upstreamDraft = new Draft("{\"text\":\"hi\"}", "user:bob", "lobby", "s_bob", 18);
    Draft backendDraft = Draft.fromBackend("\"plain\"", null);
    Draft idempotentDraft = Draft.fromBackend("{}", "lobby", "key-1");
    ClientProxy.SessionView detached =
        new ClientProxy.SessionView(
            "s_abc", "alice", "detached", 44, 41, 3, 250, 17, List.of("lobby", "news"), 1763765120000L, 2, 1, 0,
            3, 1763764000000L);
    ClientProxy.SessionView attached =
        new ClientProxy.SessionView(
            "s_abc", "alice", "attached", 0, 0, 0, 0, 0, List.of(), null, 0, 0, 0, 1, 1763764000000L);

    return Stream.of(
        // value types
        room,
        user,
        someSession,
        roomMessage,
        backendMessage,
        upstreamDraft,
        backendDraft,
        idempotentDraft,
        // ClientProxy commands
        new ClientProxy.Open("alice", ClientProxy.hashToken("r_x"), connection),
        new ClientProxy.Resume("alice", ClientProxy.hashToken("r_x"), 41, connection),
        new ClientProxy.Resume(null, ClientProxy.hashToken("r_x"), 0, connection),
        new ClientProxy.Detach(3, connection),
        new ClientProxy.Detach(3, null),
        new ClientProxy.Enqueue(upstreamDraft, enqueueReply),
        new ClientProxy.Enqueue(backendDraft, enqueueReply),
        new ClientProxy.EnqueueAll(List.of(backendDraft, idempotentDraft), enqueueAllReply),
        new ClientProxy.Ack(3, 42),
        new ClientProxy.SendUpstream(3, 18, room, "{\"text\":\"hi\"}", false),
        new ClientProxy.Join(3, "lobby"),
        new ClientProxy.Leave(3, "lobby"),
        new ClientProxy.Logout(3),
        new ClientProxy.Kick(kickReply),
        new ClientProxy.GetState(stateReply),
        new ClientProxy.GetReceipt(42, receiptReply),
        new ClientProxy.ExpireIfDue(),
        new ClientProxy.Abandon(connection),
        // ClientProxy replies
        new ClientProxy.Enqueued(42, false),
        new ClientProxy.Enqueued(0, true),
        new ClientProxy.NotDelivered("not-member"),
        new ClientProxy.EnqueuedAll(
            List.of(
                new ClientProxy.EnqueuedAll.Outcome(42, false, null),
                new ClientProxy.EnqueuedAll.Outcome(40, true, null),
                new ClientProxy.EnqueuedAll.Outcome(0, false, "ended"))),
        new ClientProxy.KickResult(true),
        new ClientProxy.StateReply(detached),
        new ClientProxy.StateReply(attached),
        new ClientProxy.StateReply(null),
        new ClientProxy.Receipt("written"),
        detached,
        // ClientProxy events
        new ClientProxy.Opened("s_abc", "alice", ClientProxy.hashToken("r_x"), 1763764000000L),
        new ClientProxy.Attached(2, true, true, 1763764000000L),
        new ClientProxy.Detached(1763765120000L),
        new ClientProxy.UserIndexed(),
        new ClientProxy.MessageQueued(roomMessage, "s_bob", 18, 40),
        new ClientProxy.MessageQueued(backendMessage, null, 0, 0),
        new ClientProxy.Acked(41),
        new ClientProxy.UpstreamAccepted(18, user, "{\"text\":\"hi\"}", true, 1763765000000L),
        new ClientProxy.UpstreamRefused(19, "not-in-room"),
        new ClientProxy.UpstreamDelivered(18),
        new ClientProxy.JoinedRoom("lobby"),
        new ClientProxy.LeftRoom("lobby"),
        new ClientProxy.Ended("expired", 1763765120000L),
        // ClientProxy state parts
        new ClientProxy.PendingUpstream(18, someSession, "{}", true, 1763765000000L),
        new ClientProxy.OriginMark(18, 44, 1763765000000L),
        // Membership
        new Membership.Add("s_abc", done),
        new Membership.Remove("s_abc", done),
        new Membership.GetMembers(members),
        new Membership.Members(List.of("s_abc", "s_def")),
        new Membership.Members(List.of()),
        new Membership.MemberAdded("s_abc"),
        new Membership.MemberRemoved("s_abc"),
        // ToConnection
        new ToConnection.Welcome(session, "s_abc", "alice", 2, true, 3, 44, 17, 1, 120000, List.of("lobby"), java.util.Map.of()),
        new ToConnection.Welcome(session, "s_abc", "alice", 1, false, 0, 0, 0, 0, 120000, List.of(), java.util.Map.of()),
        new ToConnection.Welcome(session, "s_abc", "alice", 2, true, 0, 9, 7, 0, 120000, List.of(), java.util.Map.of(5L, "not-in-room")),
        new ToConnection.ResumeRejected("s_abc", "invalid-token"),
        new ToConnection.Deliver(roomMessage),
        new ToConnection.Kicked("taken-over"),
        new ToConnection.UpstreamConfirmed(18),
        new ToConnection.UpstreamRejected(20, "out-of-order", "expected cseq 19, got 20"),
        new ToConnection.RoomJoined("lobby"),
        new ToConnection.RoomLeft("lobby"),
        new ToConnection.RoomRejected("lobby", "not-in-room", "not a member of lobby"),
        new ToConnection.WrittenUpTo(42),
        new ToConnection.LoggedOut(),
        new ToConnection.Released(),
        new ToConnection.DetachDropped());
  }

  @ParameterizedTest
  @MethodSource("messages")
  void roundTripsUnchanged(Object message) {
    assertInstanceOf(
        JacksonCborSerializer.class,
        SerializationExtension.get(testKit.system().classicSystem()).findSerializerFor(message),
        "bound to jackson-cbor");

    Object copy = serialization.verifySerialization(message, true);

    assertNotSame(message, copy);
    assertEquals(message, copy);
  }

  @Test
  void sessionStateRoundTripsWithEveryField() {
    ClientProxy.State state = new ClientProxy.State();
    state.status = ClientProxy.Status.DETACHED;
    state.sessionId = "s_abc";
    state.userId = "alice";
    state.tokenHash = ClientProxy.hashToken("r_x");
    state.createdAt = 1763764000000L;
    state.outbox = new TreeMap<>();
    state.outbox.put(41L, new OutboxMessage(41, "{\"n\":41}", "backend", null, 1763765000000L));
    state.outbox.put(42L, new OutboxMessage(42, "{\"n\":42}", "user:bob", "lobby", 1763765000001L));
    state.outboxBytes = state.outbox.values().stream().mapToLong(OutboxMessage::bytes).sum();
    state.nextSeq = 43;
    state.ackedSeq = 40;
    state.clientSeq = 17;
    state.rooms = new TreeSet<>(Set.of("lobby", "news"));
    state.generation = 3;
    state.graceDeadline = 1763765120000L;
    state.resumes = 2;
    state.takeovers = 1;
    state.lost = 5;
    state.userIndexed = true;
    state.endReason = "expired";
    state.pendingUpstream = new TreeMap<>();
    state.pendingUpstream.put(
        18L, new ClientProxy.PendingUpstream(18, new Target(Target.Kind.ROOM, "lobby"), "{}", false, 1763765000000L));
    state.origins = new HashMap<>();
    state.origins.put("s_bob", new ClientProxy.OriginMark(9, 41, 1763765000000L));
    state.origins.put("s_carol", new ClientProxy.OriginMark(3, 42, 1763765000002L));
    state.refusedUpstream = new TreeMap<>(java.util.Map.of(12L, "not-in-room", 15L, "not-in-room"));

    ClientProxy.State copy = serialization.verifySerialization(state, false);

    assertNotSame(state, copy);
    assertEquals(state.status(), copy.status());
    assertEquals(state.sessionId, copy.sessionId);
    assertEquals(state.userId(), copy.userId());
    assertEquals(state.tokenHash(), copy.tokenHash());
    assertEquals(state.createdAt, copy.createdAt);
    assertEquals(state.outbox(), copy.outbox());
    assertEquals(List.of(41L, 42L), new ArrayList<>(copy.outbox().keySet()), "outbox in seq order");
    assertEquals(state.outboxBytes(), copy.outboxBytes());
    assertEquals(state.lastSeq(), copy.lastSeq());
    assertEquals(state.ackedSeq(), copy.ackedSeq());
    assertEquals(state.clientSeq(), copy.clientSeq());
    assertEquals(state.rooms(), copy.rooms());
    assertEquals(state.generation(), copy.generation());
    assertEquals(state.graceDeadline(), copy.graceDeadline());
    assertEquals(state.resumes(), copy.resumes());
    assertEquals(state.takeovers(), copy.takeovers());
    assertEquals(state.lost(), copy.lost());
    assertEquals(state.userIndexed(), copy.userIndexed());
    assertEquals(state.endReason(), copy.endReason());
    assertEquals(state.pendingUpstream(), copy.pendingUpstream());
    assertEquals(state.origins, copy.origins);
    assertEquals(state.refusedUpstream, copy.refusedUpstream);
    assertEquals(state.view(), copy.view());
  }

  /**
   * A snapshot written before a field of the state existed loads with that field's default: here
   * the refused sends, added after sessions had snapshots in production journals.
   */
  @Test
  void aSnapshotWrittenBeforeTheRefusedSendsExistedLoadsWithNone() throws Exception {
    ClientProxy.State state = new ClientProxy.State();
    state.status = ClientProxy.Status.DETACHED;
    state.sessionId = "s_old";
    state.clientSeq = 3;
    JacksonCborSerializer serializer =
        (JacksonCborSerializer) SerializationExtension.get(testKit.system().classicSystem()).findSerializerFor(state);
    com.fasterxml.jackson.databind.ObjectMapper cbor =
        new com.fasterxml.jackson.databind.ObjectMapper(new com.fasterxml.jackson.dataformat.cbor.CBORFactory());
    com.fasterxml.jackson.databind.node.ObjectNode written =
        (com.fasterxml.jackson.databind.node.ObjectNode) cbor.readTree(serializer.toBinary(state));
    assertTrue(written.has("refusedUpstream"), written.toString());
    written.remove("refusedUpstream"); // as an older version wrote it

    ClientProxy.State loaded =
        (ClientProxy.State) serializer.fromBinary(cbor.writeValueAsBytes(written), serializer.manifest(state));

    assertEquals(new TreeMap<>(), loaded.refusedUpstream);
    assertEquals(3, loaded.clientSeq());
    assertEquals("s_old", loaded.sessionId);
  }

  @Test
  void emptySessionStateRoundTrips() {
    ClientProxy.State copy = serialization.verifySerialization(new ClientProxy.State(), false);

    assertEquals(ClientProxy.Status.NEW, copy.status());
    assertEquals(0, copy.lastSeq());
    assertTrue(copy.outbox().isEmpty());
    assertTrue(copy.rooms().isEmpty());
    assertTrue(copy.pendingUpstream().isEmpty());
    assertTrue(copy.origins.isEmpty());
  }

  @Test
  void membershipStateRoundTrips() {
    Membership.State state = new Membership.State(Set.of("s_b", "s_a", "s_c"));

    Membership.State copy = serialization.verifySerialization(state, false);

    assertEquals(new TreeSet<>(Set.of("s_a", "s_b", "s_c")), copy.getMembers());
    assertEquals(
        List.of(),
        serialization.verifySerialization(new Membership.State(), false).getMembers().stream().toList());
  }

  /** A new public message type must be added to {@link #messages()}, or this fails. */
  @Test
  void everyPublicMessageTypeIsCovered() {
    Set<Class<?>> covered = messages().map(Object::getClass).collect(Collectors.toSet());
    covered.add(ClientProxy.State.class);
    covered.add(Membership.State.class);

    List<Class<?>> declared = new ArrayList<>(List.of(Draft.class, OutboxMessage.class, Target.class));
    for (Class<?> owner : List.of(ClientProxy.class, Membership.class, ToConnection.class)) {
      declared.addAll(List.of(owner.getDeclaredClasses()));
    }
    List<String> missing =
        declared.stream()
            .filter(c -> CborSerializable.class.isAssignableFrom(c))
            .filter(c -> !c.isInterface() && !c.isEnum())
            .filter(c -> Modifier.isPublic(c.getModifiers()) || c.getDeclaringClass() == ToConnection.class)
            .filter(c -> !covered.contains(c))
            .map(Class::getName)
            .toList();
    assertEquals(List.of(), missing);
  }
}
