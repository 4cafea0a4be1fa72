package dev.tether.gateway;

import dev.tether.telemetry.TetherMetrics;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Supplier;
import org.apache.pekko.NotUsed;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.javadsl.Adapter;
import scala.Tuple2;
import org.apache.pekko.stream.Attributes;
import org.apache.pekko.stream.FlowShape;
import org.apache.pekko.stream.Inlet;
import org.apache.pekko.stream.Outlet;
import org.apache.pekko.stream.QueueOfferResult;
import org.apache.pekko.stream.SubscriptionWithCancelException;
import org.apache.pekko.stream.javadsl.Flow;
import org.apache.pekko.stream.javadsl.Sink;
import org.apache.pekko.stream.javadsl.Source;
import org.apache.pekko.stream.stage.AbstractInHandler;
import org.apache.pekko.stream.stage.AbstractOutHandler;
import org.apache.pekko.stream.stage.AsyncCallback;
import org.apache.pekko.stream.stage.GraphStage;
import org.apache.pekko.stream.stage.GraphStageLogic;
import org.apache.pekko.stream.stage.TimerGraphStageLogic;
import org.apache.pekko.util.ByteString;
import org.apache.pekko.util.ByteStringBuilder;

/**
 * One connection to the gateway's port, from the raw TCP bytes. Its request line decides: a
 * request for {@code /ws} is a WebSocket and stays in this stage, from the bytes to its
 * {@link Connection} actor; anything else (the backend API, health, metrics) is handed over
 * whole to pekko-http's server pipeline, materialized inside this stage for that connection only.
 *
 * <p>The WebSocket, in this single stream stage: the upgrade request ({@link UpgradeRequest}), RFC 6455 framing (client frames
 * are masked, server frames are not), pings answered with pongs, fragmented text messages
 * reassembled, and the close handshake carrying Tether's close codes.
 *
 * <p>Why not pekko-http's WebSocket support: a socket upgraded by pekko-http keeps its whole HTTP
 * server pipeline plus the WebSocket stack materialized for its lifetime, about 40 stream stages
 * and half of an idle session's heap (docs/BENCHMARKS.md, eighth session). This stage is the
 * only one a WebSocket needs besides the TCP connection itself: the choice between WebSocket and
 * HTTP is made here rather than by a stage in front of it, which for every WebSocket kept a
 * second stage, a sub-stream and its interpreter alive (docs/BENCHMARKS.md, tenth session).
 *
 * <p>Heartbeats stay here: RFC 6455 pings and the SDKs' {@code {"type":"ping"}} are answered by
 * the stage itself (noted in {@link CloseSignal} for the actor's heartbeat deadline), so an idle
 * socket costs its actor nothing.
 *
 * <p>Towards the actor: one {@link Connection.FrameReceived} at a time (the next one only after the
 * actor's {@link Connection.StreamAck}, and TCP is not read meanwhile, so a flooding client is
 * slowed by TCP), and {@link Connection.StreamEnded} when the socket is gone. The first frame goes
 * to the actor as soon as it is read: no start-up round trip, which a reconnect storm of
 * thousands of sockets would pay on a busy dispatcher. The actor writes through {@link SocketOutbox}.
 *
 * <p>Reading also pauses while our own control bytes (the upgrade answer, pongs, the close frame)
 * wait for TCP: a client that sends pings and never reads would otherwise grow them without bound.
 */
public final class WebSocketStage extends GraphStage<FlowShape<ByteString, ByteString>> {

  /** Starts the connection actor once the upgrade is accepted. */
  public interface ConnectionStarter {
    /** @param upgradeWaited how long the upgrade waited for its turn: the hello's wait gets the rest of the budget */
    ActorRef<Connection.Command> start(SocketOutbox outbox, CloseSignal closeSignal, String remote, Duration upgradeWaited);
  }

  /** What the stage needs from the gateway's settings. */
  public record Limits(
      int maxFrameBytes,
      int outgoingBuffer,
      long outgoingBufferBytes,
      boolean trustForwardedFor,
      Duration headTimeout,
      Duration closeTimeout,
      Duration turnTimeout) {
    public static Limits from(GatewaySettings settings) {
      return new Limits(
          settings.maxFrameBytes(),
          settings.outgoingBuffer(),
          settings.outgoingBufferBytes(),
          settings.trustForwardedFor(),
          settings.handshakeTimeout(),
          Duration.ofSeconds(3),
          settings.handshakeQueueTimeout());
    }
  }

