// The browser suite: `palisade up --demo` on free loopback ports, and Debian's Chromium
// (never a downloaded browser) driven by playwright-core through the demo host page that
// mounts the ticket widget's UI with the bridge.
//
// PALISADE_BIN names the `palisade` binary (default: the workspace's debug build);
// screenshots go to PALISADE_BROWSER_OUTPUT (default: ./output).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const root = resolve(import.meta.dirname, "../..");
const binary =
  process.env.PALISADE_BIN ??
  join(process.env.CARGO_TARGET_DIR ?? join(root, "target"), "debug", "palisade");
const output = process.env.PALISADE_BROWSER_OUTPUT ?? join(import.meta.dirname, "output");
const WIDGET = "com.example.ticket-widget";

/** A free loopback port. */
function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

let platform;
let browser;
let gateway;
let dataDir;
let log = "";

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "palisade-browser-"));
  gateway = `127.0.0.1:${await freePort()}`;
  const runner = `127.0.0.1:${await freePort()}`;
  platform = spawn(
    binary,
    ["--data-dir", dataDir, "up", "--demo", "--gateway-addr", gateway, "--runner-addr", runner],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
  );
  platform.stdout.on("data", (chunk) => (log += chunk));
  platform.stderr.on("data", (chunk) => (log += chunk));
  // Building the samples may take minutes on a cold machine.
  const deadline = Date.now() + 15 * 60 * 1000;
  while (!log.includes("Ctrl-C stops")) {
    if (platform.exitCode !== null || Date.now() > deadline) {
      throw new Error(`palisade up --demo did not come up:\n${log}`);
    }
    await new Promise((done) => setTimeout(done, 250));
  }
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  mkdirSync(output, { recursive: true });
});

after(async () => {
  await browser?.close();
  platform?.kill("SIGINT");
  if (dataDir) {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

const hostPage = () => `http://${gateway}/demo/${WIDGET}`;

/** The widget's tickets, read through the host page's own API call. */
async function tickets(page) {
  return page.evaluate(async (widget) => {
    const config = JSON.parse(document.getElementById("config").textContent);
    const answer = await fetch(`/api/ext/${widget}/items`, {
      headers: { authorization: `Bearer ${config.token}` },
    });
    return (await answer.json()).items.map((item) => item.title);
  }, WIDGET);
}

test("a ticket added through the UI is listed after a reload", async () => {
  const page = await browser.newPage();
  await page.goto(hostPage());
  const frame = page.frameLocator("iframe");
  await frame.locator("body[data-ready]").waitFor();
  await frame.locator("#title").fill("Printer jam");
  await frame.locator("#add").click();
  await frame.locator("li", { hasText: "Printer jam" }).waitFor();
  await page.reload();
  await page.frameLocator("iframe").locator("li", { hasText: "Printer jam" }).waitFor();
  assert.ok((await tickets(page)).includes("Printer jam"));
  // The host resized the iframe to the UI's height.
  const height = await page.locator("iframe").evaluate((iframe) => iframe.style.height);
  assert.match(height, /^\d+px$/);
  await page.screenshot({ path: join(output, "ticket-widget.png"), fullPage: true });
  await page.close();
});

test("a message from another window or origin is ignored", async () => {
  const page = await browser.newPage();
  await page.goto(hostPage());
  await page.frameLocator("iframe").locator("body[data-ready]").waitFor();
  const before = await tickets(page);
  // A frame of another (opaque) origin asks the host to add a ticket, as the widget would.
  await page.evaluate(() => {
    const forger = document.createElement("iframe");
    forger.srcdoc = `<script>
      parent.postMessage({ v: 1, id: "forged", type: "request", method: "POST",
        path: "/items", body: JSON.stringify({ title: "forged" }) }, "*");
    </script>`;
    document.body.appendChild(forger);
  });
  await page.waitForTimeout(1000);
  assert.deepEqual(await tickets(page), before);
  await page.close();
});

test("the UI cannot read the host page's cookies or DOM", async () => {
  const page = await browser.newPage();
  await page.goto(hostPage());
  await page.evaluate(() => {
    document.cookie = "host_session=secret; path=/";
  });
  await page.frameLocator("iframe").locator("body[data-ready]").waitFor();
  const widget = page.frames().find((frame) => frame.url().includes("/ext-ui/"));
  assert.ok(widget, "the widget's frame");
  const seen = await widget.evaluate(() => {
    const attempt = (read) => {
      try {
        return String(read());
      } catch (error) {
        return `blocked: ${error.name}`;
      }
    };
    return {
      parentDom: attempt(() => parent.document.title),
      cookies: attempt(() => document.cookie),
      origin: self.origin,
    };
  });
  assert.match(seen.parentDom, /^blocked/);
  assert.doesNotMatch(seen.cookies, /host_session/);
  assert.equal(seen.origin, "null");
  await page.close();
});

test("a page of another origin cannot frame the UI", async () => {
  const page = await browser.newPage();
  // The same host page under another host name is another origin, not in frame-ancestors.
  await page.goto(hostPage().replace("127.0.0.1", "localhost"));
  await page.waitForTimeout(1500);
  const widget = page.frames().find((frame) => frame.url().includes("/ext-ui/"));
  const rendered = widget ? await widget.locator("body[data-ready]").count() : 0;
  assert.equal(rendered, 0, "the UI rendered inside a page it does not allow");
  await page.close();
});
