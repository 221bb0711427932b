/**
 * The host side of the bridge: builds an extension UI's iframe, bootstraps it, and makes
 * the API calls it asks for — to the gateway, with the user's credentials — so that the
 * iframe never holds the host's cookies or talks to the network itself.
 */

import {
  type ApiResponse,
  type Bootstrap,
  type FrameMessage,
  type HostMessage,
  SANDBOX_PERMISSIONS,
  type SandboxPermission,
  nextId,
  parseFrameMessage,
} from "./protocol.js";

/** Where an extension version's UI is served. */
export interface ExtUiLocation {
  /** The runners' public base for UIs, e.g. `https://ui.example.com`. */
  publicBase: string;
  /** The extension id, e.g. `com.example.ticket-widget`. */
  extensionId: string;
  /** The version's content hash, `sha256:<hex>`. */
  contentHash: string;
  /** The document below the UI tree, e.g. `index.html`. */
  path: string;
}

/** The iframe URL of a UI document. */
export function buildExtUiSrc({ publicBase, extensionId, contentHash, path }: ExtUiLocation): string {
  const base = publicBase.replace(/\/+$/, "");
  const segments = path
    .replace(/^\/+/, "")
    .split("/")
    .map((segment) => encodeURIComponent(segment));
  return `${base}/ext-ui/${encodeURIComponent(extensionId)}/${contentHash}/${segments.join("/")}`;
}

/** The `sandbox` attribute: `allow-scripts` and the permitted extras asked for. */
export function sandboxAttribute(extra: readonly string[] = []): string {
  const allowed = extra.filter((p): p is SandboxPermission =>
    (SANDBOX_PERMISSIONS as readonly string[]).includes(p),
  );
  return ["allow-scripts", ...new Set(allowed)].join(" ");
}

/** What the host does for the iframe; the parts a test can replace. */
export interface HostBridgeOptions {
  /** The iframe's window: messages from any other window are ignored, and messages are
   * posted to this window only. */
  frame: { postMessage(message: unknown, targetOrigin: string): void };
  /** The runners' origin, where the iframe's document comes from. A UI's iframe has no
   * `allow-same-origin`, so its messages come from the opaque origin `null`; those and
   * this origin's are accepted, any other is ignored. */
  frameOrigin: string;
  /** The gateway's base URL, e.g. `https://api.example.com`. */
  gateway: string;
  /** The extension whose API the iframe calls. */
  extensionId: string;
  /** What the iframe is told once it is ready. */
  bootstrap: () => Bootstrap | Promise<Bootstrap>;
  /** The caller token for API calls, if the host authenticates with one. */
  token?: () => string | undefined | Promise<string | undefined>;
  /** Credentials mode of API calls (cookies): default `same-origin`. */
  credentials?: RequestCredentials;
  /** The fetch to call the gateway with (default: the global one). */
  fetch?: typeof fetch;
  /** The iframe asks to be this tall, in CSS pixels. */
  onResize?: (height: number) => void;
  /** The iframe moved to this path. */
  onNavigate?: (path: string) => void;
}

/** A message event, as much of it as the bridge reads. */
export interface BridgeEvent {
  source: unknown;
  origin: string;
  data: unknown;
}

/**
 * The host's side of one iframe. `handle` takes every message event of the host window;
 * events from any other window or origin, and anything that is not a message of the
 * protocol, are ignored.
 */
