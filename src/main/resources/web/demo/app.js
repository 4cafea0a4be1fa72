// Tether demo chat: plain ES module, no build step. Uses the JS SDK served by the gateway at /sdk/.
//
// Every message event the SDK emits is rendered as it arrives (no de-duplication, no sorting here),
// so what the page shows is exactly what the SDK delivered: the browser test relies on that.
//
// Query parameters: ?user=NAME&room=ROOM (room may repeat or be comma separated) connect at once.

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

const el = {
  badge: $('state-badge'),
  notice: $('notice'),
  loginForm: $('login-form'),
  userInput: $('user-input'),
  roomsInput: $('rooms-input'),
  connectButton: $('connect-button'),
  signedIn: $('signed-in'),
  signedInUser: $('signed-in-user'),
  roomList: $('room-list'),
  joinForm: $('join-form'),
  joinInput: $('join-input'),
  joinButton: $('join-button'),
  messages: $('messages'),
  composer: $('composer'),
  sendRoom: $('send-room'),
  messageInput: $('message-input'),
  sendButton: $('send-button'),
  state: $('state'),
  userId: $('user-id'),
  sessionId: $('session-id'),
  lastSeq: $('last-seq'),
  ackedSeq: $('acked-seq'),
  reconnectAttempts: $('reconnect-attempts'),
  rtt: $('rtt'),
  messageCount: $('message-count'),
  pendingSends: $('pending-sends'),
  resumeCount: $('resume-count'),
  lastResume: $('last-resume'),
  dropButton: $('drop-button'),
  logoutButton: $('logout-button'),
  eventLog: $('event-log'),
};

const MAX_EVENTS = 200;
const ACTIVE = new Set(['CONNECTING', 'CONNECTED', 'RECONNECTING']);

let TetherClient = null;
let client = null;
let pendingSends = 0;
let messageCount = 0;
let resumeCount = 0;
let lastShownSeq = 0; // highest seq shown for the current session (to flag anomalies for humans)
let rttMs = null;

// ---------------------------------------------------------------------------------------------
// Helpers

function roomNames(text) {
  return [...new Set(String(text || '')
    .split(',')
    .map((r) => r.trim())
    .filter((r) => r.length > 0 && r.length <= 128 && !/[\u0000-\u001f\u007f]/.test(r)))];
}

function currentRooms() {
  if (!client || client.rooms == null) return [];
  return Array.from(client.rooms).map(String).sort();
}

function showNotice(text) {
  el.notice.textContent = text;
  el.notice.hidden = !text;
}

function time(ts) {
  const d = ts ? new Date(ts) : new Date();
  return d.toLocaleTimeString([], { hour12: false });
}

function senderName(from) {
  if (typeof from !== 'string') return String(from);
  return from.startsWith('user:') ? from.slice(5) : from;
}

function messageText(data) {
  if (data && typeof data === 'object' && typeof data.text === 'string') return data.text;
  if (typeof data === 'string') return data;
  return JSON.stringify(data);
}

function logEvent(kind, text) {
  const li = document.createElement('li');
  li.dataset.testid = 'event';
  li.dataset.kind = kind;
  const t = document.createElement('time');
  t.textContent = time();
  const k = document.createElement('span');
  k.className = `kind kind-${kind}`;
  k.textContent = kind;
  li.append(t, ' ', k, ' ', text);
  el.eventLog.prepend(li);
  while (el.eventLog.children.length > MAX_EVENTS) el.eventLog.lastElementChild.remove();
}

function addDivider(text) {
  const li = document.createElement('li');
  li.className = 'divider';
  li.dataset.testid = 'divider';
  li.textContent = text;
  el.messages.append(li);
  scrollMessages();
}

function scrollMessages() {
  el.messages.scrollTop = el.messages.scrollHeight;
}

// ---------------------------------------------------------------------------------------------
// Rendering

