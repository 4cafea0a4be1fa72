package dev.tether.telemetry;

import com.typesafe.config.Config;
import java.util.concurrent.ConcurrentLinkedQueue;
import org.apache.pekko.actor.ActorRef;
import org.apache.pekko.actor.ActorSystem;
import org.apache.pekko.dispatch.Envelope;
import org.apache.pekko.dispatch.MailboxType;
import org.apache.pekko.dispatch.MessageQueue;
import org.apache.pekko.dispatch.ProducesMessageQueue;
import org.apache.pekko.dispatch.UnboundedMessageQueueSemantics;
import scala.Option;

/**
 * An unbounded mailbox (like Pekko's default) that counts what waits in it, per actor class, so
 * an operator can see whether sessions or connections fall behind. Configured in
 * telemetry.conf as {@code tether.telemetry.mailboxes.<name>} with an {@code actor-class}.
 */
public final class InstrumentedMailbox implements MailboxType, ProducesMessageQueue<InstrumentedMailbox.Queue> {
  private final ActorTelemetry telemetry;

  public InstrumentedMailbox(ActorSystem.Settings settings, Config config) {
    this.telemetry = ActorTelemetry.of(config.getString("actor-class"));
  }

  @Override
  public MessageQueue create(Option<ActorRef> owner, Option<ActorSystem> system) {
    return new Queue(telemetry);
  }

  /** A lock-free queue that reports every enqueue and dequeue. */
  public static final class Queue implements MessageQueue, UnboundedMessageQueueSemantics {
    private final ConcurrentLinkedQueue<Envelope> queue = new ConcurrentLinkedQueue<>();
    private final ActorTelemetry telemetry;

    Queue(ActorTelemetry telemetry) {
      this.telemetry = telemetry;
    }

    @Override
    public void enqueue(ActorRef receiver, Envelope handle) {
      queue.offer(handle);
      telemetry.onEnqueue();
    }

    @Override
    public Envelope dequeue() {
      Envelope envelope = queue.poll();
      if (envelope != null) telemetry.onDequeue();
      return envelope;
    }

    @Override
    public int numberOfMessages() {
      return queue.size();
    }

    @Override
    public boolean hasMessages() {
      return !queue.isEmpty();
    }

    @Override
    public void cleanUp(ActorRef owner, MessageQueue deadLetters) {
      Envelope envelope;
      while ((envelope = dequeue()) != null) deadLetters.enqueue(owner, envelope);
    }
  }
}
