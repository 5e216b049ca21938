#!/usr/bin/env node
// A small xDS control plane for tests, on @grpc/grpc-js and Envoy's official
// discovery protos: ADS (StreamAggregatedResources, DeltaAggregatedResources)
// and the per-type LDS/CDS/RDS/EDS/SDS/RTDS Stream*/Delta* services, plaintext h2c.
//
//   node control_plane.js XDS_PORT CONTROL_PORT [--tls CERT KEY]
//
// With --tls the xDS port speaks gRPC over TLS (h2) with that certificate.
//
// Prints {"event":"ready",...} once both ports listen. Tests drive it through
// a JSON control API over HTTP/1.1 on 127.0.0.1:CONTROL_PORT:
//   POST /resources {type_url, set: [{name, resource | base64}], remove: [names],
//                    replace: bool, push: bool=true}   -> {version}
//        resource is Envoy's proto3 JSON of the type (encoded into an Any with
//        the official protos); base64 is raw payload bytes (malformed tests).
//        Any change bumps the type's version; changed resources take it as
//        their own version (delta).
//   POST /push {type_url, bump: bool, duplicate: name}
//                        resend the type's state to every stream; with
//                        duplicate, that resource is in the response twice
//                        (a response a client must refuse)
//   GET  /log?since=N    every request a stream sent (with the whole node as
//                        node_full), plus opens (with the stream's metadata
//                        and authority), closes and the responses sent:
//                        {entries: [...], next}
//   GET  /state          streams, their subscriptions, versions
//   POST /drop           end every stream with UNAVAILABLE
//   POST /refuse {ms}    answer new streams with UNAVAILABLE for ms
//   POST /stop, /start   stop listening (closing connections), listen again
//   POST /delay {ms}     wait ms before each response
//   POST /hold {type_url, hold: bool=true}
//                        hold back every response of the type (to every
//                        stream) until released; a held response is made
//                        when it is released, from the state then
//
// Protocol (Envoy's "xDS REST and gRPC protocol"): each type on a stream has
// its own version and nonce. State of the world: a response carries the
// whole set the subscription covers (all resources for a wildcard LDS/CDS
// subscription, the named ones otherwise) with version_info and a fresh
// nonce; a request whose response_nonce is not the latest is stale and
// ignored; an ACK (latest nonce, no error_detail) or NACK (error_detail) with
// unchanged names gets no response; changed names get one. Delta: the server
// tracks what the client has (initial_resource_versions on a new stream),
// sends changed resources with per-resource versions and removed_resources
// for deleted ones (and for named ones that do not exist).
'use strict';

const http = require('http');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protos = require('./protos');

const argv = process.argv.slice(2);
const [xdsPort, controlPort] = argv.slice(0, 2).map(Number);
const tlsAt = argv.indexOf('--tls');
const tls = tlsAt > 0 ? { cert: require('fs').readFileSync(argv[tlsAt + 1]),
    key: require('fs').readFileSync(argv[tlsAt + 2]) } : null;
if (!xdsPort || !controlPort) {
    console.error('usage: control_plane.js XDS_PORT CONTROL_PORT [--tls CERT KEY]');
    process.exit(2);
}

const pkgDef = protoLoader.loadSync(Object.values(protos.SERVICES).map((s) => s[0]), {
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: false,
    includeDirs: protos.INCLUDES,
});
const loaded = grpc.loadPackageDefinition(pkgDef);

// ---- state -------------------------------------------------------------------

const store = new Map(); // type_url -> {version: number, resources: Map name -> {any, version}}
const streams = new Map(); // id -> stream
const log = [];
let nextStreamId = 1;
let nonceCounter = 0;
let delayMs = 0;
const held = new Map(); // type_url -> Set of stream ids with a response held back
let refuseUntil = 0;
let server = null;

function typeState(typeUrl) {
    if (!store.has(typeUrl)) store.set(typeUrl, { version: 0, resources: new Map(), duplicate: null });
    return store.get(typeUrl);
}

function record(entry) {
    log.push({ seq: log.length, t: Date.now(), ...entry });
}

// ---- responses ---------------------------------------------------------------

function send(stream, msg, entry) {
    const go = () => {
        if (stream.closed) return;
        stream.call.write(msg);
        record({ stream: stream.id, dir: 'out', ...entry });
    };
    if (delayMs > 0) setTimeout(go, delayMs); else go();
}

