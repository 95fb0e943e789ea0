// The VM bench's host: a minimal Proxy-Wasm ABI 0.2.1 host in node (V8, the engine Envoy runs
// the filter on), so the work a module does inside the VM per request can be timed alone, with
// a resolution an Envoy run cannot give (docs/benchmarks-e2e.md, "The VM bench").
//
// usage: node benches/vm_host.js TABLE.json REQUESTS ROUNDS MODULE.wasm...
// Each request: context create, request headers (end of stream), response headers, delete —
// the calls Envoy makes for a GET whose module declines the other callbacks. The host answers
// what the seed bench's Envoy would: the request's headers as one block, the plugin
// configuration, metric ids; header writes are counted by value. Rounds alternate the modules'
// order. One JSON line per module on stdout.
'use strict';
const fs = require('fs');

const OK = 0;
const NOT_FOUND = 1;
const PLUGIN_CONFIGURATION = 7;
const REQUEST_HEADERS = 0;

function encodePairs(pairs) {
  const enc = pairs.map(([k, v]) => [Buffer.from(k), Buffer.from(v)]);
  let size = 4 + 8 * enc.length;
  for (const [k, v] of enc) size += k.length + v.length + 2;
  const b = Buffer.alloc(size);
  b.writeUInt32LE(enc.length, 0);
  let at = 4;
  for (const [k, v] of enc) {
    b.writeUInt32LE(k.length, at);
    b.writeUInt32LE(v.length, at + 4);
    at += 8;
  }
  for (const [k, v] of enc) {
    k.copy(b, at);
    at += k.length + 1;
    v.copy(b, at);
    at += v.length + 1;
  }
  return b;
}

function instantiate(path, pluginConfig, headers) {
  let exports;
  // Views are rebuilt only when the memory grows (growing detaches the old buffer).
  let u8 = null;
  let dv = null;
  const view = () => {
    if (!u8 || u8.buffer !== exports.memory.buffer) {
      u8 = new Uint8Array(exports.memory.buffer);
      dv = new DataView(exports.memory.buffer);
    }
  };
  const text = (p, n) => Buffer.from(exports.memory.buffer, p, n).toString('utf8');
  // The host's half of handing bytes over: allocate in the VM (a call into it, as in Envoy), copy.
  const give = (bytes, ptrPtr, sizePtr) => {
    const p = bytes.length ? exports.proxy_on_memory_allocate(bytes.length) : 0;
    view();
    if (bytes.length) u8.set(bytes, p);
    dv.setUint32(ptrPtr, p, true);
    dv.setUint32(sizePtr, bytes.length, true);
    return OK;
  };
  const block = encodePairs(headers);
  const none = Buffer.alloc(0);
  const config = Buffer.from(pluginConfig);
  // Writes counted by an FNV-1a hash of name and value, each distinct one decoded once: decoding
  // every write would cost the host more than the module's own work.
  const written = new Map(); // hash → { text, count }
  const record = (kp, kn, vp, vn) => {
    view();
    let h = 0x811c9dc5;
    for (let i = 0; i < kn; i++) h = Math.imul(h ^ u8[kp + i], 0x01000193);
    h = Math.imul(h ^ 0x3d, 0x01000193);
    for (let i = 0; i < vn; i++) h = Math.imul(h ^ u8[vp + i], 0x01000193);
    const seen = written.get(h);
    if (seen) seen.count++;
    else written.set(h, { text: text(kp, kn) + '=' + text(vp, vn), count: 1 });
    return OK;
  };
  let nextMetric = 1;
  const env = {
    proxy_log: (level, p, n) => {
      if (level >= 3) process.stderr.write(`[wasm] ${text(p, n)}\n`);
      return OK;
    },
    proxy_get_buffer_bytes: (type, start, len, pp, sp) => (type === PLUGIN_CONFIGURATION ? give(config, pp, sp) : NOT_FOUND),
    proxy_get_header_map_pairs: (map, pp, sp) => give(map === REQUEST_HEADERS ? block : none, pp, sp),
    proxy_replace_header_map_value: (map, kp, kn, vp, vn) => record(kp, kn, vp, vn),
    proxy_add_header_map_value: (map, kp, kn, vp, vn) => record(kp, kn, vp, vn),
    proxy_get_header_map_value: () => NOT_FOUND,
    proxy_get_property: () => NOT_FOUND,
    proxy_define_metric: (type, p, n, idPtr) => {
      view();
      dv.setUint32(idPtr, nextMetric++, true);
      return OK;
    },
    proxy_get_current_time_nanoseconds: (p) => {
      view();
      dv.setBigUint64(p, process.hrtime.bigint(), true);
      return OK;
    },
  };
  const wasi = {
    random_get: (p, n) => {
      view();
      for (let i = 0; i < n; i++) u8[p + i] = (Math.random() * 256) | 0;
      return OK;
    },
    environ_sizes_get: (countPtr, sizePtr) => {
      view();
      dv.setUint32(countPtr, 0, true);
      dv.setUint32(sizePtr, 0, true);
      return OK;
    },
    fd_write: (fd, iovs, n, writtenPtr) => {
      view();
      let total = 0;
      for (let i = 0; i < n; i++) {
        const p = dv.getUint32(iovs + 8 * i, true);
        const l = dv.getUint32(iovs + 8 * i + 4, true);
        process.stderr.write(text(p, l));
        total += l;
      }
      dv.setUint32(writtenPtr, total, true);
      return OK;
    },
    proc_exit: (code) => {
      throw new Error(`${path}: proc_exit(${code})`);
    },
  };
  // Anything else the module imports (timers, queues, metrics increments, ...) answers Ok.
  const ok = () => OK;
  const imports = {
    env: new Proxy(env, { get: (t, k) => t[k] || ok }),
    wasi_snapshot_preview1: new Proxy(wasi, { get: (t, k) => t[k] || ok }),
  };
  exports = new WebAssembly.Instance(new WebAssembly.Module(fs.readFileSync(path)), imports).exports;
  exports._initialize();
  exports.proxy_on_context_create(1, 0);
  if (!exports.proxy_on_vm_start(1, 0)) throw new Error(`${path}: proxy_on_vm_start refused`);
  if (!exports.proxy_on_configure(1, config.length)) throw new Error(`${path}: the configuration was refused`);
  let next = 2;
  const request = () => {
    const id = next++;
    exports.proxy_on_context_create(id, 1);
    exports.proxy_on_request_headers(id, headers.length, 1);
    exports.proxy_on_response_headers(id, 3, 0);
    exports.proxy_on_delete(id);
  };
  return { request, written };
}

