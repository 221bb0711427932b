import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

// The sample extension that ships the bridge's iframe side, and the demo host page of
// `palisade up`, carry it as this package builds it (the test runs on the build output, in
// dist/test/).
const built = new URL("../src/", import.meta.url);
const copies: Array<[URL, string[]]> = [
  [new URL("../../../../guests/ticket-widget/ui/vendor/", import.meta.url), ["frame.js", "protocol.js"]],
  [new URL("../../../../host/cli/src/commands/demo/", import.meta.url), ["host.js", "protocol.js"]],
];

test("vendored copies of the bridge are the current build", () => {
  for (const [dir, files] of copies) {
    for (const file of files) {
      assert.equal(
        readFileSync(new URL(file, dir), "utf8"),
        readFileSync(new URL(file, built), "utf8"),
        `${new URL(file, dir).pathname} differs from sdk/ui's build: copy dist/src/${file} there`,
      );
    }
  }
});