// Whether the type's responses are held back (remembering the stream).
function holding(stream, typeUrl) {
    if (!held.has(typeUrl)) return false;
    held.get(typeUrl).add(stream.id);
    record({ stream: stream.id, dir: 'held', type_url: typeUrl });
    return true;
}

function sendSotw(stream, typeUrl) {
    if (holding(stream, typeUrl)) return;
    const sub = stream.subs.get(typeUrl);
    const st = typeState(typeUrl);
    const names = sub.wildcard ? [...st.resources.keys()] : [...sub.names].filter((n) => st.resources.has(n));
    if (st.duplicate && names.includes(st.duplicate)) names.push(st.duplicate);
    const nonce = String(++nonceCounter);
    sub.nonce = nonce;
    const version = String(st.version);
    send(stream, {
        version_info: version, type_url: typeUrl, nonce,
        resources: names.map((n) => st.resources.get(n).any),
    }, { type_url: typeUrl, version_info: version, nonce, resource_names: names });
}

// Sends what the delta client lacks for this type; nothing if it is current,
// unless `first`: the first request of a new wildcard subscription is
// answered even when there is nothing to send, as go-control-plane's delta
// server does (otherwise the client can only learn that no resource exists
// from its initial_fetch_timeout).
function sendDelta(stream, typeUrl, first = false) {
    if (holding(stream, typeUrl)) return;
    const sub = stream.subs.get(typeUrl);
    const st = typeState(typeUrl);
    const inScope = (n) => sub.wildcard || sub.names.has(n);
    const changed = [];
    const removed = [];
    for (const [name, res] of st.resources) {
        if (inScope(name) && sub.has.get(name) !== res.version) {
            changed.push(name);
            sub.has.set(name, res.version);
        }
    }
    for (const [name, version] of [...sub.has]) {
        if (!st.resources.has(name) && version !== null) {
            removed.push(name);
            // named subscriptions stay, known as absent; wildcard ones go
            if (sub.names.has(name)) sub.has.set(name, null); else sub.has.delete(name);
        }
    }
    for (const name of sub.names) {
        if (name !== '*' && !st.resources.has(name) && !sub.has.has(name)) {
            removed.push(name); // "does not exist"
            sub.has.set(name, null);
        }
    }
    if (st.duplicate && st.resources.has(st.duplicate) && inScope(st.duplicate)) {
        changed.push(st.duplicate, st.duplicate);
    }
    if (!changed.length && !removed.length && !(first && sub.wildcard)) return;
    const nonce = String(++nonceCounter);
    sub.nonce = nonce;
    const version = String(st.version);
    send(stream, {
        system_version_info: version, type_url: typeUrl, nonce, removed_resources: removed,
        resources: changed.map((n) => ({
            name: n, version: st.resources.get(n).version, resource: st.resources.get(n).any,
        })),
    }, { type_url: typeUrl, system_version_info: version, nonce, resource_names: changed,
        removed_resources: removed });
}

function push(typeUrl) {
    for (const stream of streams.values()) {
        if (!stream.subs.has(typeUrl)) continue;
        if (stream.delta) sendDelta(stream, typeUrl); else sendSotw(stream, typeUrl);
    }
}

// ---- streams -----------------------------------------------------------------

function requestEntry(req, delta) {
    const e = {
        dir: 'in', node: req.node ? req.node.id : '', node_full: req.node || null, type_url: req.type_url,
        response_nonce: req.response_nonce,
        error_detail: req.error_detail ? { code: req.error_detail.code, message: req.error_detail.message } : null,
    };
    if (delta) {
        e.resource_names_subscribe = req.resource_names_subscribe;
        e.resource_names_unsubscribe = req.resource_names_unsubscribe;
        e.initial_resource_versions = req.initial_resource_versions;
    } else {
        e.version_info = req.version_info;
        e.resource_names = req.resource_names;
    }
    return e;
}