  // RFC 6455 section 5.2
  private static final int OP_CONTINUATION = 0x0;
  private static final int OP_TEXT = 0x1;
  private static final int OP_BINARY = 0x2;
  private static final int OP_CLOSE = 0x8;
  private static final int OP_PING = 0x9;
  private static final int OP_PONG = 0xA;
  /** One write to TCP carries at most about this many bytes of queued frames. */
  private static final int MAX_WRITE_BYTES = 64 * 1024;

  private final Inlet<ByteString> in = Inlet.create("WebSocket.in");
  private final Outlet<ByteString> out = Outlet.create("WebSocket.out");
  private final FlowShape<ByteString, ByteString> shape = FlowShape.of(in, out);
  private final String peer;
  private final Limits limits;
  private final HandshakeAdmission admission;
  private final ConnectionStarter starter;
  private final TetherMetrics metrics;
  private final Supplier<Flow<ByteString, ByteString, NotUsed>> httpServer;

  /**
   * @param peer the TCP peer's address
   * @param httpServer a new HTTP server pipeline, for a connection that is not a WebSocket
   */
  WebSocketStage(
      String peer,
      Limits limits,
      HandshakeAdmission admission,
      ConnectionStarter starter,
      TetherMetrics metrics,
      Supplier<Flow<ByteString, ByteString, NotUsed>> httpServer) {
    this.peer = peer;
    this.limits = limits;
    this.admission = admission;
    this.starter = starter;
    this.metrics = metrics;
    this.httpServer = httpServer;
  }

  @Override
  public FlowShape<ByteString, ByteString> shape() {
    return shape;
  }

  @Override
  public GraphStageLogic createLogic(Attributes inheritedAttributes) {
    return new Logic();
  }

  /** The longest request line looked at to choose between WebSocket and HTTP. */
  private static final int MAX_REQUEST_LINE = 8 * 1024;

  /** Whether the request line asks for {@code /ws} (with or without a query), by any method. */
  static boolean isWebSocketRequest(ByteString bytes) {
    int lineEnd = bytes.indexOf((byte) '\r');
    String line = bytes.take(lineEnd < 0 ? bytes.size() : lineEnd).decodeString(StandardCharsets.ISO_8859_1);
    String[] parts = line.split(" ", 3);
    if (parts.length < 2) return false;
    String target = parts[1];
    int query = target.indexOf('?');
    return (query < 0 ? target : target.substring(0, query)).equals("/ws");
  }

  private enum State {
    /** Reading the HTTP upgrade request (or, until its first line is complete, any request). */
    HEAD,
    /** Not a WebSocket: the bytes pass through pekko-http's server pipeline. */
    HTTP,
    /** Upgraded: frames flow both ways. */
    OPEN,
    /** Our close frame is sent (or queued): waiting for the client's, for at most the close timeout. */
    CLOSING,
    /** The last bytes are written or being written; nothing more is read. */
    DONE
  }

  private static final String HEAD_TIMER = "head";
  private static final String TURN_TIMER = "turn";
  private static final String CLOSE_TIMER = "close";

  private final class Logic extends TimerGraphStageLogic implements SocketOutbox {
    private State state = State.HEAD;
    private ByteString buffer = ByteString.emptyByteString();
    /** How many bytes of the head's end, CR LF CR LF, the bytes read so far end with. */
    private int headEndMatched;
    private int headBytesScanned;
    private int headLength = -1; // the head's length with its CR LF CR LF, once complete
    private boolean requestLineComplete; // a line feed has been read
    private boolean routeChosen; // the request line said WebSocket (else the stage is in HTTP)
    /** Bytes to write before any queued frame: the upgrade answer, pongs, the close frame. */
    private ByteString control = ByteString.emptyByteString();
    private final CloseSignal closeSignal = new CloseSignal();
    private ActorRef<Connection.Command> connection;
    private ActorRef<Connection.StreamAck> ackTo;
    private boolean awaitingAck;

    // The message being reassembled from fragments (RFC 6455 section 5.4).
    private int messageOpcode = -1; // -1: none in progress
    private ByteStringBuilder fragments;
    private long messageBytes;
    private boolean discardingMessage; // binary or too large: its payload is skipped
    private long skipBytes; // payload of the current frame still to be skipped
    private boolean readingPaused; // control bytes wait for TCP: read again once they are taken
    private boolean discardingInput; // a second protocol error while closing: framing is lost

    // The actor's side: written from its thread, drained on the stage's.
    private final ConcurrentLinkedQueue<String> frames = new ConcurrentLinkedQueue<>();
    private final AtomicInteger queued = new AtomicInteger();
    private final AtomicBoolean wakeupPending = new AtomicBoolean();
    private volatile int closeRequest; // 0 none, 1 after the queued frames, 2 now
    private volatile boolean outboxClosed;
    private final AsyncCallback<Object> wakeup = createAsyncCallback(ignored -> onOutboxChanged());

