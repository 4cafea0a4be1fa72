package dev.tether.bench;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * A log-linear histogram of non-negative longs (microseconds here): exact below 1024, then 512
 * sub-buckets per power of two (relative error below 0.2 %). Thread-safe, mergeable, and
 * serialised sparsely so that workers can hand it to the driver as JSON.
 */
final class Hist {
  private static final int SUB = 512;
  private static final int SIZE = 1024 + 54 * SUB;
  private final AtomicLongArray counts = new AtomicLongArray(SIZE);

  static int index(long v) {
    if (v < 0) v = 0;
    if (v < 1024) return (int) v;
    int e = 63 - Long.numberOfLeadingZeros(v); // >= 10
    int sub = (int) (v >>> (e - 9)) - SUB;
    return 1024 + (e - 10) * SUB + sub;
  }

  /** Lower bound of the bucket (the value reported for a percentile). */
  static long value(int i) {
    if (i < 1024) return i;
    int e = (i - 1024) / SUB + 10;
    int sub = (i - 1024) % SUB;
    return ((long) (SUB + sub)) << (e - 9);
  }

  void record(long v) {
    counts.incrementAndGet(index(v));
  }

  long count() {
    long n = 0;
    for (int i = 0; i < SIZE; i++) n += counts.get(i);
    return n;
  }

  /** The value at quantile q (0..1); -1 when empty. */
  long quantile(double q) {
    long n = count();
    if (n == 0) return -1;
    long rank = (long) Math.ceil(q * n);
    if (rank < 1) rank = 1;
    long seen = 0;
    for (int i = 0; i < SIZE; i++) {
      seen += counts.get(i);
      if (seen >= rank) return value(i);
    }
    return value(SIZE - 1);
  }

  long max() {
    for (int i = SIZE - 1; i >= 0; i--) if (counts.get(i) > 0) return value(i);
    return -1;
  }

  Map<String, Long> toSparse() {
    Map<String, Long> m = new LinkedHashMap<>();
    for (int i = 0; i < SIZE; i++) {
      long c = counts.get(i);
      if (c > 0) m.put(Integer.toString(i), c);
    }
    return m;
  }

  void addSparse(Map<String, ?> sparse) {
    for (Map.Entry<String, ?> e : sparse.entrySet()) {
      counts.addAndGet(Integer.parseInt(e.getKey()), ((Number) e.getValue()).longValue());
    }
  }

  /** p50/p90/p99/p999/max in milliseconds (values recorded in microseconds). */
  Map<String, Object> summaryMs() {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("count", count());
    m.put("p50_ms", ms(quantile(0.50)));
    m.put("p90_ms", ms(quantile(0.90)));
    m.put("p99_ms", ms(quantile(0.99)));
    m.put("p999_ms", ms(quantile(0.999)));
    m.put("max_ms", ms(max()));
    return m;
  }

  static Double ms(long us) {
    return us < 0 ? null : Math.round(us / 10.0) / 100.0;
  }
}
