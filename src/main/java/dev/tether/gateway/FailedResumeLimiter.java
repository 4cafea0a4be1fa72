package dev.tether.gateway;

import java.util.concurrent.ConcurrentHashMap;

/**
 * Throttles resume-token guessing: each client address has a bucket of failed resumes (a wrong
 * token or user for a session that exists: {@code invalid-token}) that refills at a steady rate.
 * Once it is empty, further resumes from that address are refused with {@code rate-limited}
 * before they reach any session. Successful resumes cost nothing, and neither do resumes of
 * expired, ended or unknown sessions: honest clients get those in numbers after an outage,
 * possibly many behind one address, and they give a guesser nothing. Node-local: an attacker
 * spread over several nodes gets each node's budget, still far too little to guess a 256-bit
 * token. The check does not reserve: K resumes sent at once from one address are all tried.
 */
public final class FailedResumeLimiter {
  private static final int MAX_TRACKED_ADDRESSES = 100_000;

  private final double capacity;
  private final double refillPerNano;
  private final ConcurrentHashMap<String, Bucket> buckets = new ConcurrentHashMap<>();

  private static final class Bucket {
    double tokens;
    long updatedNanos;

    Bucket(double tokens, long now) {
      this.tokens = tokens;
      this.updatedNanos = now;
    }
  }

  /** {@code burst} failures at once, then {@code perMinute} per minute. */
  public FailedResumeLimiter(int burst, int perMinute) {
    this.capacity = burst;
    this.refillPerNano = perMinute / 60e9;
  }

  /** Whether a resume from {@code address} may be tried now. */
  public boolean allowed(String address) {
    Bucket bucket = buckets.get(address);
    if (bucket == null) return true;
    synchronized (bucket) {
      refill(bucket, System.nanoTime());
      return bucket.tokens >= 1;
    }
  }

  /** Records a failed resume from {@code address}. */
  public void failed(String address) {
    long now = System.nanoTime();
    if (buckets.size() > MAX_TRACKED_ADDRESSES) buckets.clear(); // a flood of addresses: start over
    Bucket bucket = buckets.computeIfAbsent(address, a -> new Bucket(capacity, now));
    synchronized (bucket) {
      refill(bucket, now);
      bucket.tokens = Math.max(0, bucket.tokens - 1);
    }
  }

  private void refill(Bucket bucket, long now) {
    bucket.tokens = Math.min(capacity, bucket.tokens + (now - bucket.updatedNanos) * refillPerNano);
    bucket.updatedNanos = now;
  }
}
