package dev.tether.session;

import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.time.Duration;
import java.time.Instant;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.Executor;
import javax.sql.DataSource;

/**
 * The little SQL Tether does beside the journal: erasing an ended session's journal rows and
 * snapshots (so no session data is kept after logout or expiry) and the tombstone that lets a
 * later {@code resume} learn why the session is gone. Blocking JDBC runs on {@code executor}.
 */
public final class SessionStore {
  private final DataSource dataSource;
  private final Executor executor;
  private final String readModelProjection;

  /** A store that erases at once, without asking whether a read model has seen the events. */
  public SessionStore(DataSource dataSource, Executor executor) {
    this(dataSource, executor, null);
  }

  /**
   * @param readModelProjection the projection (pekko-projection name, one key per tag) whose
   *     progress {@link #erase} can wait for, or null
   */
  public SessionStore(DataSource dataSource, Executor executor, String readModelProjection) {
    this.dataSource = dataSource;
    this.executor = executor;
    this.readModelProjection = readModelProjection;
  }

  /** What {@link #erase} did. */
  public enum Erased {
    ERASED,
    /** Nothing: the read model has not yet projected all of the session's events. */
    READ_MODEL_BEHIND
  }

  /**
   * Deletes everything the journal holds for the session and leaves a tombstone, in one
   * transaction, so a crash leaves either the whole session or only its tombstone.
   *
   * <p>With {@code waitForReadModel}, nothing is deleted ({@link Erased#READ_MODEL_BEHIND}) until
   * the read model's projection of the session's tag has passed its last event: its receipts and
   * history are built from these events, and the ones written just before the end (the last
   * acks, often {@code Ended} itself) would otherwise be deleted before it ever read them. The
   * caller retries, and stops waiting after a while (a projection that is down must not keep
   * ended sessions forever).
   *
   * <p>The same transaction marks the session {@code ended} in the inspection read model
   * ({@code session_index}), in case the projection never sees the end (it stopped waiting, or
   * the projection is behind). The projection never moves an ended row back, so the order does
   * not matter. The row is inserted if the projection has not seen the session at all.
   */
  public CompletionStage<Erased> erase(String sessionId, String userId, String reason, boolean waitForReadModel) {
    String persistenceId = ClientProxy.persistenceIdOf(sessionId);
    return CompletableFuture.supplyAsync(
        () -> {
          try (Connection c = dataSource.getConnection()) {
            c.setAutoCommit(false);
            try {
              if (waitForReadModel
                  && readModelProjection != null
                  && readModelBehind(c, persistenceId, ClientProxy.tagFor(sessionId))) {
                c.rollback();
                return Erased.READ_MODEL_BEHIND;
              }
              eraseIn(c, persistenceId, sessionId, userId, reason);
              c.commit();
              return Erased.ERASED;
            } catch (SQLException e) {
              c.rollback();
              throw e;
            }
          } catch (SQLException e) {
            throw new IllegalStateException("Could not erase session " + sessionId, e);
          }
        },
        executor);
  }

  /**
   * Whether the projection of {@code tag} has not reached the session's last journal row. Its
   * offset is the journal's {@code ordering} of the last event it applied, stored in the same
   * transaction as what it wrote, and a tag's events are projected in that order.
   */
  private boolean readModelBehind(Connection c, String persistenceId, String tag) throws SQLException {
    try (PreparedStatement q =
        c.prepareStatement(
            "SELECT (SELECT max(ordering) FROM event_journal WHERE persistence_id = ?) > "
                + "COALESCE((SELECT CAST(current_offset AS BIGINT) FROM pekko_projection_offset_store "
                + "WHERE projection_name = ? AND projection_key = ? AND manifest = 'SEQ'), 0)")) {
      q.setString(1, persistenceId);
      q.setString(2, readModelProjection);
      q.setString(3, tag);
      try (ResultSet rs = q.executeQuery()) {
        // No rows left (NULL): nothing to wait for.
        return rs.next() && rs.getBoolean(1);
      }
    }
  }

  private static void eraseIn(Connection c, String persistenceId, String sessionId, String userId, String reason)
      throws SQLException {
    try (PreparedStatement tomb =
            c.prepareStatement(
                "INSERT INTO session_tombstones(session_id, user_id, reason) VALUES (?, ?, ?) "
                    + "ON CONFLICT (session_id) DO NOTHING");
        PreparedStatement events = c.prepareStatement("DELETE FROM event_journal WHERE persistence_id = ?");
        PreparedStatement snapshots = c.prepareStatement("DELETE FROM snapshot WHERE persistence_id = ?");
        PreparedStatement index =
            c.prepareStatement(
                "INSERT INTO session_index(session_id, user_id, state, ended_reason, created_at, updated_at, ended_at) "
                    + "VALUES (?, ?, 'ended', ?, now(), now(), now()) "
                    + "ON CONFLICT (session_id) DO UPDATE SET state = 'ended', "
                    + "ended_reason = EXCLUDED.ended_reason, grace_deadline = NULL, outbox_size = 0, "
                    + "updated_at = now(), ended_at = COALESCE(session_index.ended_at, now())")) {
      tomb.setString(1, sessionId);
      tomb.setString(2, userId);
      tomb.setString(3, reason);
      tomb.executeUpdate();
      events.setString(1, persistenceId);
      events.executeUpdate();
      snapshots.setString(1, persistenceId);
      snapshots.executeUpdate();
      index.setString(1, sessionId);
      index.setString(2, userId);
      index.setString(3, reason);
      index.executeUpdate();
    }
  }

  /** Why a session that no longer exists ended ({@code ended} or {@code expired}), if known. */
  public CompletionStage<Optional<String>> tombstoneReason(String sessionId) {
    return CompletableFuture.supplyAsync(
        () -> {
          try (Connection c = dataSource.getConnection();
              PreparedStatement q =
                  c.prepareStatement("SELECT reason FROM session_tombstones WHERE session_id = ?")) {
            q.setString(1, sessionId);
            try (ResultSet rs = q.executeQuery()) {
              return rs.next() ? Optional.of(rs.getString(1)) : Optional.<String>empty();
            }
          } catch (SQLException e) {
            throw new IllegalStateException("Could not read tombstone of " + sessionId, e);
          }
        },
        executor);
  }

  /**
   * Removes tombstones older than the retention; returns how many. First it deletes any snapshot
   * of a tombstoned session: pekko saves snapshots asynchronously, so one taken by the session's
   * last events can land just after {@link #erase} deleted the others.
   */
  public CompletionStage<Integer> purgeTombstones(Duration retention) {
    return CompletableFuture.supplyAsync(
        () -> {
          try (Connection c = dataSource.getConnection();
              PreparedStatement late =
                  c.prepareStatement(
                      "DELETE FROM snapshot s USING session_tombstones t WHERE s.persistence_id = ? || t.session_id");
              PreparedStatement d =
                  c.prepareStatement("DELETE FROM session_tombstones WHERE ended_at < ?")) {
            late.setString(1, ClientProxy.persistenceIdOf(""));
            late.executeUpdate();
            d.setTimestamp(1, Timestamp.from(Instant.now().minus(retention)));
            return d.executeUpdate();
          } catch (SQLException e) {
            throw new IllegalStateException("Could not purge tombstones", e);
          }
        },
        executor);
  }
}