function renderMessage(m) {
  const li = document.createElement('li');
  li.className = 'message';
  li.dataset.testid = 'message';
  li.dataset.seq = String(m.seq);
  li.dataset.from = String(m.from);
  if (m.room != null) li.dataset.room = String(m.room);
  if (client && m.from === `user:${client.userId}`) li.classList.add('mine');
  if (typeof m.seq === 'number' && m.seq <= lastShownSeq) {
    li.classList.add('anomaly'); // duplicate or out of order: should never happen
    li.title = `seq ${m.seq} arrived after seq ${lastShownSeq}`;
  }
  if (typeof m.seq === 'number') lastShownSeq = Math.max(lastShownSeq, m.seq);

  const seq = document.createElement('span');
  seq.className = 'seq';
  seq.dataset.testid = 'message-seq';
  seq.textContent = `#${m.seq}`;
  const where = document.createElement('span');
  where.className = 'room';
  where.textContent = m.room != null ? m.room : 'direct';
  const from = document.createElement('span');
  from.className = 'from';
  from.dataset.testid = 'message-from';
  from.textContent = senderName(m.from);
  const text = document.createElement('span');
  text.className = 'text';
  text.dataset.testid = 'message-text';
  text.textContent = messageText(m.data);
  const ts = document.createElement('time');
  ts.textContent = time(m.ts);
  li.append(seq, where, from, text, ts);

  const atBottom = el.messages.scrollHeight - el.messages.scrollTop - el.messages.clientHeight < 40;
  el.messages.append(li);
  messageCount++;
  if (atBottom) scrollMessages();
}

function renderRooms() {
  const rooms = currentRooms();
  const active = client && ACTIVE.has(client.state);

  el.roomList.replaceChildren(...rooms.map((room) => {
    const li = document.createElement('li');
    li.className = 'chip';
    li.dataset.testid = 'room';
    li.dataset.room = room;
    const name = document.createElement('span');
    name.textContent = room;
    const leave = document.createElement('button');
    leave.type = 'button';
    leave.className = 'leave';
    leave.dataset.testid = 'leave-button';
    leave.dataset.room = room;
    leave.title = `Leave ${room}`;
    leave.textContent = '×';
    leave.disabled = !active;
    leave.addEventListener('click', () => leaveRoom(room));
    li.append(name, leave);
    return li;
  }));
  if (rooms.length === 0) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = client ? 'none — join one' : '–';
    el.roomList.append(li);
  }

  const selected = el.sendRoom.value;
  const options = rooms.map((room) => {
    const o = document.createElement('option');
    o.value = room;
    o.textContent = room;
    return o;
  });
  const key = rooms.join('\u0000');
  if (el.sendRoom.dataset.rooms !== key) {
    el.sendRoom.replaceChildren(...options);
    el.sendRoom.dataset.rooms = key;
    if (rooms.includes(selected)) el.sendRoom.value = selected;
  }
}

function renderPanel() {
  const state = client ? client.state : 'INIT';
  el.state.textContent = state;
  el.badge.textContent = state;
  el.badge.dataset.state = state;
  document.body.dataset.state = state;
  el.userId.textContent = client?.userId ?? '–';
  el.sessionId.textContent = client?.sessionId ?? '–';
  el.lastSeq.textContent = String(client?.lastSeq ?? 0);
  el.ackedSeq.textContent = String(client?.ackedSeq ?? 0);
  el.reconnectAttempts.textContent = String(client?.reconnectAttempts ?? 0);
  const rtt = client?.rttMs ?? rttMs;
  el.rtt.textContent = rtt == null ? '–' : `${Math.round(rtt)} ms`;
  el.messageCount.textContent = String(messageCount);
  el.pendingSends.textContent = String(pendingSends);
  el.resumeCount.textContent = String(resumeCount);

  const active = client && ACTIVE.has(state);
  const hasRooms = currentRooms().length > 0;
  el.loginForm.hidden = !!active;
  el.signedIn.hidden = !active;
  el.signedInUser.textContent = client?.userId ?? client?.user ?? '';
  el.joinButton.disabled = !active;
  el.sendRoom.disabled = !active || !hasRooms;
  el.messageInput.disabled = !active || !hasRooms;
  el.sendButton.disabled = !active || !hasRooms;
  el.dropButton.disabled = state !== 'CONNECTED';
  el.logoutButton.disabled = !active;
  renderRooms();
}

// ---------------------------------------------------------------------------------------------
// Actions

async function connect(user, rooms) {
  if (!TetherClient) return;
  if (client && ACTIVE.has(client.state)) return;
  showNotice('');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const c = new TetherClient({
    url: `${scheme}://${location.host}/ws`,
    user,
    reconnect: { initialDelayMs: 250, maxDelayMs: 4000, multiplier: 2, maxAttempts: Infinity },
    ack: { everyMessages: 5, everyMs: 500 },
  });
  client = c;
  lastShownSeq = 0;
  rttMs = null;
  if (el.messages.children.length > 0) addDivider(`new connection as ${user}`);
  wire(c);
  renderPanel();
  try {
    await c.connect();
  } catch (e) {
    if (client === c) {
      showNotice(`Could not connect: ${e?.message ?? e}`);
      logEvent('error', `connect failed: ${e?.message ?? e}`);
    }
    renderPanel();
    return;
  }
  logEvent('connected', `session ${c.sessionId} for ${c.userId}`);
  const have = new Set(currentRooms());
  for (const room of rooms) {
    if (!have.has(room)) await joinRoom(room);
  }
  if (rooms.length > 0) el.sendRoom.value = rooms[0];
  renderPanel();
  el.messageInput.focus();
}

