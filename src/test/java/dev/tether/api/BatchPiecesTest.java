package dev.tether.api;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.tether.session.Target;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** A session's run of a batch is split, in order, into pieces that fit one cluster message. */
class BatchPiecesTest {
  private static final Target SESSION = Target.parse("session:s_abc");

  @Test
  void smallRunsStayWhole() {
    List<BatchPublish.Entry> entries = entries(10, 100);
    assertEquals(List.of(indexes(0, 10)), BatchPublish.pieces(indexes(0, 10), entries));
  }

  @Test
  void aLargeRunIsSplitInOrderUnderTheLimit() {
    List<BatchPublish.Entry> entries = entries(7, 40_000);
    List<List<Integer>> pieces = BatchPublish.pieces(indexes(0, 7), entries);
    assertEquals(List.of(List.of(0, 1, 2), List.of(3, 4, 5), List.of(6)), pieces);
  }

  @Test
  void piecesCountUtf8BytesAndAnOversizedEntryTravelsAlone() {
    // 30,000 three-byte characters are 90,000 bytes: two of them do not fit in 128 KiB.
    List<BatchPublish.Entry> entries = new ArrayList<>();
    entries.add(entry("\"" + "€".repeat(30_000) + "\""));
    entries.add(entry("\"" + "€".repeat(30_000) + "\""));
    entries.add(entry("\"" + "y".repeat(200_000) + "\""));
    entries.add(entry("1"));
    assertEquals(
        List.of(List.of(0), List.of(1), List.of(2), List.of(3)), BatchPublish.pieces(indexes(0, 4), entries));
  }

  private static List<BatchPublish.Entry> entries(int count, int dataChars) {
    List<BatchPublish.Entry> entries = new ArrayList<>();
    for (int i = 0; i < count; i++) entries.add(entry("\"" + "x".repeat(dataChars) + "\""));
    return entries;
  }

  private static BatchPublish.Entry entry(String data) {
    return new BatchPublish.Entry(SESSION, data, null);
  }

  private static List<Integer> indexes(int from, int to) {
    List<Integer> list = new ArrayList<>();
    for (int i = from; i < to; i++) list.add(i);
    return list;
  }
}