    // The upgrade's turn (HandshakeAdmission): taken once the request head is complete and
    // accepted, given back once the 101 is queued and the connection actor started.
    private final AsyncCallback<Object> turnCame = createAsyncCallback(ignored -> onTurn());
    private final HandshakeAdmission.Waiter upgradeTurn = () -> turnCame.invoke(null);
    private boolean waitingForTurn;
    private boolean hasTurn;
    private long turnRequestedNanos; // when the upgrade started waiting for its turn
    private Duration turnWaited = Duration.ZERO;
    private UpgradeRequest.Outcome upgrade; // the accepted upgrade, from the complete head until its 101 is queued

    Logic() {
      super(shape);
      setHandler(
          in,
          new AbstractInHandler() {
            @Override
            public void onPush() {
              append(grab(in));
              readBuffer();
            }

            @Override
            public void onUpstreamFinish() {
              // The client went away (with or without a close frame of its own), or, after
              // finishWith, TCP closed once our last bytes were written.
              completeStage();
            }

            @Override
            public void onUpstreamFailure(Throwable failure) {
              completeStage(); // a reset socket is an ordinary way for a client to leave
            }
          });
      setHandler(
          out,
          new AbstractOutHandler() {
            @Override
            public void onPull() {
              write();
              if (readingPaused && control.isEmpty()) {
                readingPaused = false;
                readBuffer();
              }
            }

            @Override
            public void onDownstreamFinish(Throwable cause) {
              completeStage();
            }
          });
    }

    @Override
    public void preStart() {
      // The whole upgrade request, from the connection's start, within the head timeout (an HTTP
      // connection has it until its request line is complete, then pekko-http's idle timeout).
      scheduleOnce(HEAD_TIMER, limits.headTimeout());
      pull(in);
    }

    @Override
    public void onTimer(Object key) {
      if (TURN_TIMER.equals(key) && waitingForTurn) {
        waitingForTurn = false;
        admission.leave(upgradeTurn);
        admission.refusedBusy();
        finishWith(UpgradeRequest.busy().response());
      } else if (HEAD_TIMER.equals(key) && state == State.HEAD) {
        finishWith(UpgradeRequest.refuse(408, "Request Timeout", "the upgrade request did not arrive in time").response());
      } else if (CLOSE_TIMER.equals(key)) {
        // The client neither answered our close frame nor took our last bytes: reset the
        // connection (a graceful TCP close would wait for a reader that may never read).
        failStage(new CloseTimedOut());
      }
    }

    @Override
    public void postStop() {
      admission.leave(upgradeTurn); // whether it holds the turn, waits for it, or neither
      outboxClosed = true;
      if (connection != null) connection.tell(new Connection.StreamEnded());
    }

    // -------------------------------------------------------------------------------------------
    // Reading

    /** Acts on what the buffer holds, then reads more from TCP if that is what it waits for. */
    private void readBuffer() {
      boolean needMoreBytes = state == State.HEAD ? readHead() : readFrames();
      if (needMoreBytes && !isClosed(in) && !hasBeenPulled(in)) pull(in);
    }

    private void append(ByteString chunk) {
      // Only the new bytes are searched: a line trickling in byte by byte costs no more than one arriving whole.
      if (!requestLineComplete && chunk.indexOf((byte) '\n') >= 0) requestLineComplete = true;
      if (state == State.HEAD && headLength < 0) scanForHeadEnd(chunk);
      buffer = buffer.isEmpty() ? chunk : buffer.concat(chunk);
    }

    /**
     * Looks for the empty line ending the head in the new bytes only: a head trickling in one
     * byte per TCP segment costs no more than one arriving whole.
     */
    private void scanForHeadEnd(ByteString chunk) {
      for (int i = 0; i < chunk.size(); i++) {
        byte b = chunk.apply(i);
        if (b == HEAD_END[headEndMatched]) {
          headEndMatched++;
        } else {
          headEndMatched = b == '\r' ? 1 : 0;
        }
        if (headEndMatched == HEAD_END.length) {
          headLength = headBytesScanned + i + 1;
          return;
        }
      }
      headBytesScanned += chunk.size();
    }

