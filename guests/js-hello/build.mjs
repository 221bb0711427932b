// Builds dist/js_hello.wasm from src/index.js and the world in wit/ with componentize-js
// (StarlingMonkey), without its outgoing-HTTP feature: the component does not import
// `wasi:http/outgoing-handler`, so its manifest needs no `http` capability.
// The file is written beside the target and renamed, so a reader never sees half of it.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const out = join(root, 'dist', 'js_hello.wasm');

const started = performance.now();
const { component } = await componentize({
  sourcePath: join(root, 'src', 'index.js'),
  witPath: join(root, 'wit'),
  worldName: 'js-hello',
  disableFeatures: ['http'],
});
await mkdir(dirname(out), { recursive: true });
const partial = `${out}.${process.pid}.partial`;
await writeFile(partial, component);
await rename(partial, out);
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(`built ${out}: ${component.byteLength} bytes in ${seconds} s`);
