/**
 * The messages between a host page and an extension UI in its iframe: a versioned
 * envelope `{v: 1, id, type, ...}`. Unknown types, other versions and malformed messages
 * are ignored by both sides. Each type is described in `docs/ui.md`.
 */
/** The protocol version this package speaks. */
export const VERSION = 1;
/** The HTTP methods a UI may ask the host to call its API with. */
export const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
/** The sandbox permissions a manifest may ask for beyond `allow-scripts`. */
export const SANDBOX_PERMISSIONS = [
    "allow-forms",
    "allow-modals",
    "allow-popups",
    "allow-downloads",
];
let counter = 0;
/** A message id unique within this page. */
export function nextId() {
    counter += 1;
    return `${Date.now().toString(36)}-${counter}`;
}
function isObject(value) {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}
function isHeaders(value) {
    return isObject(value) && Object.values(value).every((v) => typeof v === "string");
}
/**
 * A path inside the extension's API or UI: starts with `/`, no `..` or `.` segment, no
 * backslash, no scheme or authority, no control character.
 */
export function isSafePath(path) {
    if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//")) {
        return false;
    }
    if (/[\\\u0000-\u001f\u007f]/.test(path)) {
        return false;
    }
    const pathname = path.split(/[?#]/, 1)[0];
    return pathname
        .split("/")
        .every((segment) => {
        const decoded = safeDecode(segment);
        return decoded !== null && decoded !== ".." && decoded !== "." && !decoded.includes("/");
    });
}
function safeDecode(segment) {
    try {
        return decodeURIComponent(segment);
    }
    catch {
        return null;
    }
}
/** `data` as a message from the iframe, or `null` when it is not one. */
export function parseFrameMessage(data) {
    if (!isObject(data) || data.v !== VERSION || typeof data.id !== "string") {
        return null;
    }
    switch (data.type) {
        case "ready":
            return { v: 1, id: data.id, type: "ready" };
        case "resize":
            return typeof data.height === "number" && Number.isFinite(data.height) && data.height >= 0
                ? { v: 1, id: data.id, type: "resize", height: data.height }
                : null;
        case "navigate":
            return isSafePath(data.path) ? { v: 1, id: data.id, type: "navigate", path: data.path } : null;
        case "request": {
            const method = typeof data.method === "string" ? data.method.toUpperCase() : "";
            if (!METHODS.includes(method) || !isSafePath(data.path)) {
                return null;
            }
            if (data.headers !== undefined && !isHeaders(data.headers)) {
                return null;
            }
            if (data.body !== undefined && data.body !== null && typeof data.body !== "string") {
                return null;
            }
            return {
                v: 1,
                id: data.id,
                type: "request",
                method,
                path: data.path,
                headers: data.headers,
                body: data.body ?? null,
            };
        }
        default:
            return null;
    }
}
/** `data` as a message from the host, or `null` when it is not one. */
export function parseHostMessage(data) {
    if (!isObject(data) || data.v !== VERSION || typeof data.id !== "string") {
        return null;
    }
    switch (data.type) {
        case "bootstrap":
            if (typeof data.theme !== "string" ||
                typeof data.locale !== "string" ||
                typeof data.path !== "string" ||
                (data.token !== undefined && typeof data.token !== "string")) {
                return null;
            }
            return {
                v: 1,
                id: data.id,
                type: "bootstrap",
                theme: data.theme,
                locale: data.locale,
                path: data.path,
                token: data.token,
            };
        case "response":
            if (typeof data.re !== "string" ||
                typeof data.status !== "number" ||
                !isHeaders(data.headers) ||
                typeof data.body !== "string") {
                return null;
            }
            return {
                v: 1,
                id: data.id,
                type: "response",
                re: data.re,
                status: data.status,
                headers: data.headers,
                body: data.body,
            };
        case "error":
            return typeof data.re === "string" && typeof data.message === "string"
                ? { v: 1, id: data.id, type: "error", re: data.re, message: data.message }
                : null;
        default:
            return null;
    }
}
