import assert from "node:assert/strict";
import { test } from "node:test";

import { connect } from "../src/frame.js";
import { buildExtUiSrc, createHostBridge, sandboxAttribute } from "../src/host.js";
import { isSafePath, parseFrameMessage, parseHostMessage } from "../src/protocol.js";

const RUNNER = "https://ui.example.com";
const HOST = "https://app.example.com";

/** A window that records what is posted to it. */
class FakeWindow {
  posted: Array<{ message: any; origin: string }> = [];
  postMessage(message: unknown, origin: string) {
    this.posted.push({ message, origin });
  }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

/** A host bridge for a fake iframe, with a fetch that records its calls. */
function host() {
  const frame = new FakeWindow();
  const calls: Array<{ url: string; init: RequestInit }> = [];
  const resized: number[] = [];
  const bridge = createHostBridge({
    frame,
    frameOrigin: RUNNER,
    gateway: "https://api.example.com/",
    extensionId: "com.example.widget",
    bootstrap: () => ({ theme: "dark", locale: "en-GB", path: "/items", token: "t0k" }),
    token: () => "caller-token",
    fetch: async (url, init) => {
      calls.push({ url: String(url), init: init ?? {} });
      return new Response('{"ok":true}', { status: 201, headers: { "content-type": "application/json" } });
    },
    onResize: (height) => resized.push(height),
  });
  return { frame, calls, resized, bridge };
}

test("the iframe URL names the extension, the content hash and the path", () => {
  const src = buildExtUiSrc({
    publicBase: "https://ui.example.com/",
    extensionId: "com.example.widget",
    contentHash: "sha256:abc",
    path: "/pages/index file.html",
  });
  assert.equal(src, "https://ui.example.com/ext-ui/com.example.widget/sha256:abc/pages/index%20file.html");
});

test("the sandbox allows scripts and only the permitted extras", () => {
  assert.equal(sandboxAttribute(), "allow-scripts");
  assert.equal(
    sandboxAttribute(["allow-forms", "allow-same-origin", "allow-top-navigation", "allow-forms"]),
    "allow-scripts allow-forms",
  );
});

test("paths outside the extension are refused", () => {
  for (const path of ["/items", "/items?x=1", "/a/b%20c"]) {
    assert.ok(isSafePath(path), path);
  }
  for (const path of ["items", "//evil.example/x", "/../admin", "/a/%2e%2e/b", "/a\\b", "/a%2fb", "/%zz", "/a\u0000"]) {
    assert.ok(!isSafePath(path), path);
  }
});

test("malformed and unknown messages are not messages", () => {
  for (const data of [
    null,
    "ready",
    { v: 2, id: "1", type: "ready" },
    { v: 1, type: "ready" },
    { v: 1, id: "1", type: "teleport" },
    { v: 1, id: "1", type: "resize", height: -1 },
    { v: 1, id: "1", type: "request", method: "TRACE", path: "/x" },
    { v: 1, id: "1", type: "request", method: "GET", path: "https://evil.example/" },
    { v: 1, id: "1", type: "request", method: "GET", path: "/x", headers: { a: 1 } },
  ]) {
    assert.equal(parseFrameMessage(data), null, JSON.stringify(data));
  }
  assert.equal(parseHostMessage({ v: 1, id: "1", type: "response", re: "2", status: "200" }), null);
});

test("the host bootstraps its iframe's window", async () => {
  const { frame, bridge } = host();
  bridge.handle({ source: frame, origin: RUNNER, data: { v: 1, id: "r", type: "ready" } });
  await tick();
  assert.equal(frame.posted.length, 1);
  const { message, origin } = frame.posted[0];
  // The sandboxed document's origin is opaque: only `*` reaches it, in that window alone.
  assert.equal(origin, "*");
  assert.equal(message.type, "bootstrap");
  assert.equal(message.theme, "dark");
  assert.equal(message.path, "/items");
  assert.equal(message.token, "t0k");
});

test("the host ignores other windows and other origins", async () => {
  const { frame, calls, resized, bridge } = host();
  const request = { v: 1, id: "q", type: "request", method: "GET", path: "/items" };
  bridge.handle({ source: new FakeWindow(), origin: RUNNER, data: request });
  bridge.handle({ source: frame, origin: "https://evil.example", data: request });
  bridge.handle({ source: frame, origin: RUNNER, data: { v: 1, id: "z", type: "resize", height: "9" } });
  // The opaque origin of the sandboxed iframe is accepted from its own window only.
  bridge.handle({ source: new FakeWindow(), origin: "null", data: request });
  await tick();
  assert.equal(calls.length, 0);
  assert.equal(frame.posted.length, 0);
  assert.deepEqual(resized, []);
});

test("the host calls the API with its own credentials and relays the answer", async () => {
  const { frame, calls, bridge } = host();
  bridge.handle({
    source: frame,
    origin: "null",
    data: {
      v: 1,
      id: "q1",
      type: "request",
      method: "post",
      path: "/items",
      headers: { "content-type": "application/json", Authorization: "Bearer forged" },
      body: '{"title":"a"}',
    },
  });
  await tick();
  await tick();
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, "https://api.example.com/api/ext/com.example.widget/items");
  assert.equal(calls[0].init.method, "POST");
  const headers = calls[0].init.headers as Record<string, string>;
  assert.equal(headers.authorization, "Bearer caller-token");
  assert.equal(headers.Authorization, undefined);
  assert.equal(calls[0].init.body, '{"title":"a"}');
  const reply = frame.posted[0];
  assert.equal(reply.origin, "*");
  assert.equal(reply.message.type, "response");
  assert.equal(reply.message.re, "q1");
  assert.equal(reply.message.status, 201);
  assert.equal(reply.message.body, '{"ok":true}');
});

