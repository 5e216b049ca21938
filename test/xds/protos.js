// Envoy's official API protos (bundled in @grpc/grpc-js-xds) for the test
// control plane and client: include roots, a protobufjs root that loads a
// package's files when one of its types is first needed, and proto3 JSON
// (Envoy's YAML/JSON config form) to wire bytes.
'use strict';

const fs = require('fs');
const path = require('path');
const protobuf = require('protobufjs');

const DEPS = path.join(__dirname, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
const INCLUDES = ['envoy-api', 'googleapis', 'xds', 'protoc-gen-validate']
    .map((d) => path.join(DEPS, d))
    .concat(path.dirname(require.resolve('protobufjs/package.json')));

const TYPE_PREFIX = 'type.googleapis.com/';
const TYPES = {
    lds: 'envoy.config.listener.v3.Listener',
    cds: 'envoy.config.cluster.v3.Cluster',
    rds: 'envoy.config.route.v3.RouteConfiguration',
    eds: 'envoy.config.endpoint.v3.ClusterLoadAssignment',
    sds: 'envoy.extensions.transport_sockets.tls.v3.Secret',
    rtds: 'envoy.service.runtime.v3.Runtime',
};
// the per-type services and their streams, with the type each one carries
const SERVICES = {
    lds: ['envoy/service/listener/v3/lds.proto', 'envoy.service.listener.v3.ListenerDiscoveryService',
        'StreamListeners', 'DeltaListeners'],
    cds: ['envoy/service/cluster/v3/cds.proto', 'envoy.service.cluster.v3.ClusterDiscoveryService',
        'StreamClusters', 'DeltaClusters'],
    rds: ['envoy/service/route/v3/rds.proto', 'envoy.service.route.v3.RouteDiscoveryService',
        'StreamRoutes', 'DeltaRoutes'],
    eds: ['envoy/service/endpoint/v3/eds.proto', 'envoy.service.endpoint.v3.EndpointDiscoveryService',
        'StreamEndpoints', 'DeltaEndpoints'],
    sds: ['envoy/service/secret/v3/sds.proto', 'envoy.service.secret.v3.SecretDiscoveryService',
        'StreamSecrets', 'DeltaSecrets'],
    rtds: ['envoy/service/runtime/v3/rtds.proto', 'envoy.service.runtime.v3.RuntimeDiscoveryService',
        'StreamRuntime', 'DeltaRuntime'],
    ads: ['envoy/service/discovery/v3/ads.proto',
        'envoy.service.discovery.v3.AggregatedDiscoveryService',
        'StreamAggregatedResources', 'DeltaAggregatedResources'],
};
// LDS and CDS subscriptions start as wildcard; the others name resources
const WILDCARD_TYPES = new Set([TYPE_PREFIX + TYPES.lds, TYPE_PREFIX + TYPES.cds]);

function resolveInclude(target) {
    for (const inc of INCLUDES) {
        const p = path.join(inc, target);
        if (fs.existsSync(p)) return p;
    }
    return null;
}

const root = new protobuf.Root();
root.resolvePath = (origin, target) => {
    if (path.isAbsolute(target)) return target;
    return resolveInclude(target) || target; // google/protobuf/*: protobufjs's own
};
const loadedDirs = new Set();

// The message type of a full name, loading every file of its package (found
// by stripping names off the end until a directory exists) on first use.
function lookupType(fullName) {
    const found = root.lookup(fullName);
    if (found instanceof protobuf.Type) return found;
    const parts = fullName.split('.');
    for (let n = parts.length - 1; n > 0; n--) {
        const dir = parts.slice(0, n).join('/');
        const abs = resolveInclude(dir);
        if (!abs || !fs.statSync(abs).isDirectory()) continue;
        if (!loadedDirs.has(dir)) {
            loadedDirs.add(dir);
            const files = fs.readdirSync(abs).filter((f) => f.endsWith('.proto'))
                .map((f) => `${dir}/${f}`);
            if (files.length) {
                root.loadSync(files, { keepCase: true });
                root.resolveAll();
            }
            const again = root.lookup(fullName);
            if (again instanceof protobuf.Type) return again;
        }
        break;
    }
    throw new Error(`unknown message type ${fullName}`);
}

function camel(name) {
    return name.replace(/_([a-z0-9])/g, (m, c) => c.toUpperCase());
}

function fieldById(type, id) {
    return type.fieldsArray.find((f) => f.id === id).name;
}

function parseDuration(s) {
    const m = /^(-?)(\d+)(?:\.(\d{1,9}))?s$/.exec(String(s));
    if (!m) throw new Error(`bad Duration "${s}"`);
    const sign = m[1] ? -1 : 1;
    return { seconds: sign * Number(m[2]), nanos: sign * Number((m[3] || '').padEnd(9, '0')) };
}

const WRAPPERS = new Set(['DoubleValue', 'FloatValue', 'Int64Value', 'UInt64Value', 'Int32Value',
    'UInt32Value', 'BoolValue', 'StringValue', 'BytesValue'].map((n) => `.google.protobuf.${n}`));

// proto3 JSON -> the object form protobufjs's fromObject takes. Field names
// may be the proto names or lowerCamelCase; an unknown one is an error, as
// in Envoy's config loading.
function fromJson(type, json) {
    const t = type.fullName;
    if (t === '.google.protobuf.Any') {
        const { '@type': url, ...rest } = json;
        if (!url) throw new Error('Any without @type');
        const inner = lookupType(url.slice(url.lastIndexOf('/') + 1));
        const special = inner.fullName.startsWith('.google.protobuf.') && 'value' in rest &&
            Object.keys(rest).length === 1 && !inner.fields.value;
        return { type_url: url, value: encode(inner, special ? rest.value : rest) };
    }
    if (t === '.google.protobuf.Duration') return parseDuration(json);
    if (t === '.google.protobuf.Timestamp') {
        const ms = Date.parse(json);
        if (Number.isNaN(ms)) throw new Error(`bad Timestamp "${json}"`);
        return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
    }
    if (WRAPPERS.has(t)) return { value: json };
    if (t === '.google.protobuf.Struct') {
        const v = lookupType('google.protobuf.Value');
        return { fields: Object.fromEntries(Object.entries(json).map(([k, x]) => [k, fromJson(v, x)])) };
    }
    if (t === '.google.protobuf.ListValue') {
        const v = lookupType('google.protobuf.Value');
        return { values: json.map((x) => fromJson(v, x)) };
    }
    if (t === '.google.protobuf.Value') {
        if (json === null) return { [fieldById(type, 1)]: 0 };
        if (typeof json === 'number') return { [fieldById(type, 2)]: json };
        if (typeof json === 'string') return { [fieldById(type, 3)]: json };
        if (typeof json === 'boolean') return { [fieldById(type, 4)]: json };
        if (Array.isArray(json)) {
            return { [fieldById(type, 6)]: fromJson(lookupType('google.protobuf.ListValue'), json) };
        }
        return { [fieldById(type, 5)]: fromJson(lookupType('google.protobuf.Struct'), json) };
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) {
        throw new Error(`${t.slice(1)}: expected an object, got ${JSON.stringify(json)}`);
    }
    const out = {};
    for (const [key, value] of Object.entries(json)) {
        const field = type.fields[key] || type.fieldsArray.find((f) => camel(f.name) === key);
        if (!field) throw new Error(`${t.slice(1)}: unknown field "${key}"`);
        field.resolve();
        const conv = (x) => (field.resolvedType instanceof protobuf.Type
            ? fromJson(field.resolvedType, x) : x);
        if (field.map) {
            out[field.name] = Object.fromEntries(Object.entries(value).map(([k, x]) => [k, conv(x)]));
        } else if (field.repeated) {
            out[field.name] = value.map(conv);
        } else {
            out[field.name] = conv(value);
        }
    }
    return out;
}

function encode(type, json) {
    const obj = fromJson(type, json);
    const msg = type.fromObject(obj);
    const err = type.verify(msg);
    if (err) throw new Error(`${type.fullName.slice(1)}: ${err}`);
    return Buffer.from(type.encode(msg).finish());
}

// Wire bytes of an Any's payload -> JSON-ish object (protobufjs's form:
// Durations as {seconds, nanos}, nested Anys with "@type").
function decodeAny(typeUrl, bytes) {
    const type = lookupType(typeUrl.slice(typeUrl.lastIndexOf('/') + 1));
    return type.toObject(type.decode(bytes), { longs: String, enums: String, bytes: String, json: true });
}

module.exports = { DEPS, INCLUDES, TYPE_PREFIX, TYPES, SERVICES, WILDCARD_TYPES, lookupType, encode,
    decodeAny };
