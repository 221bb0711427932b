/**
 * `@palisade/ui`: the bridge between a host application and the Palisade extension UIs it
 * shows in sandboxed iframes. `host` runs in the host page, `frame` in the extension's UI;
 * `protocol` is the message format they share (see `docs/ui.md`).
 */

export * from "./protocol.js";
export * from "./host.js";
export * from "./frame.js";
