// End-to-end test of the demo page (/) in a real browser: the packaged gateway (target/tether.jar,
// with the JS SDK inside), Debian's headless Chromium driven by playwright-core.
//
// alice and bob chat in room "lobby"; alice loses her connection (1: her "Drop socket" button,
// 2: her browser goes offline for a few seconds) while bob sends 10 messages; alice's page must
// resume the same session by itself and then show each of bob's messages exactly once, in seq
// order. Everything is checked through the DOM (plus the gateway's session API).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const JAR = process.env.TETHER_JAR ?? path.join(ROOT, 'target', 'tether.jar');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SCREENSHOT = path.join(ROOT, 'target', 'browser-test.png');
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const ROOM = 'lobby';
const BURST = 10;

// ---------------------------------------------------------------------------------------------
// The gateway

let gateway; // { proc, baseUrl, output() }

async function startGateway() {
  assert.ok(existsSync(JAR), `${JAR} is missing: run \`mvn -B -q -DskipTests package\` in ${ROOT} first`);
  const proc = spawn('java', ['-jar', JAR], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      TETHER_HOST: '127.0.0.1',
      TETHER_PORT: '0',
      TETHER_CLUSTER_HOST: '127.0.0.1',
      TETHER_CLUSTER_PORT: '0',
      // A dead link (the offline variant) is noticed within seconds, not 45 s.
      TETHER_HEARTBEAT_INTERVAL: '1s',
      TETHER_HEARTBEAT_TIMEOUT: '4s',
    },
  });
  let log = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start within 60 s:\n${log}`)), 60_000);
    const onData = (chunk) => {
      log += chunk;
      const m = /Tether listening on http:\/\/[^\s]*:(\d+) \(/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stdout.setEncoding('utf8').on('data', onData);
    proc.stderr.setEncoding('utf8').on('data', (c) => { log += c; });
    proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`gateway exited (${code}):\n${log}`)); });
  });
  proc.stdout.on('data', (c) => { log += c; });
  return { proc, baseUrl: `http://127.0.0.1:${port}`, output: () => log };
}

async function stopGateway(g) {
  if (!g || g.proc.exitCode !== null) return;
  const exited = new Promise((resolve) => g.proc.once('exit', resolve));
  g.proc.kill('SIGTERM'); // CoordinatedShutdown: unbind, stop sessions, close the embedded database
  const timeout = new AbortController();
  const done = await Promise.race([
    exited.then(() => true),
    sleep(15_000, false, { signal: timeout.signal }).catch(() => true),
  ]);
  timeout.abort();
  if (!done) {
    g.proc.kill('SIGKILL');
    await exited;
  }
}

async function api(pathname) {
  const res = await fetch(`${gateway.baseUrl}${pathname}`);
  assert.equal(res.status, 200, `GET ${pathname} answered ${res.status}`);
  return res.json();
}

// ---------------------------------------------------------------------------------------------
// Browsers: one Chromium per user (own fresh profile), so going offline affects alice alone.

const browsers = [];
const profiles = [];

async function openChat(user) {
  const profile = mkdtempSync(path.join(tmpdir(), `tether-browser-${user}-`));
  profiles.push(profile);
  const context = await chromium.launchPersistentContext(profile, {
    headless: true,
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    viewport: { width: 1200, height: 860 },
  });
  browsers.push(context);
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => console.error(`[${user}] page error:`, e));
  await page.goto(`${gateway.baseUrl}/?user=${encodeURIComponent(user)}&room=${ROOM}`);
  await waitForText(page, 'state', 'CONNECTED', 15_000);
  await page.locator(`[data-testid="room"][data-room="${ROOM}"]`).waitFor({ timeout: 10_000 });
  return page;
}

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);
const textOf = (page, id) => byId(page, id).first().textContent();

async function waitForText(page, id, expected, timeout = 10_000) {
  await page.waitForFunction(
    ([id, expected]) => document.querySelector(`[data-testid="${id}"]`)?.textContent === expected,
    [id, expected],
    { timeout },
  );
}

/** Every message line on the page, in DOM order. */
function messagesOf(page) {
  return page.$$eval('[data-testid="message"]', (lines) =>
    lines.map((li) => ({
      seq: Number(li.dataset.seq),
      from: li.dataset.from,
      room: li.dataset.room,
      text: li.querySelector('[data-testid="message-text"]').textContent,
      seqLabel: li.querySelector('[data-testid="message-seq"]').textContent,
    })));
}

async function waitForTexts(page, texts, timeout) {
  await page.waitForFunction(
    (texts) => {
      const shown = new Set([...document.querySelectorAll('[data-testid="message-text"]')].map((e) => e.textContent));
      return texts.every((t) => shown.has(t));
    },
    texts,
    { timeout, polling: 100 },
  );
}