    /** @return true when a read is wanted: the head is not complete yet (or see {@link #awaitTurn}) */
    private boolean readHead() {
      if (!routeChosen) {
        if (!requestLineComplete && buffer.size() < MAX_REQUEST_LINE) return true;
        routeChosen = true;
        if (!isWebSocketRequest(buffer)) {
          handOverToHttp();
          return false;
        }
      }
      if (headLength < 0 ? buffer.size() > UpgradeRequest.MAX_HEAD_BYTES : headLength > UpgradeRequest.MAX_HEAD_BYTES) {
        finishWith(UpgradeRequest.refuse(431, "Request Header Fields Too Large", "request head too large").response());
        return false;
      }
      if (headLength < 0) return true;
      if (upgrade == null) {
        String head = buffer.slice(0, headLength - HEAD_END.length).decodeString(StandardCharsets.ISO_8859_1);
        buffer = buffer.drop(headLength);
        cancelTimer(HEAD_TIMER); // the client's part is done
        UpgradeRequest.Outcome outcome = UpgradeRequest.answer(head);
        if (!outcome.upgraded()) {
          finishWith(outcome.response()); // a refusal is answered at once: no turn needed
          return false;
        }
        upgrade = outcome;
      }
      if (!hasTurn) return awaitTurn();
      state = State.OPEN;
      writeControl(ByteString.fromString(upgrade.response(), StandardCharsets.US_ASCII));
      // Stage actor: the actor's acks and its termination reach this stage on the stage's thread.
      StageActor stageActor =
          getStageActor(
              message -> {
                onActorMessage(message);
                return scala.runtime.BoxedUnit.UNIT;
              });
      ackTo = Adapter.toTyped(stageActor.ref());
      connection = starter.start(this, closeSignal, clientAddress(upgrade), turnWaited);
      upgrade = null; // its answer is written: not kept for the socket's whole life
      stageActor.watch(Adapter.toClassic(connection));
      admission.leave(upgradeTurn); // the rest waits for the client's hello, which holds no turn
      return readFrames(); // frames the client sent right behind its upgrade request
    }

    /**
     * Not a WebSocket: from now on this stage only passes bytes between TCP and a pekko-http
     * server pipeline of its own (what {@code flatMapPrefix} would do, without keeping a stage in
     * front of every WebSocket). The bytes read so far go first.
     */
    private void handOverToHttp() {
      cancelTimer(HEAD_TIMER);
      state = State.HTTP;
      SubSourceOutlet<ByteString> requestBytes = new SubSourceOutlet<>("WebSocketStage.http-requests");
      SubSinkInlet<ByteString> responseBytes = new SubSinkInlet<>("WebSocketStage.http-responses");
      requestBytes.setHandler(
          new AbstractOutHandler() {
            @Override
            public void onPull() {
              if (!buffer.isEmpty()) {
                ByteString read = buffer;
                buffer = ByteString.emptyByteString();
                requestBytes.push(read);
              } else if (isClosed(in)) {
                requestBytes.complete();
              } else {
                pull(in);
              }
            }

            @Override
            public void onDownstreamFinish(Throwable cause) {
              // pekko-http reads no more requests (Connection: close, or a graceful stop). Its last
              // answers may still be on their way: TCP closes once it completes its output (below),
              // not now, which would cut them off. Only a failure closes the connection at once.
              if (!(cause instanceof SubscriptionWithCancelException.NonFailureCancellation)) cancel(in, cause);
            }
          });
      setHandler(
          in,
          new AbstractInHandler() {
            @Override
            public void onPush() {
              ByteString chunk = grab(in); // in is pulled only when requestBytes is
              if (!requestBytes.isClosed()) requestBytes.push(chunk); // else pekko-http wants no more
            }

            @Override
            public void onUpstreamFinish() {
              // Once the buffer is taken if it holds bytes (see onPull above).
              if (buffer.isEmpty() && !requestBytes.isClosed()) requestBytes.complete();
            }

            @Override
            public void onUpstreamFailure(Throwable failure) {
              if (requestBytes.isClosed()) failStage(failure);
              else requestBytes.fail(failure);
            }
          });
      responseBytes.setHandler(
          new AbstractInHandler() {
            @Override
            public void onPush() {
              push(out, responseBytes.grab());
            }

            @Override
            public void onUpstreamFinish() {
              completeStage();
            }

            @Override
            public void onUpstreamFailure(Throwable failure) {
              failStage(failure);
            }
          });
      setHandler(
          out,
          new AbstractOutHandler() {
            @Override
            public void onPull() {
              responseBytes.pull();
            }

            @Override
            public void onDownstreamFinish(Throwable cause) {
              responseBytes.cancel(cause);
              completeStage();
            }
          });
      Source.fromGraph(requestBytes.source())
          .via(httpServer.get())
          .runWith(Sink.fromGraph(responseBytes.sink()), subFusingMaterializer());
      if (isAvailable(out)) responseBytes.pull();
    }

