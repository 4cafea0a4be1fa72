package dev.tether.gateway;

import org.apache.pekko.stream.BoundedSourceQueue;
import org.apache.pekko.stream.QueueOfferResult;

/**
 * A connection's outgoing queue, handed to its actor before the socket's stream has materialized
 * the real one (the actor is created first, because the stream's sink needs its reference). The
 * stream sets the real queue while materializing, before any frame flows, so in practice the
 * actor never sees it unset; if it did, offers are dropped and completion is a no-op (the stream
 * never ran, there is nothing to close).
 */
final class DeferredQueue<T> implements BoundedSourceQueue<T> {
  private volatile BoundedSourceQueue<T> queue;

  void set(BoundedSourceQueue<T> materialized) {
    queue = materialized;
  }

  @Override
  public QueueOfferResult offer(T element) {
    BoundedSourceQueue<T> q = queue;
    return q == null ? QueueOfferResult.dropped() : q.offer(element);
  }

  @Override
  public void complete() {
    BoundedSourceQueue<T> q = queue;
    if (q != null) q.complete();
  }

  @Override
  public void fail(Throwable failure) {
    BoundedSourceQueue<T> q = queue;
    if (q != null) q.fail(failure);
  }

  @Override
  public boolean isCompleted() {
    BoundedSourceQueue<T> q = queue;
    return q != null && q.isCompleted();
  }

  @Override
  public int size() {
    BoundedSourceQueue<T> q = queue;
    return q == null ? 0 : q.size();
  }
}