/** Types a message into the composer and presses Send (the SDK sends it, queued if need be). */
async function say(page, text) {
  await byId(page, 'message-input').fill(text);
  await byId(page, 'send-button').click();
}

/** bob's burst: BURST distinct texts, sent through his page one after the other. */
async function burst(page, tag) {
  const texts = Array.from({ length: BURST }, (_, i) => `bob ${tag} ${i + 1}/${BURST}`);
  for (const text of texts) {
    await say(page, text);
    await sleep(40);
  }
  return texts;
}

/**
 * The heart of it: the page shows strictly increasing, gap-free seqs (every message to alice's
 * session is a lobby message, and nothing may be lost), each of `texts` exactly once and in the
 * order bob sent them, and the panel agrees with the DOM.
 */
async function assertExactlyOnceInOrder(page, texts, who) {
  // Give a late duplicate (replay racing live delivery) the chance to show up before judging.
  await sleep(700);
  const msgs = await messagesOf(page);
  const seqs = msgs.map((m) => m.seq);
  for (let i = 0; i < msgs.length; i++) {
    assert.ok(Number.isInteger(seqs[i]) && seqs[i] > 0, `${who}: bad seq ${seqs[i]}`);
    assert.equal(msgs[i].seqLabel, `#${seqs[i]}`, `${who}: the line shows its seq`);
    assert.equal(msgs[i].room, ROOM);
    if (i > 0) assert.equal(seqs[i], seqs[i - 1] + 1, `${who}: seqs must be consecutive and increasing, got ${seqs.join(',')}`);
  }
  const positions = texts.map((t) => {
    const hits = msgs.filter((m) => m.text === t);
    assert.equal(hits.length, 1, `${who}: "${t}" must be shown exactly once, shown ${hits.length} times`);
    assert.equal(hits[0].from, 'user:bob');
    return hits[0].seq;
  });
  for (let i = 1; i < positions.length; i++) {
    assert.ok(positions[i] > positions[i - 1], `${who}: bob's messages out of order: ${positions.join(',')}`);
  }
  assert.equal(await page.locator('[data-testid="message"].anomaly').count(), 0, `${who}: page flagged a duplicate/out-of-order seq`);
  assert.equal(await textOf(page, 'last-seq'), String(Math.max(...seqs)), `${who}: panel lastSeq = highest seq shown`);
  return msgs;
}

let screenshotTaken = false;

async function screenshot(page) {
  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  screenshotTaken = true;
}

async function eventKinds(page) {
  return page.$$eval('[data-testid="event"]', (lines) => lines.map((li) => li.dataset.kind));
}

// ---------------------------------------------------------------------------------------------