function onSotwRequest(stream, req) {
    const typeUrl = req.type_url || stream.defaultType;
    record({ stream: stream.id, ...requestEntry(req, false), type_url: typeUrl });
    let sub = stream.subs.get(typeUrl);
    const names = new Set(req.resource_names);
    const wildcard = names.has('*') || (names.size === 0 && protos.WILDCARD_TYPES.has(typeUrl));
    if (!sub) {
        sub = { names, wildcard, nonce: null };
        stream.subs.set(typeUrl, sub);
        sendSotw(stream, typeUrl); // first request of the type, with or without a version
        return;
    }
    // stale: answered by a newer response already (before any response,
    // while the type is held, nothing is)
    if (sub.nonce !== null && req.response_nonce !== sub.nonce) return;
    const same = names.size === sub.names.size && [...names].every((n) => sub.names.has(n));
    if (same && wildcard === sub.wildcard) return; // ACK or NACK
    sub.names = names;
    sub.wildcard = wildcard;
    sendSotw(stream, typeUrl);
}

function onDeltaRequest(stream, req) {
    const typeUrl = req.type_url || stream.defaultType;
    record({ stream: stream.id, ...requestEntry(req, true), type_url: typeUrl });
    let sub = stream.subs.get(typeUrl);
    // a new subscription with nothing to resume from (a resumed one knows
    // what it has and waits for nothing)
    const first = !sub && Object.keys(req.initial_resource_versions || {}).length === 0;
    if (!sub) {
        sub = {
            names: new Set(), nonce: null, has: new Map(Object.entries(req.initial_resource_versions || {})),
            wildcard: req.resource_names_subscribe.length === 0 && protos.WILDCARD_TYPES.has(typeUrl),
        };
        stream.subs.set(typeUrl, sub);
    } else if (req.response_nonce && req.response_nonce !== sub.nonce) {
        return; // stale
    }
    for (const n of req.resource_names_subscribe) {
        if (n === '*') sub.wildcard = true; else sub.names.add(n);
    }
    for (const n of req.resource_names_unsubscribe) {
        if (n === '*') sub.wildcard = false;
        sub.names.delete(n);
        if (!sub.wildcard) sub.has.delete(n);
    }
    // the client no longer wants what left the scope: forget it silently
    if (!sub.wildcard) for (const n of [...sub.has.keys()]) if (!sub.names.has(n)) sub.has.delete(n);
    sendDelta(stream, typeUrl, first);
}

function handler(service, kind, delta) {
    const defaultType = kind === 'ads' ? '' : protos.TYPE_PREFIX + protos.TYPES[kind];
    return (call) => {
        const id = nextStreamId++;
        const method = `${service}/${delta ? protos.SERVICES[kind][3] : protos.SERVICES[kind][2]}`;
        if (Date.now() < refuseUntil) {
            record({ stream: id, dir: 'refused', method });
            call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'refusing streams' });
            return;
        }
        const stream = { id, call, delta, method, defaultType, subs: new Map(), closed: false };
        streams.set(id, stream);
        record({ stream: id, dir: 'open', method, metadata: call.metadata.getMap(), authority: call.getHost() });
        const close = (why) => {
            if (stream.closed) return;
            stream.closed = true;
            streams.delete(id);
            record({ stream: id, dir: 'close', why });
        };
        call.on('data', (req) => {
            try {
                if (delta) onDeltaRequest(stream, req); else onSotwRequest(stream, req);
            } catch (e) {
                record({ stream: id, dir: 'error', message: e.message });
            }
        });
        call.on('end', () => { close('client half-close'); call.end(); });
        call.on('cancelled', () => close('cancelled'));
        call.on('error', (e) => close(`error: ${e.message}`));
    };
}

function start() {
    return new Promise((resolve, reject) => {
        server = new grpc.Server();
        for (const [kind, [, service, streamName, deltaName]] of Object.entries(protos.SERVICES)) {
            const svc = service.split('.').reduce((o, k) => o[k], loaded).service;
            server.addService(svc, {
                [streamName]: handler(service, kind, false),
                [deltaName]: handler(service, kind, true),
            });
        }
        const creds = tls ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: tls.cert, private_key: tls.key }])
            : grpc.ServerCredentials.createInsecure();
        server.bindAsync(`127.0.0.1:${xdsPort}`, creds, (err) => {
            if (err) return reject(err);
            resolve();
        });
    });
}

function stop() {
    if (!server) return;
    for (const s of streams.values()) s.closed = true;
    streams.clear();
    server.forceShutdown();
    server = null;
    record({ dir: 'stopped' });
}