    /**
     * The upgrade is accepted and waits for its turn (at most the turn timeout), reading no more
     * than one further chunk meanwhile, so a waiting client cannot pile up bytes in memory.
     *
     * @return true when a read is wanted
     */
    private boolean awaitTurn() {
      if (!waitingForTurn) {
        if (admission.enter(upgradeTurn, HandshakeAdmission.Step.UPGRADE)) {
          hasTurn = true;
          return readHead();
        }
        waitingForTurn = true;
        turnRequestedNanos = System.nanoTime();
        scheduleOnce(TURN_TIMER, limits.turnTimeout());
      }
      return buffer.isEmpty(); // nothing beyond the head buffered yet
    }

    private void onTurn() {
      if (!waitingForTurn) {
        admission.leave(upgradeTurn); // refused meanwhile (turn timeout): not wanted any more
        return;
      }
      waitingForTurn = false;
      hasTurn = true;
      turnWaited = Duration.ofNanos(System.nanoTime() - turnRequestedNanos);
      cancelTimer(TURN_TIMER);
      readBuffer();
    }

    private String clientAddress(UpgradeRequest.Outcome outcome) {
      if (limits.trustForwardedFor()) {
        String forwarded = ipLiteral(outcome.forwardedFor());
        if (forwarded != null) return forwarded;
        String realIp = ipLiteral(outcome.realIp());
        if (realIp != null) return realIp;
      }
      return peer;
    }

    /** @return true when a frame is incomplete and more bytes are needed */
    private boolean readFrames() {
      while (!awaitingAck && (state == State.OPEN || state == State.CLOSING)) {
        if (!control.isEmpty()) {
          readingPaused = true; // onPull reads on once TCP has taken them
          return false;
        }
        if (discardingInput) {
          buffer = ByteString.emptyByteString();
          return true;
        }
        if (skipBytes > 0) {
          int skipped = (int) Math.min(skipBytes, buffer.size());
          buffer = buffer.drop(skipped);
          skipBytes -= skipped;
          if (skipBytes > 0) return true;
          continue;
        }
        if (buffer.size() < 2) return true;
        int b0 = buffer.apply(0) & 0xFF;
        int b1 = buffer.apply(1) & 0xFF;
        boolean fin = (b0 & 0x80) != 0;
        int opcode = b0 & 0x0F;
        boolean masked = (b1 & 0x80) != 0;
        int length7 = b1 & 0x7F;
        int headerLength = 2 + (length7 == 126 ? 2 : length7 == 127 ? 8 : 0) + (masked ? 4 : 0);
        if (buffer.size() < headerLength) return true;
        long length =
            length7 == 126 ? ((buffer.apply(2) & 0xFF) << 8) | (buffer.apply(3) & 0xFF)
                : length7 == 127 ? buffer.slice(2, 10).asByteBuffer().getLong()
                : length7;
        if ((b0 & 0x70) != 0) return protocolError(1002, "reserved bits set");
        if (!masked) return protocolError(1002, "client frames must be masked");
        if (length < 0) return protocolError(1002, "frame length out of range");
        boolean control = (opcode & 0x8) != 0;
        if (control) {
          if (!fin || length > 125) return protocolError(1002, "control frames must be whole and at most 125 bytes");
          if (opcode != OP_CLOSE && opcode != OP_PING && opcode != OP_PONG) return protocolError(1002, "unknown opcode");
        } else if (opcode == OP_CONTINUATION ? messageOpcode < 0 : messageOpcode >= 0) {
          return protocolError(1002, opcode == OP_CONTINUATION ? "continuation without a message" : "message inside a fragmented message");
        } else if (opcode != OP_CONTINUATION && opcode != OP_TEXT && opcode != OP_BINARY) {
          return protocolError(1002, "unknown opcode");
        }
        int maskOffset = headerLength - 4;

        // (Compared as a subtraction: a length claiming up to 2^63 - 1 bytes must not overflow.)
        if (!control && (discardingMessage || opcode == OP_BINARY || length > limits.maxFrameBytes() - messageBytes)) {
          // Not kept: binary, or over the limit. Its payload is skipped as it arrives.
          buffer = buffer.drop(headerLength);
          skipBytes = length;
          startOrContinueMessage(opcode);
          long total = saturatedSum(messageBytes, length);
          if (!discardingMessage) {
            discardingMessage = true;
            fragments = null;
            if (messageOpcode == OP_TEXT) deliver(new ClientFrame.TooLarge(total));
          }
          messageBytes = total;
          if (fin) endDiscardedMessage();
          continue;
        }
        if (buffer.size() < headerLength + length) return true;
        byte[] payload = unmask(buffer, maskOffset, headerLength, (int) length);
        buffer = buffer.drop(headerLength + (int) length);
        if (control) {
          onControlFrame(opcode, payload);
        } else {
          onDataFrame(opcode, fin, payload);
        }
      }
      return false;
    }

