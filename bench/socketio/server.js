// Socket.IO 4.8 baseline for Tether's benchmark harness (bench/README.md).
//
// One process, one port: Socket.IO (Engine.IO v4 over WebSocket) and a tiny HTTP API that mirrors
// Tether's publish endpoints, so the load generator drives both servers the same way.
//
//   POST /api/sessions/{sid}/messages {"data":...}  -> io.to(sid).emit("msg", data)   202 {"members":k}
//   POST /api/rooms/{room}/messages   {"data":...}  -> io.to(room).emit("msg", data)  202 {"members":k}
//   POST /api/messages {"messages":[{"sessionId"|"room":id,"data":...},...]}
//                                                   -> one emit per entry, as Tether's batch publish
//                                                      202 {"results":[{"members":k},...]}
//   GET  /health                                    -> 200 once listening
//   GET  /stats[?gc=1]                              -> process.memoryUsage() (after a full GC with gc=1)
//
// Socket events: "join" (room, ack) joins a room; "send" (to, data, ack) publishes to "room:x" or
// "session:sid" and acknowledges, as Socket.IO acks do (43<id>[...]).
//
// Connection state recovery is on: emits to a room (a socket's own id is a room) are stored with an
// offset appended as the last argument; a client reconnecting within maxDisconnectionDuration
// with {pid, offset} in its CONNECT packet gets the same sid, its rooms and the missed packets.
//
// Env: PORT (default 3000), HOST (default 127.0.0.1), GRACE_MS (maxDisconnectionDuration,
// default 120000 = Tether's default grace), PING_INTERVAL_MS / PING_TIMEOUT_MS (Socket.IO's
// defaults 25000 / 20000).
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || "127.0.0.1";
const GRACE_MS = Number(process.env.GRACE_MS || 120000);
const PING_INTERVAL_MS = Number(process.env.PING_INTERVAL_MS || 25000);
const PING_TIMEOUT_MS = Number(process.env.PING_TIMEOUT_MS || 20000);
const MAX_BODY = 1024 * 1024;

const counters = { published: 0, connections: 0, recovered: 0, disconnects: 0, joins: 0, upstream: 0 };

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function readJson(req, res, then) {
  const chunks = [];
  let size = 0;
  req.on("data", (c) => {
    size += c.length;
    if (size > MAX_BODY) {
      reply(res, 413, { error: "too-large" });
      req.destroy();
      return;
    }
    chunks.push(c);
  });
  req.on("end", () => {
    if (size > MAX_BODY) return;
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch (e) {
      return reply(res, 400, { error: "bad-request", message: "body is not JSON" });
    }
    then(body);
  });
}

function members(room) {
  const set = io.of("/").adapter.rooms.get(room);
  return set ? set.size : 0;
}

const httpServer = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (req.method === "GET" && url.pathname === "/health") return reply(res, 200, { ok: true });
  if (req.method === "GET" && url.pathname === "/stats") {
    if (url.searchParams.get("gc") === "1" && global.gc) global.gc();
    const adapter = io.of("/").adapter;
    return reply(res, 200, {
      ...process.memoryUsage(),
      engineClients: io.engine.clientsCount,
      sockets: io.of("/").sockets.size,
      recoverySessions: adapter.sessions ? adapter.sessions.size : 0,
      recoveryPackets: adapter.packets ? adapter.packets.length : 0,
      counters,
    });
  }
  if (req.method === "POST" && url.pathname === "/api/messages") {
    return readJson(req, res, (body) => {
      if (body === null || typeof body !== "object" || !Array.isArray(body.messages)) {
        return reply(res, 400, { error: "bad-request", message: "messages missing" });
      }
      if (!body.messages.every((entry) => entry !== null && typeof entry === "object")) {
        return reply(res, 400, { error: "bad-request", message: "every entry must be an object" });
      }
      const results = body.messages.map((entry) => {
        const target = String(entry.sessionId ?? entry.room);
        io.to(target).emit("msg", entry.data);
        counters.published++;
        return { members: members(target) };
      });
      reply(res, 202, { results });
    });
  }
  // /api/sessions/{sid}/messages and /api/rooms/{room}/messages
  if (req.method === "POST" && parts.length === 4 && parts[0] === "api" && parts[3] === "messages"
      && (parts[1] === "sessions" || parts[1] === "rooms")) {
    const target = parts[2];
    return readJson(req, res, (body) => {
      if (body === null || typeof body !== "object" || !("data" in body)) {
        return reply(res, 400, { error: "bad-request", message: "data missing" });
      }
      // A socket's id is a room it is always in; emitting to it stores the packet for recovery.
      io.to(target).emit("msg", body.data);
      counters.published++;
      reply(res, 202, { members: members(target) });
    });
  }
  reply(res, 404, { error: "not-found" });
});
httpServer.keepAliveTimeout = 120000;

const io = new Server(httpServer, {
  transports: ["websocket"],
  pingInterval: PING_INTERVAL_MS,
  pingTimeout: PING_TIMEOUT_MS,
  connectionStateRecovery: { maxDisconnectionDuration: GRACE_MS, skipMiddlewares: true },
});

io.on("connection", (socket) => {
  counters.connections++;
  if (socket.recovered) counters.recovered++;
  socket.on("join", (room, ack) => {
    socket.join(String(room));
    counters.joins++;
    if (typeof ack === "function") ack({ room: String(room) });
  });
  socket.on("send", (to, data, ack) => {
    const t = String(to);
    const target = t.startsWith("room:") ? t.slice(5) : t.startsWith("session:") ? t.slice(8) : t;
    io.to(target).emit("msg", data);
    counters.upstream++;
    if (typeof ack === "function") ack({ ok: true });
  });
  socket.on("disconnect", () => {
    counters.disconnects++;
  });
});

httpServer.listen(PORT, HOST, () => {
  console.log(`socket.io ${require("socket.io/package.json").version} listening on http://${HOST}:${PORT} grace=${GRACE_MS}ms node=${process.version}`);
});

function shutdown() {
  io.close();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