// ---- control API -------------------------------------------------------------

function setResources(body) {
    const typeUrl = body.type_url;
    if (!typeUrl || !typeUrl.startsWith(protos.TYPE_PREFIX)) throw new Error('type_url required');
    const st = typeState(typeUrl);
    const type = protos.lookupType(typeUrl.slice(protos.TYPE_PREFIX.length));
    const version = String(st.version + 1);
    const next = new Map(body.replace ? [] : st.resources);
    for (const r of body.set || []) {
        if (!r.name) throw new Error('every resource needs a name');
        const value = r.base64 !== undefined ? Buffer.from(r.base64, 'base64') : protos.encode(type, r.resource);
        const old = st.resources.get(r.name);
        const same = old && Buffer.compare(old.any.value, value) === 0;
        next.set(r.name, same ? old : { any: { type_url: typeUrl, value }, version });
    }
    for (const n of body.remove || []) next.delete(n);
    const changed = next.size !== st.resources.size ||
        [...next].some(([n, r]) => st.resources.get(n) !== r);
    if (changed) {
        st.version += 1;
        st.resources = next;
    }
    if (body.push !== false) push(typeUrl);
    return { version: String(st.version), changed };
}

function stateView() {
    return {
        listening: server !== null, delay_ms: delayMs,
        versions: Object.fromEntries([...store].map(([t, s]) => [t, String(s.version)])),
        resources: Object.fromEntries([...store].map(([t, s]) =>
            [t, Object.fromEntries([...s.resources].map(([n, r]) => [n, r.version]))])),
        streams: [...streams.values()].map((s) => ({
            id: s.id, method: s.method, delta: s.delta,
            subscriptions: Object.fromEntries([...s.subs].map(([t, sub]) => [t, {
                wildcard: sub.wildcard, names: [...sub.names], nonce: sub.nonce,
                has: sub.has ? Object.fromEntries(sub.has) : undefined,
            }])),
        })),
    };
}

async function control(req, body) {
    const url = new URL(req.url, 'http://x');
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
    case 'POST /resources': return setResources(body);
    case 'POST /push': {
        const st = typeState(body.type_url);
        if (body.bump) st.version += 1;
        st.duplicate = body.duplicate || null;
        push(body.type_url);
        st.duplicate = null;
        return { version: String(st.version) };
    }
    case 'GET /log': {
        const since = Number(url.searchParams.get('since') || 0);
        return { entries: log.slice(since), next: log.length };
    }
    case 'GET /state': return stateView();
    case 'POST /drop': {
        const n = streams.size;
        for (const s of [...streams.values()]) {
            s.call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'dropped by the control plane' });
        }
        return { dropped: n };
    }
    case 'POST /refuse': refuseUntil = Date.now() + Number(body.ms || 0); return {};
    case 'POST /delay': delayMs = Number(body.ms || 0); return {};
    case 'POST /hold': {
        if (!body.type_url) throw new Error('type_url required');
        if (body.hold !== false) {
            if (!held.has(body.type_url)) held.set(body.type_url, new Set());
            return {};
        }
        const waiting = held.get(body.type_url) || new Set();
        held.delete(body.type_url);
        for (const id of waiting) {
            const stream = streams.get(id);
            if (!stream || !stream.subs.has(body.type_url)) continue;
            if (stream.delta) sendDelta(stream, body.type_url); else sendSotw(stream, body.type_url);
        }
        return { released: waiting.size };
    }
    case 'POST /stop': stop(); return {};
    case 'POST /start': if (!server) await start(); return {};
    default: { const e = new Error(`no such control: ${route}`); e.status = 404; throw e; }
    }
}

const api = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', async () => {
        let status = 200;
        let out;
        try {
            out = await control(req, data ? JSON.parse(data) : {});
        } catch (e) {
            status = e.status || 400;
            out = { error: e.message };
        }
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(out));
    });
});

start().then(() => {
    api.listen(controlPort, '127.0.0.1', () => {
        console.log(JSON.stringify({ event: 'ready', xds_port: xdsPort, control_port: controlPort }));
    });
}, (err) => {
    console.error(`control plane: cannot listen on 127.0.0.1:${xdsPort}: ${err.message}`);
    process.exit(1);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
