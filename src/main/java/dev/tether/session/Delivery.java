package dev.tether.session;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import dev.tether.Asks;
import org.apache.pekko.Done;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;

/**
 * Routes a downstream message to the sessions a target names, wherever in the cluster they live:
 * one session, every session of a user, or every member of a room. Each session persists the
 * message in its outbox before it answers, so a completed stage means "durably queued". Answers
 * come back as {@link Asks#direct} futures: what callers chain on them runs in place.
 */
public final class Delivery {
  private final ActorSystem<?> system;
  private final ClusterSharding sharding;
  private final Duration timeout;

  public Delivery(ActorSystem<?> system, Duration timeout) {
    this.system = system;
    this.sharding = ClusterSharding.get(system);
    this.timeout = timeout;
  }

  /** Queues the message for one session. */
  public CompletionStage<ClientProxy.EnqueueResult> toSession(String sessionId, Draft draft) {
    return Asks.direct(
        sharding
            .entityRefFor(ClientProxy.ENTITY_TYPE_KEY, sessionId)
            .ask(replyTo -> new ClientProxy.Enqueue(draft, replyTo), timeout));
  }

  /** Queues several messages for one session, in this order, with one persist and one answer. */
  public CompletionStage<ClientProxy.EnqueuedAll> toSessionAll(String sessionId, List<Draft> drafts) {
    return Asks.direct(
        sharding
            .entityRefFor(ClientProxy.ENTITY_TYPE_KEY, sessionId)
            .ask(replyTo -> new ClientProxy.EnqueueAll(drafts, replyTo), timeout));
  }

  /**
   * Queues the message for every member of a group ({@link Membership}); completes with how many
   * sessions queued it. Members that turn out to be gone are removed from the group.
   */
  public CompletionStage<Integer> toGroup(String groupId, Draft draft, String excludeSessionId) {
    return Asks.direct(
            sharding
                .entityRefFor(Membership.ENTITY_TYPE_KEY, groupId)
                .<Membership.Members>ask(Membership.GetMembers::new, timeout))
        .thenCompose(
            members -> {
              List<CompletableFuture<Integer>> each = new ArrayList<>();
              for (String sessionId : members.sessionIds()) {
                if (sessionId.equals(excludeSessionId)) continue;
                each.add(
                    toSession(sessionId, draft)
                        .thenApply(result -> countOrForget(groupId, sessionId, result))
                        .toCompletableFuture());
              }
              return CompletableFuture.allOf(each.toArray(CompletableFuture[]::new))
                  .thenApply(done -> each.stream().mapToInt(CompletableFuture::join).sum());
            });
  }

  /** Delivers to a parsed target: a session, a user's sessions, or a room's members. */
  public CompletionStage<Integer> deliver(Target target, Draft draft, String excludeSessionId) {
    return switch (target.kind()) {
      case SESSION -> toSession(target.id(), draft).thenApply(r -> r instanceof ClientProxy.Enqueued ? 1 : 0);
      case USER -> toGroup(Membership.userId(target.id()), draft, excludeSessionId);
      case ROOM -> toGroup(Membership.roomId(target.id()), draft, excludeSessionId);
    };
  }

  /** Adds a session to a group (a room's members, a user's sessions); idempotent. */
  public CompletionStage<Done> addMember(String groupId, String sessionId) {
    return Asks.direct(
        sharding
            .entityRefFor(Membership.ENTITY_TYPE_KEY, groupId)
            .ask(replyTo -> new Membership.Add(sessionId, replyTo), timeout));
  }

  /** Removes a session from a group, without waiting; idempotent. */
  public void removeMember(String groupId, String sessionId) {
    sharding
        .entityRefFor(Membership.ENTITY_TYPE_KEY, groupId)
        .tell(new Membership.Remove(sessionId, system.ignoreRef()));
  }

  private int countOrForget(String groupId, String sessionId, ClientProxy.EnqueueResult result) {
    if (result instanceof ClientProxy.Enqueued) return 1;
    // The session ended or never existed: the group's entry is stale. ("not-member" is not
    // reason enough: a join in flight is in the room's set before the session records it.)
    if (result instanceof ClientProxy.NotDelivered notDelivered && !"not-member".equals(notDelivered.reason())) {
      removeMember(groupId, sessionId);
    }
    return 0;
  }
}