const [tableFile, requests, rounds, ...modules] = process.argv.slice(2);
const n = Number(requests);
const roundCount = Number(rounds);
if (!tableFile || !(n > 0) || !(roundCount > 0) || modules.length === 0) {
  process.stderr.write('usage: node benches/vm_host.js TABLE.json REQUESTS ROUNDS MODULE.wasm...\n');
  process.exit(2);
}
const config = fs.readFileSync(tableFile, 'utf8');
// What h2load sends for the seed bench's request (no x-debug: the 80/20 split rule).
const headers = [
  [':method', 'GET'],
  [':scheme', 'http'],
  [':authority', 'product-service'],
  [':path', '/'],
  ['user-agent', 'h2load nghttp2/1.59.0'],
  ['accept', '*/*'],
];
const vms = modules.map((path) => ({ path, ...instantiate(path, config, headers) }));
// Warm up until V8 has tiered the hot functions up (Liftoff → TurboFan), then clear the counts.
for (const vm of vms) {
  for (let i = 0; i < Math.min(n, 50000); i++) vm.request();
  vm.written.clear();
}
const ns = vms.map(() => []);
for (let r = 0; r < roundCount; r++) {
  const order = [...vms.keys()];
  if (r % 2) order.reverse();
  for (const i of order) {
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < n; k++) vms[i].request();
    ns[i].push(Number(process.hrtime.bigint() - t0) / n);
  }
}
vms.forEach((vm, i) => {
  const written = {};
  for (const { text, count } of vm.written.values()) written[text] = (written[text] || 0) + count;
  const out = { module: vm.path, requests: n * roundCount, ns_per_request: ns[i], written };
  process.stdout.write(JSON.stringify(out) + '\n');
});