function wire(c) {
  const mine = (fn) => (arg) => { if (client === c) fn(arg); renderPanel(); };
  c.on('state', mine(({ from, to }) => logEvent('state', `${from} → ${to}`)));
  c.on('message', mine((m) => renderMessage(m)));
  c.on('resumed', mine(({ replay, lost }) => {
    resumeCount++;
    el.lastResume.textContent = `replay ${replay}, lost ${lost}`;
    logEvent('resumed', `same session, ${replay} replayed, ${lost} lost`);
  }));
  c.on('session-lost', mine(({ reason, lost, sessionId }) => {
    lastShownSeq = 0;
    addDivider(`session lost (${reason}); new session ${sessionId}`);
    logEvent('session-lost', `reason ${reason}, ${lost} lost, new session ${sessionId}`);
  }));
  c.on('kicked', mine(({ reason }) => {
    showNotice(`The server ended this session (${reason}).`);
    logEvent('kicked', reason);
  }));
  c.on('error', mine((e) => logEvent('error', e?.code ? `${e.code}: ${e.message}` : String(e?.message ?? e))));
  c.on('pong', mine(({ rttMs: r }) => { rttMs = r; }));
  c.on('reconnecting', mine(({ attempt, delayMs }) => logEvent('reconnecting', `attempt ${attempt} in ${Math.round(delayMs)} ms`)));
}

async function joinRoom(room) {
  const c = client;
  if (!c) return;
  try {
    await c.join(room);
    logEvent('joined', room);
  } catch (e) {
    logEvent('error', `join ${room}: ${e?.message ?? e}`);
  }
  renderPanel();
}

async function leaveRoom(room) {
  const c = client;
  if (!c) return;
  try {
    await c.leave(room);
    logEvent('left', room);
  } catch (e) {
    logEvent('error', `leave ${room}: ${e?.message ?? e}`);
  }
  renderPanel();
}

async function sendMessage(room, text) {
  const c = client;
  if (!c) return;
  pendingSends++;
  renderPanel();
  try {
    await c.send(`room:${room}`, { text });
  } catch (e) {
    logEvent('error', `send to ${room}: ${e?.message ?? e}`);
  } finally {
    pendingSends--;
    renderPanel();
  }
}

async function logout() {
  const c = client;
  if (!c) return;
  el.logoutButton.disabled = true;
  try {
    await c.logout();
    logEvent('logout', 'session ended');
  } catch (e) {
    logEvent('error', `logout: ${e?.message ?? e}`);
  }
  addDivider('logged out');
  renderPanel();
}

// ---------------------------------------------------------------------------------------------
// Wiring the DOM

el.loginForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const user = el.userInput.value.trim();
  if (!user) return;
  connect(user, roomNames(el.roomsInput.value));
});

el.joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const [room] = roomNames(el.joinInput.value);
  if (!room) return;
  el.joinInput.value = '';
  joinRoom(room).then(() => { el.sendRoom.value = room; });
});

el.composer.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = el.messageInput.value;
  const room = el.sendRoom.value;
  if (!text.trim() || !room) return;
  el.messageInput.value = '';
  sendMessage(room, text);
});

el.dropButton.addEventListener('click', () => {
  if (!client) return;
  logEvent('drop', 'socket dropped by hand');
  client.dropConnection();
});

el.logoutButton.addEventListener('click', () => logout());

// Keep the counters live (lastSeq/ackedSeq/rtt change without an event of their own).
setInterval(renderPanel, 250);

// ---------------------------------------------------------------------------------------------
// Start

try {
  ({ TetherClient } = await import('/sdk/tether.js'));
} catch (e) {
  showNotice('The Tether SDK (/sdk/tether.js) could not be loaded: build it with `mvn package` (clients/js).');
  console.error(e);
}
renderPanel();
document.body.dataset.ready = TetherClient ? 'true' : 'false';

const params = new URLSearchParams(location.search);
const qUser = (params.get('user') || '').trim();
const qRooms = roomNames(params.getAll('room').join(','));
if (qUser) el.userInput.value = qUser;
if (params.has('room')) el.roomsInput.value = qRooms.join(', ');
if (qUser && TetherClient) connect(qUser, qRooms);