    private void startOrContinueMessage(int opcode) {
      if (opcode != OP_CONTINUATION) {
        messageOpcode = opcode;
        messageBytes = 0;
      }
    }

    private void endDiscardedMessage() {
      if (messageOpcode == OP_BINARY) {
        deliver(new ClientFrame.Bad("bad-frame", "binary frames are not supported; send JSON text frames"));
      }
      messageOpcode = -1;
      messageBytes = 0;
      discardingMessage = false;
    }

    private void onDataFrame(int opcode, boolean fin, byte[] payload) {
      startOrContinueMessage(opcode);
      messageBytes += payload.length;
      if (fin && fragments == null) {
        onTextMessage(payload);
        return;
      }
      if (fragments == null) fragments = new ByteStringBuilder();
      fragments.putBytes(payload);
      if (fin) {
        byte[] whole = fragments.result().toArray();
        fragments = null;
        onTextMessage(whole);
      }
    }

    private void onTextMessage(byte[] utf8) {
      messageOpcode = -1;
      messageBytes = 0;
      String text = decodeUtf8(utf8, 0);
      if (text == null) {
        protocolError(1007, "text frame is not valid UTF-8");
        return;
      }
      ClientFrame frame = FrameCodec.decode(text);
      if (frame instanceof ClientFrame.Ping && answerPing()) return;
      deliver(frame);
    }

    /**
     * Answers an app-level ping here, without a round trip through the connection actor: on an
     * idle node heartbeats are nearly all the traffic. Only while the pong fits the outgoing
     * buffer (count and characters, as the actor's own writes); otherwise the actor gets the
     * ping like any frame, and closes the slow consumer (4009) and releases its session.
     */
    private boolean answerPing() {
      if (state != State.OPEN || connection == null) return false;
      String pong = FrameCodec.PONG;
      // The character bound the actor checks before offer(); the frame count is enqueue's.
      if (closeSignal.queued(pong.length()) > limits.outgoingBufferBytes()
          || enqueue(pong) != QueueOfferResult.enqueued()) {
        closeSignal.dequeued(pong.length());
        return false;
      }
      closeSignal.clientHeard();
      metrics.frameIn();
      metrics.frameOut();
      write();
      return true;
    }

    private void onControlFrame(int opcode, byte[] payload) {
      switch (opcode) {
        case OP_PING -> {
          // Hearing from the client, as much as a frame is (PROTOCOL.md 5).
          closeSignal.clientHeard();
          if (state == State.OPEN) writeControl(frame(OP_PONG, payload, 0, payload.length));
        }
        case OP_PONG -> {} // Tether sends no pings of its own: nothing to match
        default -> onCloseFrame(payload);
      }
    }

    private void onCloseFrame(byte[] payload) {
      if (payload.length == 1) {
        protocolError(1002, "close frame with a one-byte payload");
        return;
      }
      if (payload.length >= 2 && !isValidCloseCode(((payload[0] & 0xFF) << 8) | (payload[1] & 0xFF))) {
        protocolError(1002, "invalid close code");
        return;
      }
      if (payload.length > 2 && decodeUtf8(payload, 2) == null) {
        protocolError(1007, "close reason is not valid UTF-8");
        return;
      }
      if (state == State.CLOSING) {
        completeStage(); // the client answered ours: the handshake is done
        return;
      }
      // The client closes: answer with its code (RFC 6455 section 5.5.1), then end.
      byte[] answer = payload.length >= 2 ? new byte[] {payload[0], payload[1]} : new byte[0];
      frames.clear();
      finishWith(frame(OP_CLOSE, answer, 0, answer.length));
    }

    /** Hands one frame to the actor; the next is read after its ack. */
    private void deliver(ClientFrame frame) {
      if (state != State.OPEN) return;
      connection.tell(new Connection.FrameReceived(frame, ackTo));
      awaitingAck = true;
    }

    private void onActorMessage(Tuple2<org.apache.pekko.actor.ActorRef, Object> message) {
      if (message._2() instanceof org.apache.pekko.actor.Terminated) {
        // The actor stopped while the socket was still open (it failed): close the socket.
        connection = null;
        closeSignal.set(1011, "internal error");
        closeNow();
      } else if (message._2() == Connection.StreamAck.INSTANCE && awaitingAck) {
        awaitingAck = false;
        readBuffer();
      }
    }

    /**
     * A violation of RFC 6455 by the client: the socket closes with {@code code}. What the buffer
     * holds after the faulty frame is dropped (its framing cannot be trusted), but reading goes
     * on: the client's close frame, if it sends one, ends the connection at once rather than at
     * the close timeout. A second violation while closing stops the parsing; the bytes are then
     * discarded until the client closes or the close timeout resets the connection.
     *
     * @return true: more bytes are wanted
     */
    private boolean protocolError(int code, String reason) {
      buffer = ByteString.emptyByteString();
      skipBytes = 0;
      fragments = null;
      messageOpcode = -1;
      discardingMessage = false;
      if (state == State.OPEN) {
        closeSignal.set(code, reason);
        closeNow();
      } else {
        discardingInput = true;
      }
      return true;
    }