export function createHostBridge(options: HostBridgeOptions): { handle(event: BridgeEvent): void } {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  // The sandboxed document's origin is opaque, which no target origin but `*` matches:
  // the message goes to the iframe's own window and nowhere else.
  const send = (message: HostMessage) => options.frame.postMessage(message, "*");
  const gateway = options.gateway.replace(/\/+$/, "");

  async function call(request: Extract<FrameMessage, { type: "request" }>): Promise<ApiResponse> {
    const headers: Record<string, string> = { ...(request.headers ?? {}) };
    // The iframe cannot set the caller's identity.
    for (const name of Object.keys(headers)) {
      if (["authorization", "cookie"].includes(name.toLowerCase())) {
        delete headers[name];
      }
    }
    const token = await options.token?.();
    if (token) {
      headers.authorization = `Bearer ${token}`;
    }
    const response = await doFetch(
      `${gateway}/api/ext/${encodeURIComponent(options.extensionId)}${request.path}`,
      {
        method: request.method,
        headers,
        body: request.method === "GET" || request.method === "HEAD" ? undefined : request.body ?? undefined,
        credentials: options.credentials ?? "same-origin",
      },
    );
    const answered: Record<string, string> = {};
    response.headers.forEach((value, name) => {
      answered[name] = value;
    });
    return { status: response.status, headers: answered, body: await response.text() };
  }

  return {
    handle(event: BridgeEvent) {
      if (
        event.source !== options.frame ||
        (event.origin !== "null" && event.origin !== options.frameOrigin)
      ) {
        return;
      }
      const message = parseFrameMessage(event.data);
      if (message === null) {
        return;
      }
      switch (message.type) {
        case "ready":
          void Promise.resolve(options.bootstrap()).then((bootstrap) =>
            send({ v: 1, id: nextId(), type: "bootstrap", ...bootstrap }),
          );
          break;
        case "resize":
          options.onResize?.(message.height);
          break;
        case "navigate":
          options.onNavigate?.(message.path);
          break;
        case "request":
          call(message).then(
            (response) => send({ v: 1, id: nextId(), type: "response", re: message.id, ...response }),
            (error: unknown) =>
              send({
                v: 1,
                id: nextId(),
                type: "error",
                re: message.id,
                message: error instanceof Error ? error.message : "the request failed",
              }),
          );
          break;
      }
    },
  };
}

/** What {@link mountExtension} needs. */
export interface MountOptions extends ExtUiLocation {
  /** The element the iframe goes into. */
  container: HTMLElement;
  /** The gateway's base URL. */
  gateway: string;
  /** Sandbox permissions beyond `allow-scripts`, from the manifest's `ui` section. */
  sandbox?: readonly string[];
  /** The host application's theme (default `light`). */
  theme?: string;
  /** The user's locale (default: the browser's). */
  locale?: string;
  /** The path inside the UI to show first (default `/`). */
  initialPath?: string;
  /** The caller token for API calls and the bootstrap, if the host uses one. */
  token?: () => string | undefined | Promise<string | undefined>;
  /** Credentials mode of API calls (cookies): default `same-origin`. */
  credentials?: RequestCredentials;
  /** Called when the UI moves to another path. */
  onNavigate?: (path: string) => void;
}

/** A mounted extension UI. */
export interface MountedExtension {
  iframe: HTMLIFrameElement;
  /** Removes the iframe and stops listening. */
  unmount(): void;
}

/** Creates the sandboxed iframe of an extension UI in `container` and bridges it. */
export function mountExtension(options: MountOptions): MountedExtension {
  const src = buildExtUiSrc(options);
  const frameOrigin = new URL(src).origin;
  const iframe = options.container.ownerDocument.createElement("iframe");
  iframe.setAttribute("sandbox", sandboxAttribute(options.sandbox));
  iframe.setAttribute("referrerpolicy", "no-referrer");
  iframe.setAttribute("title", options.extensionId);
  iframe.style.border = "0";
  iframe.style.width = "100%";
  iframe.src = src;
  options.container.appendChild(iframe);
  const frameWindow = () => iframe.contentWindow;
  const bridge = createHostBridge({
    get frame() {
      return frameWindow() ?? { postMessage() {} };
    },
    frameOrigin,
    gateway: options.gateway,
    extensionId: options.extensionId,
    token: options.token,
    credentials: options.credentials,
    bootstrap: async () => ({
      theme: options.theme ?? "light",
      locale: options.locale ?? globalThis.navigator?.language ?? "en",
      path: options.initialPath ?? "/",
      token: (await options.token?.()) ?? undefined,
    }),
    onResize: (height) => {
      iframe.style.height = `${Math.ceil(height)}px`;
    },
    onNavigate: options.onNavigate,
  });
  const view = options.container.ownerDocument.defaultView;
  const listener = (event: MessageEvent) => bridge.handle(event);
  view?.addEventListener("message", listener);
  return {
    iframe,
    unmount() {
      view?.removeEventListener("message", listener);
      iframe.remove();
    },
  };
}
