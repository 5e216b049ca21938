#!/usr/bin/env node
// A test xDS client on @grpc/grpc-js and Envoy's official discovery protos:
// opens a state-of-the-world or delta stream (ADS or a per-type service),
// subscribes, ACKs or NACKs each response as told, and prints one JSON line
// per event on stdout.
//
//   node client.js PORT [--delta] [--service ads|lds|cds|rds|eds|sds] [--node ID]
//                  [--reconnect MS]
//
// Commands, one JSON object a line on stdin:
//   {"op":"subscribe","type_url":T,"names":[...]}   (SotW: the new full list;
//                                                    [] = wildcard for LDS/CDS)
//   {"op":"unsubscribe","type_url":T,"names":[...]} (delta)
//   {"op":"nack","type_url":T,"count":N}   NACK the next N responses of T
//   {"op":"close"}                         half-close and exit
// Events: {"event":"response",...}, {"event":"sent",...},
// {"event":"status",code,details}, {"event":"open"}, {"event":"done",op} once
// a command is carried out.
// With --reconnect, a stream that ends is opened again after MS, resending the
// subscriptions: SotW with the last accepted version_info, delta with
// initial_resource_versions of what the client has.
'use strict';

const readline = require('readline');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protos = require('./protos');

const args = process.argv.slice(2);
const port = Number(args[0]);
const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i > 0 ? args[i + 1] : dflt;
};
const delta = args.includes('--delta');
const kind = opt('--service', 'ads');
const nodeId = opt('--node', 'test-node');
const reconnectMs = Number(opt('--reconnect', 0));

const [file, service, streamName, deltaName] = protos.SERVICES[kind];
const pkgDef = protoLoader.loadSync(file, {
    keepCase: true, longs: String, enums: String, defaults: true, includeDirs: protos.INCLUDES,
});
const Client = service.split('.').reduce((o, k) => o[k], grpc.loadPackageDefinition(pkgDef));
const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
const node = { id: nodeId, cluster: 'test-cluster' };

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

// per type: names, accepted version (SotW), resources held (delta), NACKs to send
const types = new Map();
let call = null;
let closing = false;

function typeOf(typeUrl) {
    if (!types.has(typeUrl)) types.set(typeUrl, { names: [], version: '', has: new Map(), nacks: 0 });
    return types.get(typeUrl);
}

function write(req) {
    call.write({ node, ...req });
    out({ event: 'sent', ...req });
}

function onResponse(res) {
    const t = typeOf(res.type_url);
    t.nonce = res.nonce;
    const nack = t.nacks > 0;
    if (nack) t.nacks -= 1;
    const resources = delta ? res.resources : res.resources.map((any) => ({ resource: any }));
    const decoded = resources.map((r) => {
        const any = r.resource;
        let json = null;
        let error = null;
        try {
            json = protos.decodeAny(any.type_url, Buffer.from(any.value));
        } catch (e) {
            error = e.message; // a malformed resource is NACKed, as a client would
        }
        return { name: r.name || (json && (json.name || json.cluster_name)), version: r.version,
            type_url: any.type_url, resource: json, error };
    });
    const bad = decoded.find((r) => r.error);
    out({ event: 'response', type_url: res.type_url, nonce: res.nonce,
        version_info: delta ? undefined : res.version_info,
        system_version_info: delta ? res.system_version_info : undefined,
        removed_resources: delta ? res.removed_resources : undefined, resources: decoded });
    const error = nack || bad ? { code: 3, message: bad ? `cannot decode ${bad.name}: ${bad.error}`
        : 'rejected by the test client' } : null;
    if (delta) {
        if (!error) {
            for (const r of decoded) t.has.set(r.name, r.version);
            for (const n of res.removed_resources) t.has.delete(n);
        }
        write({ type_url: res.type_url, response_nonce: res.nonce, error_detail: error,
            resource_names_subscribe: [], resource_names_unsubscribe: [] });
    } else {
        if (!error) t.version = res.version_info;
        write({ type_url: res.type_url, response_nonce: res.nonce, version_info: t.version,
            resource_names: t.names, error_detail: error });
    }
}

function open() {
    call = delta ? client[deltaName]() : client[streamName]();
    out({ event: 'open' });
    call.on('data', onResponse);
    call.on('error', () => {}); // reported by 'status'
    call.on('status', (s) => {
        out({ event: 'status', code: s.code, details: s.details });
        if (reconnectMs > 0 && !closing) setTimeout(resubscribe, reconnectMs);
        else if (closing) process.exit(0);
    });
}

function resubscribe() {
    open();
    for (const [typeUrl, t] of types) {
        if (delta) {
            write({ type_url: typeUrl, resource_names_subscribe: t.names, resource_names_unsubscribe: [],
                initial_resource_versions: Object.fromEntries(t.has) });
        } else {
            write({ type_url: typeUrl, version_info: t.version, resource_names: t.names, response_nonce: '' });
        }
    }
}

function command(c) {
    const t = c.type_url ? typeOf(c.type_url) : null;
    switch (c.op) {
    case 'subscribe':
        if (delta) {
            t.names = [...new Set([...t.names, ...c.names])];
            write({ type_url: c.type_url, resource_names_subscribe: c.names, resource_names_unsubscribe: [] });
        } else {
            t.names = c.names;
            write({ type_url: c.type_url, version_info: t.version, resource_names: t.names,
                response_nonce: t.nonce || '' });
        }
        break;
    case 'unsubscribe':
        t.names = t.names.filter((n) => !c.names.includes(n));
        write({ type_url: c.type_url, resource_names_subscribe: [], resource_names_unsubscribe: c.names });
        break;
    case 'nack': t.nacks += c.count || 1; break;
    case 'close':
        closing = true;
        call.end();
        setTimeout(() => process.exit(0), 2000).unref();
        break;
    default: out({ event: 'error', message: `unknown op ${c.op}` }); return;
    }
    out({ event: 'done', op: c.op });
}

open();
readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim()) command(JSON.parse(line));
}).on('close', () => { if (!closing) command({ op: 'close' }); });