    // -------------------------------------------------------------------------------------------
    // Writing

    private void writeControl(ByteString bytes) {
      control = control.isEmpty() ? bytes : control.concat(bytes);
      write();
    }

    /** Writes what is waiting when TCP can take it: control bytes first, then queued frames. */
    private void write() {
      if (!isAvailable(out)) return;
      ByteString bytes = control;
      control = ByteString.emptyByteString();
      if (state == State.OPEN) {
        bytes = bytes.concat(drainFrames());
        if (closeRequest == 1 && queued.get() == 0) bytes = bytes.concat(closeFrame());
      }
      if (!bytes.isEmpty()) push(out, bytes);
    }

    private ByteString drainFrames() {
      ByteString bytes = ByteString.emptyByteString();
      String json;
      while (bytes.length() < MAX_WRITE_BYTES) {
        json = frames.poll();
        if (json == null) break;
        queued.decrementAndGet();
        closeSignal.dequeued(json.length());
        byte[] utf8 = json.getBytes(StandardCharsets.UTF_8);
        bytes = bytes.concat(frame(OP_TEXT, utf8, 0, utf8.length));
      }
      return bytes;
    }

    /** Our close frame, with the code the connection chose; from now on only the client's close is awaited. */
    private ByteString closeFrame() {
      state = State.CLOSING;
      outboxClosed = true;
      scheduleOnce(CLOSE_TIMER, limits.closeTimeout());
      CloseSignal.Close close = closeSignal.get();
      int code = close == null ? 1000 : close.code();
      byte[] reason = close == null ? new byte[0] : close.reason().getBytes(StandardCharsets.UTF_8);
      int reasonLength = Math.min(reason.length, 123); // a control frame carries at most 125 bytes
      byte[] payload = new byte[2 + reasonLength];
      payload[0] = (byte) (code >> 8);
      payload[1] = (byte) code;
      System.arraycopy(reason, 0, payload, 2, reasonLength);
      return frame(OP_CLOSE, payload, 0, payload.length);
    }

    /** Drops the queued frames and sends the close frame next. */
    private void closeNow() {
      if (state != State.OPEN) return;
      frames.clear();
      queued.set(0);
      writeControl(closeFrame());
    }

    /** Writes {@code last} (an HTTP error or the answer to a close) and ends the connection. */
    private void finishWith(String httpResponse) {
      finishWith(ByteString.fromString(httpResponse, StandardCharsets.UTF_8));
    }

    private void finishWith(ByteString last) {
      state = State.DONE;
      outboxClosed = true;
      // If the client never reads these bytes, TCP cannot close after them: reset it then.
      scheduleOnce(CLOSE_TIMER, limits.closeTimeout());
      // Nothing more is read, but the read side stays open: cancelling it would make TCP close
      // the connection at once, before these bytes are written. Completing the write side
      // closes the connection after them.
      ByteString bytes = control.concat(last);
      control = ByteString.emptyByteString();
      if (!bytes.isEmpty()) emit(out, bytes);
      complete(out);
    }

    // -------------------------------------------------------------------------------------------
    // SocketOutbox: called by the connection actor, on its thread

    @Override
    public QueueOfferResult offer(String json) {
      QueueOfferResult result = enqueue(json);
      if (result == QueueOfferResult.enqueued()) wake();
      return result;
    }

    /** Queues one frame within the outgoing buffer's count; the caller makes sure it is written. */
    private QueueOfferResult enqueue(String json) {
      if (outboxClosed || closeRequest != 0) return QueueOfferResult.closed();
      if (queued.incrementAndGet() > limits.outgoingBuffer()) {
        queued.decrementAndGet();
        return QueueOfferResult.dropped();
      }
      frames.add(json);
      return QueueOfferResult.enqueued();
    }

    @Override
    public void complete() {
      if (closeRequest == 0) closeRequest = 1;
      wake();
    }

    @Override
    public void abort() {
      closeRequest = 2;
      wake();
    }

    /** One wake-up in flight at a time: a burst of frames costs one callback, not one each. */
    private void wake() {
      if (wakeupPending.compareAndSet(false, true)) wakeup.invoke(null);
    }

    private void onOutboxChanged() {
      wakeupPending.set(false);
      if (closeRequest == 2) {
        closeNow();
      } else {
        write();
      }
    }
  }

