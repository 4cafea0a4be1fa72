package dev.tether.telemetry;

import java.time.Duration;
import java.util.List;
import org.apache.pekko.actor.typed.ActorSystem;
import dev.tether.Asks;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.apache.pekko.cluster.sharding.ShardRegion;
import org.apache.pekko.cluster.sharding.typed.GetShardRegionState;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.sharding.typed.javadsl.EntityTypeKey;

/** Refreshes the shards/entities-per-node gauges from the local shard regions every few seconds. */
public final class ShardGauges {
  private ShardGauges() {}

  public static void start(ActorSystem<?> system, TetherMetrics metrics, List<EntityTypeKey<?>> types, Duration every) {
    system
        .scheduler()
        .scheduleAtFixedRate(
            every,
            every,
            () -> {
              for (EntityTypeKey<?> type : types) refresh(system, metrics, type);
            },
            system.executionContext());
  }

  private static void refresh(ActorSystem<?> system, TetherMetrics metrics, EntityTypeKey<?> type) {
    Asks.direct(
            AskPattern.<org.apache.pekko.cluster.sharding.typed.ClusterShardingQuery, ShardRegion.CurrentShardRegionState>ask(
                ClusterSharding.get(system).shardState(),
                replyTo -> new GetShardRegionState(type, replyTo),
                Duration.ofSeconds(3),
                system.scheduler()))
        .thenAccept(
            state -> {
              int entities = 0;
              for (ShardRegion.ShardState shard : state.getShards()) entities += shard.getEntityIds().size();
              metrics.shardsHosted(type.name(), state.getShards().size(), entities);
            });
  }
}
