package dev.tether.gateway;

import org.apache.pekko.stream.QueueOfferResult;

/**
 * Where a {@link Connection} writes its frames: the outgoing side of its socket's {@link
 * WebSocketStage}. Bounded, and safe to call from the connection actor's thread while the socket's
 * stream runs on another.
 */
interface SocketOutbox {
  /**
   * Queues one JSON text frame. {@code enqueued}; {@code dropped} when the queue is full (the
   * client does not read); {@code QueueClosed} once the socket is closing.
   */
  QueueOfferResult offer(String json);

  /** Closes the socket after the queued frames, with the {@link CloseSignal}'s code (1000 if none). */
  void complete();

  /** Drops the queued frames and closes the socket now, with the {@link CloseSignal}'s code. */
  void abort();
}
