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

  public SessionStore(DataSource dataSource, Executor executor) {
    this.dataSource = dataSource;
    this.executor = executor;
  }

  /**
   * Deletes everything the journal holds for the session and leaves a tombstone, in one
   * transaction, so a crash leaves either the whole session or only its tombstone.
   *
   * <p>The same transaction marks the session {@code ended} in the inspection read model
   * ({@code session_index}). That model is otherwise kept by a projection over the journal, but
   * the events this deletes (often {@code Ended} itself, written milliseconds earlier) may never
   * reach the projection; without this mark the listing would show the session attached or
   * detached forever. The projection never moves an ended row back, so the order does not matter.
   * The row is inserted if the projection has not seen the session at all.
   */
  public CompletionStage<Void> erase(String persistenceId, String sessionId, String userId, String reason) {
    return CompletableFuture.runAsync(
        () -> {
          try (Connection c = dataSource.getConnection()) {
            c.setAutoCommit(false);
            try (PreparedStatement tomb =
                    c.prepareStatement(
                        "INSERT INTO session_tombstones(session_id, user_id, reason) VALUES (?, ?, ?) "
                            + "ON CONFLICT (session_id) DO NOTHING");
                PreparedStatement events =
                    c.prepareStatement("DELETE FROM event_journal WHERE persistence_id = ?");
                PreparedStatement snapshots =
                    c.prepareStatement("DELETE FROM snapshot WHERE persistence_id = ?");
                PreparedStatement index =
                    c.prepareStatement(
                        "INSERT INTO session_index(session_id, user_id, state, ended_reason, created_at, updated_at) "
                            + "VALUES (?, ?, 'ended', ?, now(), now()) "
                            + "ON CONFLICT (session_id) DO UPDATE SET state = 'ended', "
                            + "ended_reason = EXCLUDED.ended_reason, grace_deadline = NULL, outbox_size = 0, "
                            + "updated_at = now()")) {
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
              c.commit();
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

  /** Removes tombstones older than the retention; returns how many. */
  public CompletionStage<Integer> purgeTombstones(Duration retention) {
    return CompletableFuture.supplyAsync(
        () -> {
          try (Connection c = dataSource.getConnection();
              PreparedStatement d =
                  c.prepareStatement("DELETE FROM session_tombstones WHERE ended_at < ?")) {
            d.setTimestamp(1, Timestamp.from(Instant.now().minus(retention)));
            return d.executeUpdate();
          } catch (SQLException e) {
            throw new IllegalStateException("Could not purge tombstones", e);
          }
        },
        executor);
  }
}
