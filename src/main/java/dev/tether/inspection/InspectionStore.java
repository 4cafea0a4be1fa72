package dev.tether.inspection;

import dev.tether.session.GraceSweeper;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Duration;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.Executor;
import javax.sql.DataSource;

/**
 * Reads of the session read model (and its purge). The model is eventually consistent: it trails
 * the sessions by the projection's lag. Blocking JDBC runs on {@code executor}.
 */
public final class InspectionStore {
  private final DataSource dataSource;
  private final Executor executor;

  public InspectionStore(DataSource dataSource, Executor executor) {
    this.dataSource = dataSource;
    this.executor = executor;
  }

  /** One row of {@code session_index}; times are epoch milliseconds, {@code graceDeadline} null unless detached. */
  public record SessionRow(
      String sessionId,
      String userId,
      String state,
      long lastSeq,
      long ackedSeq,
      int outboxSize,
      Long graceDeadline,
      long resumes,
      long takeovers,
      long lost,
      long createdAt,
      long updatedAt,
      String endedReason) {}

  /** One row of {@code message_history}; {@code ackedAt} null until acknowledged. */
  public record MessageRow(
      long seq, long queuedAt, Long ackedAt, boolean lost, int bytes, String from, String room) {}

  public record SessionPage(List<SessionRow> sessions, Optional<Cursor> next) {}

  public record HistoryPage(List<MessageRow> messages, Optional<Long> next) {}

  public record Purged(int messages, int sessions) {}

  /**
   * Where a listing page starts: after the session created at {@code createdAt} (microsecond
   * precision, as PostgreSQL keeps it) with id {@code sessionId}. Opaque to API callers.
   */
  public record Cursor(long createdAtMicros, String sessionId) {

    public String encode() {
      String raw = createdAtMicros + ":" + sessionId;
      return Base64.getUrlEncoder().withoutPadding().encodeToString(raw.getBytes(StandardCharsets.UTF_8));
    }

    /** Empty when {@code text} is not a cursor this store handed out. */
    public static Optional<Cursor> decode(String text) {
      try {
        String raw = new String(Base64.getUrlDecoder().decode(text), StandardCharsets.UTF_8);
        int colon = raw.indexOf(':');
        if (colon <= 0 || colon == raw.length() - 1) return Optional.empty();
        return Optional.of(new Cursor(Long.parseLong(raw.substring(0, colon)), raw.substring(colon + 1)));
      } catch (IllegalArgumentException e) {
        return Optional.empty();
      }
    }

    OffsetDateTime createdAt() {
      return OffsetDateTime.ofInstant(Instant.EPOCH.plus(createdAtMicros, ChronoUnit.MICROS), ZoneOffset.UTC);
    }
  }

  /**
   * Sessions newest first, optionally only those in {@code state} and/or of {@code userId}, at
   * most {@code limit}, starting after {@code after}. Keyset pagination: a page is stable under
   * concurrent inserts.
   */
  public CompletionStage<SessionPage> listSessions(
      Optional<String> state, Optional<String> userId, int limit, Optional<Cursor> after) {
    return CompletableFuture.supplyAsync(
        () -> {
          StringBuilder sql =
              new StringBuilder(
                  "SELECT session_id, user_id, state, last_seq, acked_seq, outbox_size, grace_deadline, resumes, "
                      + "takeovers, lost, created_at, updated_at, ended_reason FROM session_index WHERE TRUE");
          List<Object> params = new ArrayList<>();
          state.ifPresent(s -> {
            sql.append(" AND state = ?");
            params.add(s);
          });
          userId.ifPresent(u -> {
            sql.append(" AND user_id = ?");
            params.add(u);
          });
          after.ifPresent(cursor -> {
            sql.append(" AND (created_at, session_id) < (?, ?)");
            params.add(cursor.createdAt());
            params.add(cursor.sessionId());
          });
          sql.append(" ORDER BY created_at DESC, session_id DESC LIMIT ?");
          params.add(limit + 1);
          try (Connection c = dataSource.getConnection();
              PreparedStatement q = c.prepareStatement(sql.toString())) {
            for (int i = 0; i < params.size(); i++) q.setObject(i + 1, params.get(i));
            List<SessionRow> rows = new ArrayList<>();
            Cursor next = null;
            long lastCreatedAtMicros = 0;
            try (ResultSet rs = q.executeQuery()) {
              while (rs.next()) {
                if (rows.size() == limit) {
                  // There is more: the next page starts after the last row of this one.
                  next = new Cursor(lastCreatedAtMicros, rows.get(rows.size() - 1).sessionId());
                  break;
                }
                lastCreatedAtMicros = micros(rs.getObject("created_at", OffsetDateTime.class));
                rows.add(sessionRow(rs));
              }
            }
            return new SessionPage(rows, Optional.ofNullable(next));
          } catch (SQLException e) {
            throw new IllegalStateException("Could not list sessions", e);
          }
        },
        executor);
  }

  /** Messages of a session from {@code fromSeq} on, in seq order, at most {@code limit}. */
  public CompletionStage<HistoryPage> history(String sessionId, long fromSeq, int limit) {
    return CompletableFuture.supplyAsync(
        () -> {
          try (Connection c = dataSource.getConnection();
              PreparedStatement q =
                  c.prepareStatement(
                      "SELECT seq, queued_at, acked_at, lost, bytes, sender, room FROM message_history "
                          + "WHERE session_id = ? AND seq >= ? ORDER BY seq LIMIT ?")) {
            q.setString(1, sessionId);
            q.setLong(2, fromSeq);
            q.setInt(3, limit + 1);
            List<MessageRow> rows = new ArrayList<>();
            Long next = null;
            try (ResultSet rs = q.executeQuery()) {
              while (rs.next()) {
                MessageRow row = messageRow(rs);
                if (rows.size() == limit) {
                  next = row.seq();
                  break;
                }
                rows.add(row);
              }
            }
            return new HistoryPage(rows, Optional.ofNullable(next));
          } catch (SQLException e) {
            throw new IllegalStateException("Could not read the history of " + sessionId, e);
          }
        },
        executor);
  }