  private static final byte[] HEAD_END = {'\r', '\n', '\r', '\n'};

  /** The close handshake (or the last write) did not finish in time: the connection is reset. */
  static final class CloseTimedOut extends RuntimeException {
    CloseTimedOut() {
      super("the WebSocket close did not complete in time", null, false, false);
    }
  }

  private static long saturatedSum(long a, long b) {
    long sum = a + b;
    return sum < 0 ? Long.MAX_VALUE : sum;
  }

  /** The text, or null when {@code bytes} from {@code offset} on are not valid UTF-8. */
  private static String decodeUtf8(byte[] bytes, int offset) {
    // Most frames are plain ASCII (every heartbeat is): that is valid UTF-8 as it stands and
    // becomes a string in one copy, without a strict decoder and its buffer per frame.
    if (isAscii(bytes, offset)) return new String(bytes, offset, bytes.length - offset, StandardCharsets.ISO_8859_1);
    try {
      return StandardCharsets.UTF_8
          .newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT)
          .decode(ByteBuffer.wrap(bytes, offset, bytes.length - offset))
          .toString();
    } catch (CharacterCodingException e) {
      return null;
    }
  }

  private static boolean isAscii(byte[] bytes, int offset) {
    for (int i = offset; i < bytes.length; i++) if (bytes[i] < 0) return false;
    return true;
  }

  /** Codes a close frame may carry (RFC 6455 section 7.4; 1012-1014 registered with IANA since). */
  static boolean isValidCloseCode(int code) {
    return (code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006)
        || (code >= 3000 && code <= 4999);
  }

  /** The payload of a client frame, unmasked (RFC 6455 section 5.3). */
  private static byte[] unmask(ByteString buffer, int maskOffset, int payloadOffset, int length) {
    byte[] mask = buffer.slice(maskOffset, maskOffset + 4).toArray();
    byte[] payload = buffer.slice(payloadOffset, payloadOffset + length).toArray();
    for (int i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
    return payload;
  }

  /**
   * A whole, unmasked server frame (RFC 6455 section 5.2), built in one array of its exact size:
   * most writes are one small frame (a message, a pong), and a growable builder per write cost
   * more than the frame itself.
   */
  static ByteString frame(int opcode, byte[] payload, int offset, int length) {
    int header = length < 126 ? 2 : length <= 0xFFFF ? 4 : 10;
    byte[] bytes = new byte[header + length];
    bytes[0] = (byte) (0x80 | opcode);
    if (length < 126) {
      bytes[1] = (byte) length;
    } else if (length <= 0xFFFF) {
      bytes[1] = (byte) 126;
      bytes[2] = (byte) (length >> 8);
      bytes[3] = (byte) length;
    } else {
      bytes[1] = (byte) 127;
      for (int i = 0; i < 8; i++) bytes[2 + i] = (byte) ((long) length >>> (56 - 8 * i));
    }
    System.arraycopy(payload, offset, bytes, header, length);
    return ByteString.fromArrayUnsafe(bytes);
  }

  /**
   * The normalized form of an IP address literal, or null for anything else (a host name is not
   * looked up: a forged header must not make the gateway query DNS).
   */
  static String ipLiteral(String value) {
    if (value == null || value.isEmpty() || value.length() > 45) return null;
    if (value.indexOf(':') < 0) return ipv4Literal(value);
    // InetAddress parses a string as an IPv6 literal only when it starts with a hex digit or a
    // ':'; anything else it would look up as a host name. So only hex digits, ':' and '.' (an
    // embedded IPv4 tail) pass to it, and it then parses without asking DNS.
    if (Character.digit(value.charAt(0), 16) < 0 && value.charAt(0) != ':') return null;
    for (int i = 0; i < value.length(); i++) {
      char c = value.charAt(i);
      if (Character.digit(c, 16) < 0 && c != ':' && c != '.') return null;
    }
    try {
      return java.net.InetAddress.getByName(value).getHostAddress();
    } catch (java.net.UnknownHostException e) {
      return null;
    }
  }

  /** Four dotted decimals of 0-255 (no shortened or hex forms), normalized, or null. */
  private static String ipv4Literal(String value) {
    String[] parts = value.split("\\.", -1);
    if (parts.length != 4) return null;
    StringBuilder normalized = new StringBuilder(15);
    for (String part : parts) {
      if (part.isEmpty() || part.length() > 3) return null;
      for (int i = 0; i < part.length(); i++) {
        if (part.charAt(i) < '0' || part.charAt(i) > '9') return null;
      }
      int octet = Integer.parseInt(part);
      if (octet > 255) return null;
      if (normalized.length() > 0) normalized.append('.');
      normalized.append(octet);
    }
    return normalized.toString();
  }
}
