package dev.tether.session;

import com.fasterxml.jackson.annotation.JsonCreator;
import com.fasterxml.jackson.annotation.JsonProperty;
import dev.tether.CborSerializable;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import org.apache.pekko.Done;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import dev.tether.telemetry.TelemetryInterceptor;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.MailboxSelector;
import org.apache.pekko.cluster.sharding.typed.ClusterShardingSettings;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.sharding.typed.javadsl.Entity;
import org.apache.pekko.cluster.sharding.typed.javadsl.EntityTypeKey;
import org.apache.pekko.persistence.typed.PersistenceId;
import org.apache.pekko.persistence.typed.javadsl.CommandHandlerWithReply;
import org.apache.pekko.persistence.typed.javadsl.EventHandler;
import org.apache.pekko.persistence.typed.javadsl.EventSourcedBehaviorWithEnforcedReplies;
import org.apache.pekko.persistence.typed.javadsl.ReplyEffect;
import org.apache.pekko.persistence.typed.javadsl.RetentionCriteria;

/**
 * A durable set of session ids: the members of a room ({@code room:<name>}) or the live sessions
 * of a user ({@code user:<id>}). Messages to a room or a user are fanned out from this set, so
 * they reach detached sessions too (which keep queuing during their grace period).
 *
 * <p>The set may briefly hold a session that has ended (a crash between the two writes); the
 * session then answers "not delivered" and {@link Delivery} removes it, so the set heals itself.
 */
public final class Membership
    extends EventSourcedBehaviorWithEnforcedReplies<Membership.Command, Membership.Event, Membership.State> {

  public static final EntityTypeKey<Command> ENTITY_TYPE_KEY =
      EntityTypeKey.create(Command.class, "Membership");

  public static String roomId(String room) {
    return "room:" + room;
  }

  public static String userId(String user) {
    return "user:" + user;
  }

  public interface Command extends CborSerializable {}

  public record Add(String sessionId, ActorRef<Done> replyTo) implements Command {}

  public record Remove(String sessionId, ActorRef<Done> replyTo) implements Command {}

  public record GetMembers(ActorRef<Members> replyTo) implements Command {}

  public record Members(List<String> sessionIds) implements CborSerializable {}

  public interface Event extends CborSerializable {}

  public record MemberAdded(String sessionId) implements Event {}

  public record MemberRemoved(String sessionId) implements Event {}

  public static final class State implements CborSerializable {
    final TreeSet<String> members;

    public State() {
      this(new TreeSet<>());
    }

    @JsonCreator
    State(@JsonProperty("members") Set<String> members) {
      this.members = new TreeSet<>(members);
    }

    public Set<String> getMembers() {
      return members;
    }
  }

  /**
   * @param passivateAfter how long a member list that handles nothing stays in memory
   *     ({@code tether.session.passivate-membership-after}): a user's index is touched only when
   *     one of its sessions opens or ends, so without this it would sit beside every idle session
   */
  public static void init(ActorSystem<?> system, Duration passivateAfter) {
    ClusterSharding.get(system)
        .init(
            Entity.of(
                    ENTITY_TYPE_KEY,
                    ctx -> TelemetryInterceptor.instrument("Membership", Command.class, create(ctx.getEntityId())))
                .withEntityProps(MailboxSelector.fromConfig("tether.telemetry.mailboxes.membership"))
                .withSettings(idlePassivation(ClusterShardingSettings.create(system), passivateAfter)));
  }

  private static ClusterShardingSettings idlePassivation(ClusterShardingSettings settings, Duration after) {
    return settings.withPassivationStrategy(
        settings.passivationStrategySettings().withIdleEntityPassivation(after));
  }

  public static Behavior<Command> create(String groupId) {
    return new Membership(PersistenceId.of(ENTITY_TYPE_KEY.name(), groupId));
  }

  private Membership(PersistenceId persistenceId) {
    super(persistenceId);
  }

  @Override
  public State emptyState() {
    return new State();
  }

  @Override
  public CommandHandlerWithReply<Command, Event, State> commandHandler() {
    return newCommandHandlerWithReplyBuilder()
        .forAnyState()
        .onCommand(Add.class, this::onAdd)
        .onCommand(Remove.class, this::onRemove)
        .onCommand(GetMembers.class, this::onGetMembers)
        .build();
  }

  private ReplyEffect<Event, State> onAdd(State state, Add cmd) {
    if (state.members.contains(cmd.sessionId())) return Effect().reply(cmd.replyTo(), Done.getInstance());
    return Effect().persist(new MemberAdded(cmd.sessionId())).thenReply(cmd.replyTo(), s -> Done.getInstance());
  }

  private ReplyEffect<Event, State> onRemove(State state, Remove cmd) {
    if (!state.members.contains(cmd.sessionId())) return Effect().reply(cmd.replyTo(), Done.getInstance());
    return Effect()
        .persist(new MemberRemoved(cmd.sessionId()))
        .thenReply(cmd.replyTo(), s -> Done.getInstance());
  }

  private ReplyEffect<Event, State> onGetMembers(State state, GetMembers cmd) {
    return Effect().reply(cmd.replyTo(), new Members(List.copyOf(state.members)));
  }

  @Override
  public EventHandler<State, Event> eventHandler() {
    return newEventHandlerBuilder()
        .forAnyState()
        .onEvent(
            MemberAdded.class,
            (state, e) -> {
              state.members.add(e.sessionId());
              return state;
            })
        .onEvent(
            MemberRemoved.class,
            (state, e) -> {
              state.members.remove(e.sessionId());
              return state;
            })
        .build();
  }

  @Override
  public RetentionCriteria retentionCriteria() {
    return RetentionCriteria.snapshotEvery(100, 2).withDeleteEventsOnSnapshot();
  }
}
