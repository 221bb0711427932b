/**
 * The host side of the bridge: builds an extension UI's iframe, bootstraps it, and makes
 * the API calls it asks for — to the gateway, with the user's credentials — so that the
 * iframe never holds the host's cookies or talks to the network itself.
 */
import { SANDBOX_PERMISSIONS, nextId, parseFrameMessage, } from "./protocol.js";
/** The iframe URL of a UI document. */
export function buildExtUiSrc({ publicBase, extensionId, contentHash, path }) {
    const base = publicBase.replace(/\/+$/, "");
    const segments = path
        .replace(/^\/+/, "")
        .split("/")
        .map((segment) => encodeURIComponent(segment));
    return `${base}/ext-ui/${encodeURIComponent(extensionId)}/${contentHash}/${segments.join("/")}`;
}
/** The `sandbox` attribute: `allow-scripts` and the permitted extras asked for. */
export function sandboxAttribute(extra = []) {
    const allowed = extra.filter((p) => SANDBOX_PERMISSIONS.includes(p));
    return ["allow-scripts", ...new Set(allowed)].join(" ");
}
/**
 * The host's side of one iframe. `handle` takes every message event of the host window;
 * events from any other window or origin, and anything that is not a message of the
 * protocol, are ignored.
 */
export function createHostBridge(options) {
    const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    // The sandboxed document's origin is opaque, which no target origin but `*` matches:
    // the message goes to the iframe's own window and nowhere else.
    const send = (message) => options.frame.postMessage(message, "*");
    const gateway = options.gateway.replace(/\/+$/, "");
    async function call(request) {
        const headers = { ...(request.headers ?? {}) };
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
        const response = await doFetch(`${gateway}/api/ext/${encodeURIComponent(options.extensionId)}${request.path}`, {
            method: request.method,
            headers,
            body: request.method === "GET" || request.method === "HEAD" ? undefined : request.body ?? undefined,
            credentials: options.credentials ?? "same-origin",
        });
        const answered = {};
        response.headers.forEach((value, name) => {
            answered[name] = value;
        });
        return { status: response.status, headers: answered, body: await response.text() };
    }
    return {
        handle(event) {
            if (event.source !== options.frame ||
                (event.origin !== "null" && event.origin !== options.frameOrigin)) {
                return;
            }
            const message = parseFrameMessage(event.data);
            if (message === null) {
                return;
            }
            switch (message.type) {
                case "ready":
                    void Promise.resolve(options.bootstrap()).then((bootstrap) => send({ v: 1, id: nextId(), type: "bootstrap", ...bootstrap }));
                    break;
                case "resize":
                    options.onResize?.(message.height);
                    break;
                case "navigate":
                    options.onNavigate?.(message.path);
                    break;
                case "request":
                    call(message).then((response) => send({ v: 1, id: nextId(), type: "response", re: message.id, ...response }), (error) => send({
                        v: 1,
                        id: nextId(),
                        type: "error",
                        re: message.id,
                        message: error instanceof Error ? error.message : "the request failed",
                    }));
                    break;
            }
        },
    };
}
/** Creates the sandboxed iframe of an extension UI in `container` and bridges it. */
export function mountExtension(options) {
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
            return frameWindow() ?? { postMessage() { } };
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
    const listener = (event) => bridge.handle(event);
    view?.addEventListener("message", listener);
    return {
        iframe,
        unmount() {
            view?.removeEventListener("message", listener);
            iframe.remove();
        },
    };
}
