// The extension's routes, written against the web-standard Request and Response only. The
// host functions come in as `host` (see index.js), so that this file also runs under Node
// for the tests in test/.

/** Lines streamed by `GET /hello/:name/stream` unless `lines` says otherwise. */
export const DEFAULT_LINES = 5;
/** The most lines one stream sends; with MAX_INTERVAL_MS a stream ends within 4 s. */
export const MAX_LINES = 40;
/** The pause between streamed lines unless `interval_ms` says otherwise. */
export const DEFAULT_INTERVAL_MS = 100;
/** The longest pause between streamed lines. */
export const MAX_INTERVAL_MS = 100;

/**
 * Answers one request.
 *
 * @param {Request} request
 * @param {{ invocation: () => object, log: (level: string, message: string, fields: object) => void }} host
 * @returns {Promise<Response>}
 */
export async function handle(request, host) {
  const url = new URL(request.url);
  const segments = url.pathname.split('/').slice(1);
  if (segments[0] !== 'hello' || segments.length < 2 || segments.length > 3 || !segments[1]) {
    return error(404, 'not_found');
  }
  if (segments.length === 3 && segments[2] !== 'stream') {
    return error(404, 'not_found');
  }
  if (request.method !== 'GET') {
    return error(405, 'method_not_allowed', { allow: 'GET' });
  }
  let name;
  try {
    name = decodeURIComponent(segments[1]);
  } catch {
    return error(400, 'bad_request', {}, 'the path parameter `name` is not valid UTF-8');
  }
  if (segments.length === 3) {
    return helloStream(name, url.searchParams, host);
  }
  host.log('info', 'greeting', { name });
  return Response.json(greeting(name, host.invocation()));
}

/** The body of a successful `GET /hello/:name`. */
export function greeting(name, invocation) {
  return {
    greeting: `Hello, ${name}!`,
    tenant: invocation.tenantId,
    extension: invocation.extensionId,
    version: invocation.version,
    user: invocation.user ?? null,
  };
}

/**
 * `lines` (default 5, at most 40) and `interval_ms` (default 100, at most 100) from the
 * query; larger values are capped, values that are not whole numbers are refused.
 *
 * @returns {{ lines: number, intervalMs: number } | { refused: string }}
 */
export function streamPlan(query) {
  const lines = queryNumber(query, 'lines', DEFAULT_LINES);
  if (typeof lines === 'string') return { refused: lines };
  const intervalMs = queryNumber(query, 'interval_ms', DEFAULT_INTERVAL_MS);
  if (typeof intervalMs === 'string') return { refused: intervalMs };
  return { lines: Math.min(lines, MAX_LINES), intervalMs: Math.min(intervalMs, MAX_INTERVAL_MS) };
}

function queryNumber(query, name, fallback) {
  const value = query.get(name);
  if (value === null) return fallback;
  if (!/^[0-9]+$/.test(value)) {
    return `the query parameter \`${name}\` must be a whole number, not \`${value}\``;
  }
  return Number(value);
}

function helloStream(name, query, host) {
  const plan = streamPlan(query);
  if (plan.refused) return error(400, 'bad_request', {}, plan.refused);
  host.log('info', 'streaming greeting', { name, lines: String(plan.lines) });
  const encoder = new TextEncoder();
  let line = 0;
  const body = new ReadableStream({
    async pull(controller) {
      if (line >= plan.lines) {
        controller.close();
        return;
      }
      if (line > 0) await sleep(plan.intervalMs);
      line += 1;
      controller.enqueue(encoder.encode(`Hello, ${name}! (${line}/${plan.lines})\n`));
    },
  });
  return new Response(body, {
    headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' },
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function error(status, code, headers = {}, message = undefined) {
  const body = message === undefined ? { error: code } : { error: code, message };
  return Response.json(body, { status, headers });
}
