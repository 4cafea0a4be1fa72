package dev.tether.testkit;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A TCP proxy on loopback between clients and a gateway that can fail the way networks do:
 * {@link #cut()} resets every link, {@link #stall()} keeps the sockets open but forwards nothing
 * (a half-open link), {@link #refuse(boolean)} turns new connections away.
 */
public final class FaultProxy implements AutoCloseable {
  private final ServerSocket server;
  private final InetSocketAddress target;
  private final List<Socket> sockets = new CopyOnWriteArrayList<>();
  private final AtomicInteger accepted = new AtomicInteger();
  private volatile boolean stalled;
  private volatile boolean refusing;
  private volatile boolean closed;

  public FaultProxy(int targetPort) {
    try {
      this.server = new ServerSocket(0, 200, InetAddress.getLoopbackAddress());
    } catch (IOException e) {
      throw new IllegalStateException(e);
    }
    this.target = new InetSocketAddress(InetAddress.getLoopbackAddress(), targetPort);
    Thread acceptor = new Thread(this::acceptLoop, "fault-proxy-accept");
    acceptor.setDaemon(true);
    acceptor.start();
  }

  public int port() {
    return server.getLocalPort();
  }

  /** How many client connections the proxy has accepted (refused ones included). */
  public int accepted() {
    return accepted.get();
  }

  /** Resets every open link, as a dropped network would. */
  public void cut() {
    for (Socket s : sockets) closeQuietly(s);
    sockets.clear();
  }

  /** Stops forwarding in both directions; the sockets stay open (half-open). */
  public void stall() {
    stalled = true;
  }

  public void restore() {
    stalled = false;
  }

  public void refuse(boolean refuse) {
    this.refusing = refuse;
  }

  private void acceptLoop() {
    while (!closed) {
      try {
        Socket client = server.accept();
        accepted.incrementAndGet();
        if (refusing) {
          closeQuietly(client);
          continue;
        }
        Socket upstream = new Socket();
        upstream.connect(target, 5000);
        client.setTcpNoDelay(true);
        upstream.setTcpNoDelay(true);
        sockets.add(client);
        sockets.add(upstream);
        pump(client, upstream);
        pump(upstream, client);
      } catch (IOException e) {
        if (closed) return;
      }
    }
  }

  private void pump(Socket from, Socket to) {
    Thread t =
        new Thread(
            () -> {
              byte[] buffer = new byte[16 * 1024];
              try (InputStream in = from.getInputStream();
                  OutputStream out = to.getOutputStream()) {
                while (true) {
                  while (stalled && !from.isClosed()) Thread.sleep(10);
                  int n = in.read(buffer);
                  if (n < 0) break;
                  while (stalled && !from.isClosed()) Thread.sleep(10); // hold what was read
                  out.write(buffer, 0, n);
                  out.flush();
                }
              } catch (IOException | InterruptedException e) {
                // the link is gone
              } finally {
                closeQuietly(from);
                closeQuietly(to);
              }
            },
            "fault-proxy-pump");
    t.setDaemon(true);
    t.start();
  }

  private static void closeQuietly(Socket s) {
    try {
      s.close();
    } catch (IOException ignored) {
      // already closed
    }
  }

  @Override
  public void close() {
    closed = true;
    cut();
    try {
      server.close();
    } catch (IOException ignored) {
      // closing anyway
    }
  }
}