/** An iframe bridge whose parent is a fake window; `deliver` plays the host's messages. */
function frame() {
  const parent = new FakeWindow();
  let handler: (event: { source: unknown; origin: string; data: unknown }) => void = () => {};
  const bridge = connect({ parent, listen: (h) => (handler = h) });
  return { parent, bridge, deliver: (event: { source: unknown; origin: string; data: unknown }) => handler(event) };
}

test("the iframe learns its host from the bootstrap and answers to it alone", async () => {
  const { parent, bridge, deliver } = frame();
  const ready = bridge.ready();
  assert.equal(parent.posted[0].message.type, "ready");
  const pending = bridge.request("GET", "/items");
  // Nothing but `ready` leaves before the bootstrap.
  assert.equal(parent.posted.length, 1);
  // A bootstrap from another window is ignored.
  deliver({ source: new FakeWindow(), origin: "https://evil.example", data: { v: 1, id: "b", type: "bootstrap", theme: "x", locale: "x", path: "/" } });
  deliver({ source: parent, origin: HOST, data: { v: 1, id: "b", type: "bootstrap", theme: "dark", locale: "fr", path: "/items" } });
  const bootstrap = await ready;
  assert.deepEqual(bootstrap, { theme: "dark", locale: "fr", path: "/items", token: undefined });
  const request = parent.posted[1];
  assert.equal(request.origin, HOST);
  assert.equal(request.message.type, "request");
  // An answer from another origin is ignored; the host's is taken.
  deliver({ source: parent, origin: "https://evil.example", data: { v: 1, id: "x", type: "response", re: request.message.id, status: 500, headers: {}, body: "forged" } });
  deliver({ source: parent, origin: HOST, data: { v: 1, id: "y", type: "response", re: request.message.id, status: 200, headers: {}, body: "[]" } });
  assert.deepEqual(await pending, { status: 200, headers: {}, body: "[]" });
});

test("a failed host call rejects the request", async () => {
  const { parent, bridge, deliver } = frame();
  void bridge.ready();
  deliver({ source: parent, origin: HOST, data: { v: 1, id: "b", type: "bootstrap", theme: "l", locale: "en", path: "/" } });
  const pending = bridge.request("DELETE", "/items/1");
  const id = parent.posted[1].message.id;
  deliver({ source: parent, origin: HOST, data: { v: 1, id: "e", type: "error", re: id, message: "network down" } });
  await assert.rejects(pending, /network down/);
});
