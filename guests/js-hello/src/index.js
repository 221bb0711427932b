// Entry point: binds the Palisade host interfaces and answers every request through the
// `fetch` event, which componentize-js exports as `wasi:http/incoming-handler`.
import { get } from 'palisade:extension/context@0.2.0';
import { write } from 'palisade:extension/log@0.2.0';

import { handle } from './app.js';

const host = {
  invocation: get,
  log(level, message, fields) {
    write(
      level,
      message,
      Object.entries(fields).map(([key, value]) => ({ key, value })),
    );
  },
};

addEventListener('fetch', (event) => event.respondWith(handle(event.request, host)));
