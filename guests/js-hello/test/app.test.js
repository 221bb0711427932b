// The routes of src/app.js under Node, with the host functions replaced by recorders.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { handle, streamPlan, MAX_LINES, MAX_INTERVAL_MS } from '../src/app.js';

const invocation = {
  requestId: 'req-1',
  tenantId: 'tenant-a',
  extensionId: 'com.example.js-hello',
  installId: 'install-1',
  versionId: 'version-1',
  version: '0.1.0',
  contentHash: 'sha256:00',
  trigger: 'http',
  user: 'ada@example.com',
};

function host() {
  const lines = [];
  return {
    lines,
    invocation: () => invocation,
    log: (level, message, fields) => lines.push({ level, message, fields }),
  };
}

function get(path, method = 'GET') {
  return new Request(`http://extension${path}`, { method });
}

test('greets with the ids of the invocation and logs the name', async () => {
  const h = host();
  const response = await handle(get('/hello/Ada%20L.'), h);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'application/json');
  assert.deepEqual(await response.json(), {
    greeting: 'Hello, Ada L.!',
    tenant: 'tenant-a',
    extension: 'com.example.js-hello',
    version: '0.1.0',
    user: 'ada@example.com',
  });
  assert.deepEqual(h.lines, [{ level: 'info', message: 'greeting', fields: { name: 'Ada L.' } }]);
});

test('a call without a user answers user null', async () => {
  const h = { ...host(), invocation: () => ({ ...invocation, user: undefined }) };
  const body = await (await handle(get('/hello/x'), h)).json();
  assert.equal(body.user, null);
});

test('other paths, methods and undecodable names are refused', async () => {
  for (const path of ['/', '/hello', '/hello/', '/bye/x', '/hello/x/more', '/hello/x/stream/more']) {
    const response = await handle(get(path), host());
    assert.equal(response.status, 404, path);
    assert.deepEqual(await response.json(), { error: 'not_found' });
  }
  const post = await handle(get('/hello/x', 'POST'), host());
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET');
  const bad = await handle(get('/hello/%ff'), host());
  assert.equal(bad.status, 400);
});

test('stream plan has defaults and caps and refuses what is not a whole number', () => {
  const plan = (query) => streamPlan(new URLSearchParams(query));
  assert.deepEqual(plan(''), { lines: 5, intervalMs: 100 });
  assert.deepEqual(plan('lines=3&interval_ms=0'), { lines: 3, intervalMs: 0 });
  assert.deepEqual(plan('lines=1001&interval_ms=99999999999999999999999'), {
    lines: MAX_LINES,
    intervalMs: MAX_INTERVAL_MS,
  });
  for (const query of ['lines=-1', 'lines=', 'interval_ms=1.5']) {
    assert.ok(plan(query).refused, query);
  }
});

test('stream writes one line per step', async () => {
  const h = host();
  const response = await handle(get('/hello/Ada/stream?lines=3&interval_ms=0'), h);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'text/plain; charset=utf-8');
  assert.equal(await response.text(), 'Hello, Ada! (1/3)\nHello, Ada! (2/3)\nHello, Ada! (3/3)\n');
  assert.deepEqual(h.lines[0].fields, { name: 'Ada', lines: '3' });
  const refused = await handle(get('/hello/Ada/stream?lines=many'), host());
  assert.equal(refused.status, 400);
});
