/**
 * The iframe side of the bridge: an extension UI tells its host it is ready, learns its
 * theme, locale and first path from the host's bootstrap, and asks the host to call its
 * API. It listens to its parent window only, and once bootstrapped to the parent's origin
 * only; every other message is ignored.
 */
import { nextId, parseHostMessage, } from "./protocol.js";
/** The bridge of this iframe (default: the real window's). */
export function connect(environment) {
    const env = environment ?? browserEnvironment();
    let hostOrigin = null;
    let booted = () => { };
    const bootstrap = new Promise((resolve) => {
        booted = resolve;
    });
    const pending = new Map();
    const queued = [];
    const post = (message) => {
        if (hostOrigin === null) {
            // Nothing but `ready` is sent before the host has said who it is.
            queued.push(message);
            return;
        }
        env.parent.postMessage(message, hostOrigin);
    };
    env.listen((event) => {
        if (event.source !== env.parent) {
            return;
        }
        if (hostOrigin !== null && event.origin !== hostOrigin) {
            return;
        }
        const message = parseHostMessage(event.data);
        if (message === null) {
            return;
        }
        switch (message.type) {
            case "bootstrap":
                if (hostOrigin === null) {
                    hostOrigin = event.origin;
                    for (const waiting of queued.splice(0)) {
                        env.parent.postMessage(waiting, hostOrigin);
                    }
                    const { v: _v, id: _id, type: _type, ...rest } = message;
                    booted(rest);
                }
                break;
            case "response": {
                const waiting = pending.get(message.re);
                pending.delete(message.re);
                waiting?.resolve({ status: message.status, headers: message.headers, body: message.body });
                break;
            }
            case "error": {
                const waiting = pending.get(message.re);
                pending.delete(message.re);
                waiting?.reject(new Error(message.message));
                break;
            }
        }
    });
    return {
        ready() {
            // Carries nothing of value, so it may go to any origin: the host answers only if
            // it framed this document.
            env.parent.postMessage({ v: 1, id: nextId(), type: "ready" }, "*");
            return bootstrap;
        },
        resize(height) {
            post({ v: 1, id: nextId(), type: "resize", height });
        },
        navigate(path) {
            post({ v: 1, id: nextId(), type: "navigate", path });
        },
        request(method, path, body = null, headers) {
            const id = nextId();
            return new Promise((resolve, reject) => {
                pending.set(id, { resolve, reject });
                post({ v: 1, id, type: "request", method: method.toUpperCase(), path, body, headers });
            });
        },
    };
}
function browserEnvironment() {
    return {
        parent: window.parent,
        listen(handler) {
            window.addEventListener("message", (event) => handler(event));
        },
    };
}