  /** One message's row, if the read model has it (and it is not purged yet). */
  public CompletionStage<Optional<MessageRow>> message(String sessionId, long seq) {
    return CompletableFuture.supplyAsync(
        () -> {
          try (Connection c = dataSource.getConnection();
              PreparedStatement q =
                  c.prepareStatement(
                      "SELECT seq, queued_at, acked_at, lost, bytes, sender, room FROM message_history "
                          + "WHERE session_id = ? AND seq = ?")) {
            q.setString(1, sessionId);
            q.setLong(2, seq);
            try (ResultSet rs = q.executeQuery()) {
              return rs.next() ? Optional.of(messageRow(rs)) : Optional.<MessageRow>empty();
            }
          } catch (SQLException e) {
            throw new IllegalStateException("Could not read message " + seq + " of " + sessionId, e);
          }
        },
        executor);
  }

  /**
   * Sessions the read model shows detached with a grace deadline before {@code now}, in
   * (deadline, session id) order, after {@code after} ({@code null}: from the oldest), at most
   * {@code limit}: the ones {@link dev.tether.session.GraceSweeper} wakes.
   */
  public CompletionStage<List<GraceSweeper.Overdue>> detachedPastDeadline(
      Instant now, GraceSweeper.Overdue after, int limit) {
    return CompletableFuture.supplyAsync(
        () -> {
          String sql =
              "SELECT session_id, grace_deadline FROM session_index WHERE state = 'detached' AND grace_deadline < ? "
                  + (after == null ? "" : "AND (grace_deadline, session_id) > (?, ?) ")
                  + "ORDER BY grace_deadline, session_id LIMIT ?";
          try (Connection c = dataSource.getConnection();
              PreparedStatement q = c.prepareStatement(sql)) {
            int i = 1;
            q.setObject(i++, OffsetDateTime.ofInstant(now, ZoneOffset.UTC));
            if (after != null) {
              q.setObject(i++, OffsetDateTime.ofInstant(after.graceDeadline(), ZoneOffset.UTC));
              q.setString(i++, after.sessionId());
            }
            q.setInt(i, limit);
            List<GraceSweeper.Overdue> overdue = new ArrayList<>();
            try (ResultSet rs = q.executeQuery()) {
              while (rs.next()) {
                overdue.add(
                    new GraceSweeper.Overdue(rs.getString(1), rs.getObject(2, OffsetDateTime.class).toInstant()));
              }
            }
            return overdue;
          } catch (SQLException e) {
            throw new IllegalStateException("Could not look for sessions past their grace deadline", e);
          }
        },
        executor);
  }

  /**
   * Deletes history older than {@code historyRetention} and sessions that ended more than
   * {@code endedRetention} ago. Idempotent: every node runs it.
   */
  public CompletionStage<Purged> purge(Duration historyRetention, Duration endedRetention) {
    return CompletableFuture.supplyAsync(
        () -> {
          Instant now = Instant.now();
          try (Connection c = dataSource.getConnection();
              PreparedStatement messages = c.prepareStatement("DELETE FROM message_history WHERE queued_at < ?");
              // Rows ended before migration V6 (or by a node of an older release) have no
              // ended_at: their updated_at is when they ended.
              PreparedStatement sessions =
                  c.prepareStatement(
                      "DELETE FROM session_index WHERE ended_at < ? "
                          + "OR (ended_at IS NULL AND state = 'ended' AND updated_at < ?)")) {
            messages.setObject(1, OffsetDateTime.ofInstant(now.minus(historyRetention), ZoneOffset.UTC));
            OffsetDateTime endedBefore = OffsetDateTime.ofInstant(now.minus(endedRetention), ZoneOffset.UTC);
            sessions.setObject(1, endedBefore);
            sessions.setObject(2, endedBefore);
            return new Purged(messages.executeUpdate(), sessions.executeUpdate());
          } catch (SQLException e) {
            throw new IllegalStateException("Could not purge the inspection read model", e);
          }
        },
        executor);
  }

  private static SessionRow sessionRow(ResultSet rs) throws SQLException {
    return new SessionRow(
        rs.getString("session_id"),
        rs.getString("user_id"),
        rs.getString("state"),
        rs.getLong("last_seq"),
        rs.getLong("acked_seq"),
        rs.getInt("outbox_size"),
        millis(rs.getObject("grace_deadline", OffsetDateTime.class)),
        rs.getLong("resumes"),
        rs.getLong("takeovers"),
        rs.getLong("lost"),
        millis(rs.getObject("created_at", OffsetDateTime.class)),
        millis(rs.getObject("updated_at", OffsetDateTime.class)),
        rs.getString("ended_reason"));
  }

  private static MessageRow messageRow(ResultSet rs) throws SQLException {
    return new MessageRow(
        rs.getLong("seq"),
        millis(rs.getObject("queued_at", OffsetDateTime.class)),
        millis(rs.getObject("acked_at", OffsetDateTime.class)),
        rs.getBoolean("lost"),
        rs.getInt("bytes"),
        rs.getString("sender"),
        rs.getString("room"));
  }

  private static Long millis(OffsetDateTime time) {
    return time == null ? null : time.toInstant().toEpochMilli();
  }

  private static long micros(OffsetDateTime time) {
    return ChronoUnit.MICROS.between(Instant.EPOCH, time.toInstant());
  }
}