describe('demo page: sessions survive a lost connection', { timeout: 120_000 }, () => {
  let alice;
  let bob;
  let aliceSession;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
    gateway = await startGateway();
    const sdk = await fetch(`${gateway.baseUrl}/sdk/tether.js`);
    assert.equal(sdk.status, 200, 'the jar must serve the SDK build at /sdk/tether.js (build clients/js into it)');
    [alice, bob] = await Promise.all([openChat('alice'), openChat('bob')]);
    aliceSession = await textOf(alice, 'session-id');
    assert.match(aliceSession, /^s_/);
  });

  after(async () => {
    try {
      if (!screenshotTaken && alice && !alice.isClosed()) await screenshot(alice); // to see what went wrong
    } finally {
      await Promise.allSettled(browsers.map((b) => b.close()));
      await stopGateway(gateway);
      for (const p of profiles) rmSync(p, { recursive: true, force: true });
    }
  });

  test('alice and bob chat in the lobby', async () => {
    assert.equal(await textOf(alice, 'user-id'), 'alice');
    assert.equal(await textOf(bob, 'user-id'), 'bob');
    assert.equal(await byId(alice, 'login-form').isVisible(), false, 'no login form while signed in');
    assert.equal(await textOf(alice, 'signed-in-user'), 'alice');
    await say(alice, 'hi bob, alice here');
    await waitForTexts(bob, ['hi bob, alice here'], 10_000);
    await say(bob, 'hello alice!');
    await waitForTexts(alice, ['hi bob, alice here', 'hello alice!'], 10_000);
    for (const page of [alice, bob]) {
      const msgs = await messagesOf(page);
      assert.deepEqual(msgs.map((m) => m.text), ['hi bob, alice here', 'hello alice!']);
      assert.deepEqual(msgs.map((m) => m.from), ['user:alice', 'user:bob']);
      assert.deepEqual(msgs.map((m) => m.seq), [1, 2]);
    }
    // the heartbeat round trip and the lazy ack show up in the panel
    await alice.waitForFunction(() => /^\d+ ms$/.test(document.querySelector('[data-testid="rtt"]').textContent), null, { timeout: 10_000 });
    await waitForText(alice, 'acked-seq', '2', 10_000);
  });

  test('"Drop socket": alice resumes by herself and sees every message bob sent meanwhile, once, in order', async () => {
    const resumesBefore = Number(await textOf(alice, 'resume-count'));
    await byId(alice, 'drop-button').click();
    const texts = await burst(bob, 'drop'); // races alice's reconnect, replay and live delivery
    await waitForTexts(alice, texts, 20_000);
    await waitForText(alice, 'state', 'CONNECTED', 10_000);

    assert.equal(await textOf(alice, 'session-id'), aliceSession, 'same session after the drop');
    assert.equal(Number(await textOf(alice, 'resume-count')), resumesBefore + 1);
    const kinds = await eventKinds(alice);
    assert.ok(kinds.includes('resumed'), `a resumed event is logged: ${kinds}`);
    assert.ok(!kinds.includes('session-lost'), 'the session was not lost');
    const msgs = await assertExactlyOnceInOrder(alice, texts, 'alice');
    await assertExactlyOnceInOrder(bob, texts, 'bob');

    // the gateway agrees: the session is attached again, acked up to what the page shows
    const last = msgs.at(-1).seq;
    await waitForText(alice, 'acked-seq', String(last), 10_000);
    const state = await api(`/api/sessions/${aliceSession}`);
    assert.equal(state.state, 'attached');
    assert.equal(state.lastSeq, last);
    assert.ok(state.resumes >= 1, `resumes ${state.resumes}`);
  });

  test('offline for a few seconds: alice resumes when back online and sees the missed messages once, in order', async () => {
    const resumesBefore = Number(await textOf(alice, 'resume-count'));
    const shownBefore = (await messagesOf(alice)).length;
    await alice.context().setOffline(true);
    // alice's client notices the dead link (socket error or heartbeat silence) and starts retrying
    await alice.waitForFunction(
      () => document.querySelector('[data-testid="state"]').textContent !== 'CONNECTED',
      null,
      { timeout: 15_000, polling: 100 },
    );
    const texts = await burst(bob, 'offline');
    await waitForTexts(bob, texts, 10_000);
    const whileOffline = await messagesOf(alice);
    assert.ok(
      texts.every((t) => !whileOffline.some((m) => m.text === t)),
      'nothing of the burst reaches alice while she is offline',
    );
    assert.equal(whileOffline.length, shownBefore);
    await sleep(2_000);
    assert.notEqual(await textOf(alice, 'state'), 'CONNECTED', 'alice cannot reconnect while offline');
    assert.ok(Number(await textOf(alice, 'reconnect-attempts')) >= 1, 'the panel counts the reconnect attempts');

    await alice.context().setOffline(false);
    await waitForTexts(alice, texts, 25_000);
    await waitForText(alice, 'state', 'CONNECTED', 10_000);

    assert.equal(await textOf(alice, 'session-id'), aliceSession, 'same session after going offline');
    assert.equal(Number(await textOf(alice, 'resume-count')), resumesBefore + 1);
    const lastResume = await textOf(alice, 'last-resume');
    const replay = Number(/replay (\d+)/.exec(lastResume)?.[1]);
    assert.ok(replay >= BURST, `the burst came as replay after the resume: ${lastResume}`);
    assert.match(lastResume, /lost 0$/);
    assert.ok(!(await eventKinds(alice)).includes('session-lost'));
    const msgs = await assertExactlyOnceInOrder(alice, texts, 'alice');
    // everything of the first test is still there, followed by the burst
    assert.equal(msgs.length, shownBefore + BURST);
    await assertExactlyOnceInOrder(bob, texts, 'bob');
    await waitForText(alice, 'acked-seq', String(msgs.at(-1).seq), 10_000);
    await screenshot(alice); // the page right after two resumes: what a person would see
  });

  test('"Log out" ends the session for good', async () => {
    await byId(alice, 'logout-button').click();
    await waitForText(alice, 'state', 'CLOSED', 10_000);
    assert.equal(await byId(alice, 'login-form').isVisible(), true, 'the login form is back');
    const state = await api(`/api/sessions/${aliceSession}`).catch(() => null);
    // an ended session is erased: the API answers 404, or reports it ended
    assert.ok(state === null || state.state === 'ended', `session after logout: ${JSON.stringify(state)}`);
    // bob's messages no longer reach alice's page
    const shown = (await messagesOf(alice)).length;
    await say(bob, 'anyone there?');
    await waitForTexts(bob, ['anyone there?'], 10_000);
    await sleep(500);
    assert.equal((await messagesOf(alice)).length, shown);
  });
});
