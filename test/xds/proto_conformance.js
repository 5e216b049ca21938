#!/usr/bin/env node
// Checks SHARP's hand-written protos (proto/) against Envoy's official API
// protos as published in the npm package @grpc/grpc-js-xds (deps/envoy-api,
// deps/googleapis, deps/xds, deps/protoc-gen-validate) and protobufjs's
// copies of the well-known types.
//
// For every message, enum and service SHARP declares in a package the
// official set has (envoy.*, google.*), the official one must exist and every
// field SHARP declares must exist there with the same number, type (scalar
// kind, or message/enum full name), label (singular, repeated, map) and oneof
// membership; enum values must have the same numbers; rpc methods the same
// request/response types and streaming. SHARP declares a subset: what it
// omits is counted, not reported. Packages the official set does not have
// (sharp.* extensions, grpc.health.v1) are listed as skipped.
//
// Prints one line per mismatch and a summary; exits 1 on any mismatch.
'use strict';

const fs = require('fs');
const path = require('path');
const protobuf = require('protobufjs');

const REPO = path.resolve(__dirname, '..', '..');
const SHARP_ROOT = path.resolve(process.argv[2] || path.join(REPO, 'proto'));
const DEPS = path.join(__dirname, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
const OFFICIAL_INCLUDES = ['envoy-api', 'googleapis', 'xds', 'protoc-gen-validate']
    .map((d) => path.join(DEPS, d))
    // google/protobuf/descriptor.proto (for custom options)
    .concat(path.dirname(require.resolve('protobufjs/package.json')));

function protoFiles(dir, rel = '') {
    const out = [];
    for (const ent of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
        const r = path.join(rel, ent.name);
        if (ent.isDirectory()) out.push(...protoFiles(dir, r));
        else if (ent.name.endsWith('.proto')) out.push(r);
    }
    return out.sort();
}

// SHARP's tree is parsed file by file rather than with Root.load: protobufjs
// substitutes its bundled definitions for any path containing
// "google/protobuf/", which would hide SHARP's own copies of those files.
function loadSharp() {
    const root = new protobuf.Root();
    const fileOf = new Map(); // full name -> file, for the report
    for (const rel of protoFiles(SHARP_ROOT)) {
        const src = fs.readFileSync(path.join(SHARP_ROOT, rel), 'utf8');
        const parsed = protobuf.parse(src, root, { keepCase: true, alternateCommentMode: true });
        const ns = parsed.package ? root.lookup(parsed.package) : root;
        // objects parsed from this file are those without a filename yet
        (function mark(obj) {
            if (obj.filename === null && obj !== root) obj.filename = rel;
            for (const nested of obj.nestedArray || []) mark(nested);
        })(ns);
    }
    root.resolveAll();
    (function index(obj) {
        if (obj instanceof protobuf.Type || obj instanceof protobuf.Enum ||
            obj instanceof protobuf.Service) fileOf.set(obj.fullName.slice(1), obj.filename);
        for (const nested of obj.nestedArray || []) index(nested);
    })(root);
    return { root, fileOf };
}

// Non-Envoy protos that official Envoy files import but the bundle lacks:
// SHARP's own copy stands in for the import, so the Envoy file that imports
// it is still compared (envoy/service/metrics/v3 imports the Prometheus
// client model). The stand-in's own package is not in the official set and
// is listed as skipped.
const STAND_INS = ['io/prometheus/client/'];
function standIn(rel) {
    return STAND_INS.some((p) => rel.startsWith(p)) && fs.existsSync(path.join(SHARP_ROOT, rel))
        ? path.join(SHARP_ROOT, rel) : null;
}

// Whether an official file and everything it imports are in the bundle
// (envoy/config/trace/v3/opencensus.proto imports OpenCensus protos the
// bundle lacks; such a file is left out, its package's other files stay).
function loadable(rel, seen = new Map()) {
    if (rel.startsWith('google/protobuf/')) return true; // protobufjs's bundled copies
    if (seen.has(rel)) return seen.get(rel);
    seen.set(rel, true); // an import cycle is fine
    const inc = OFFICIAL_INCLUDES.find((i) => fs.existsSync(path.join(i, rel)));
    const file = inc ? path.join(inc, rel) : standIn(rel);
    let ok = !!file;
    if (ok) {
        const src = fs.readFileSync(file, 'utf8');
        for (const m of src.matchAll(/^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"/gm)) {
            if (!loadable(m[1], seen)) {
                ok = false;
                break;
            }
        }
    }
    seen.set(rel, ok);
    return ok;
}

// The official files of every package SHARP declares: all .proto files in the
// package's directory, so a message is found whichever file Envoy keeps it in.
function loadOfficial(packages) {
    const root = new protobuf.Root();
    root.resolvePath = (origin, target) => {
        if (path.isAbsolute(target)) return target;
        for (const inc of OFFICIAL_INCLUDES) {
            const p = path.join(inc, target);
            if (fs.existsSync(p)) return p;
        }
        const p = standIn(target);
        if (p) return p;
        return target; // google/protobuf/*: protobufjs's bundled copies
    };
    const files = [];
    const missing = [];
    for (const pkg of packages) {
        const dir = pkg.replace(/\./g, '/');
        if (dir === 'google/protobuf') {
            for (const n of ['any', 'duration', 'empty', 'struct', 'timestamp', 'wrappers',
                'field_mask', 'descriptor']) files.push(`google/protobuf/${n}.proto`);
            continue;
        }
        const inc = OFFICIAL_INCLUDES.find((i) => fs.existsSync(path.join(i, dir)));
        if (!inc) {
            missing.push(pkg);
            continue;
        }
        for (const ent of fs.readdirSync(path.join(inc, dir))) {
            if (ent.endsWith('.proto') && loadable(`${dir}/${ent}`)) files.push(`${dir}/${ent}`);
        }
    }
    root.loadSync(files, { keepCase: true, alternateCommentMode: true });
    root.resolveAll();
    return { root, missing };
}

// The names Envoy added after the bundled snapshot (newer_than_bundled.txt),
// and fields it retyped since (same number, a newer message type).
function loadNewer() {
    const file = path.join(__dirname, 'newer_than_bundled.txt');
    const names = new Set();
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
        const name = line.replace(/#.*/, '').trim().split(/\s+/)[0];
        if (name) names.add(name);
    }
    return names;
}

// protobufjs's bundled well-known types spell some field names in camelCase
// (google.protobuf.Value.nullValue...): look those up by either spelling.
function officialField(type, name) {
    if (type.fields[name]) return type.fields[name];
    if (type.fullName.startsWith('.google.protobuf.')) {
        return type.fields[name.replace(/_([a-z])/g, (m, c) => c.toUpperCase())];
    }
    return undefined;
}

function packageOf(obj) {
    // innermost enclosing namespace that is not a message
    let p = obj.parent;
    while (p && (p instanceof protobuf.Type)) p = p.parent;
    return p && p.fullName ? p.fullName.slice(1) : '';
}

function collect(root) {
    const out = [];
    (function walk(obj) {
        if (obj instanceof protobuf.Type || obj instanceof protobuf.Enum ||
            obj instanceof protobuf.Service) out.push(obj);
        for (const nested of obj.nestedArray || []) walk(nested);
    })(root);
    return out;
}

function typeName(field) {
    if (field.resolvedType) return field.resolvedType.fullName.slice(1);
    return field.type;
}

function describe(field) {
    const type = field.map ? `map<${field.keyType}, ${typeName(field)}>` : typeName(field);
    const label = field.map ? 'map' : field.repeated ? 'repeated' : 'singular';
    const oneof = field.partOf && !field.options?.proto3_optional
        ? ` in oneof ${field.partOf.name}` : '';
    const optional = field.options?.proto3_optional ? ' optional' : '';
    return `${field.id} ${label}${optional} ${type}${oneof}`;
}

function main() {
    if (!fs.existsSync(DEPS)) {
        console.error(`proto_conformance: ${DEPS} not found: run "npm ci" in test/xds (make deps does)`);
        process.exit(2);
    }
    const sharp = loadSharp();
    const sharpObjs = collect(sharp.root);
    const packages = [...new Set(sharpObjs.map(packageOf))]
        .filter((p) => !p.startsWith('sharp.')).sort();
    const official = loadOfficial(packages);
    const skipped = new Set([...official.missing,
        ...sharpObjs.map(packageOf).filter((p) => p.startsWith('sharp.'))]);

    const newer = loadNewer();
    const newerUsed = new Set();
    const mismatches = [];
    const stats = { messages: 0, fields: 0, enums: 0, values: 0, services: 0, methods: 0,
        omittedFields: 0, omittedMessages: 0, newer: 0 };
    const report = (obj, what, sharpSide, envoySide) => {
        const file = sharp.fileOf.get(obj.fullName.slice(1)) || '?';
        mismatches.push(`MISMATCH proto/${file}: ${obj.fullName.slice(1)}${what ? '.' + what : ''}: ` +
            `SHARP ${sharpSide} vs Envoy ${envoySide}`);
    };

    for (const obj of sharpObjs) {
        if (skipped.has(packageOf(obj))) continue;
        const name = obj.fullName.slice(1);
        const theirs = official.root.lookup(name);
        const kind = obj instanceof protobuf.Type ? protobuf.Type
            : obj instanceof protobuf.Enum ? protobuf.Enum : protobuf.Service;
        // a message newer than the bundle, or nested in one
        const newerAncestor = [...newer].find((n) => name === n || name.startsWith(n + '.'));
        if (newerAncestor && !official.root.lookup(newerAncestor)) {
            newerUsed.add(newerAncestor);
            stats.newer++;
            continue;
        }
        if (!theirs || !(theirs instanceof kind)) {
            report(obj, '', `declares ${kind.name.toLowerCase()} ${name}`,
                theirs ? `has a ${theirs.constructor.name.toLowerCase()} there` : 'has no such name');
            continue;
        }
        if (obj instanceof protobuf.Type) {
            stats.messages++;
            for (const f of obj.fieldsArray) {
                stats.fields++;
                const g = officialField(theirs, f.name);
                const byNumber = theirs.fieldsArray.find((x) => x.id === f.id);
                if (!g && newer.has(`${name}.${f.name}`)) {
                    newerUsed.add(`${name}.${f.name}`);
                    stats.newer++;
                    // Envoy never reuses a number: a newer field's must be free
                    if (byNumber || theirs.isReservedId(f.id)) {
                        report(obj, f.name, describe(f), byNumber
                            ? `uses ${f.id} for "${byNumber.name}"` : `reserves ${f.id}`);
                    }
                    continue;
                }
                if (!g) {
                    report(obj, f.name, describe(f), byNumber ? `names field ${f.id} ` +
                        `"${byNumber.name}" (${describe(byNumber)})` : 'has no such field');
                    continue;
                }
                const a = describe(f);
                const b = describe(g);
                if (a !== b && newer.has(`${name}.${f.name}`) && f.id === g.id) {
                    // retyped by Envoy after the bundled snapshot, wire-compatible
                    // (the same number): listed in newer_than_bundled.txt
                    newerUsed.add(`${name}.${f.name}`);
                    stats.newer++;
                    continue;
                }
                if (a !== b) report(obj, f.name, a, b);
            }
            stats.omittedFields += theirs.fieldsArray
                .filter((g) => !obj.fieldsArray.some((f) => officialField(theirs, f.name) === g))
                .length;
            const ours = new Set((obj.nestedArray || []).map((n) => n.name));
            stats.omittedMessages += (theirs.nestedArray || [])
                .filter((n) => n instanceof protobuf.Type && !ours.has(n.name)).length;
        } else if (obj instanceof protobuf.Enum) {
            stats.enums++;
            for (const [vname, vnum] of Object.entries(obj.values)) {
                stats.values++;
                if (!(vname in theirs.values) && newer.has(`${name}.${vname}`)) {
                    newerUsed.add(`${name}.${vname}`);
                    stats.newer++;
                    const other = Object.keys(theirs.values).find((k) => theirs.values[k] === vnum);
                    if (other) report(obj, vname, `value ${vnum}`, `uses ${vnum} for ${other}`);
                } else if (!(vname in theirs.values)) {
                    report(obj, vname, `value ${vnum}`, 'has no such value');
                } else if (theirs.values[vname] !== vnum) {
                    report(obj, vname, `value ${vnum}`, `value ${theirs.values[vname]}`);
                }
            }
        } else {
            stats.services++;
            for (const m of obj.methodsArray) {
                stats.methods++;
                const g = theirs.methods[m.name];
                const sig = (x) => `${x.requestStream ? 'stream ' : ''}` +
                    `${x.resolvedRequestType.fullName.slice(1)} -> ` +
                    `${x.responseStream ? 'stream ' : ''}${x.resolvedResponseType.fullName.slice(1)}`;
                if (!g) report(obj, m.name, sig(m), 'has no such method');
                else if (sig(m) !== sig(g)) report(obj, m.name, sig(m), sig(g));
            }
        }
    }
    // top-level messages of the compared packages that SHARP leaves out
    for (const pkg of packages) {
        if (skipped.has(pkg)) continue;
        const ns = official.root.lookup(pkg);
        for (const n of ns?.nestedArray || []) {
            if (n instanceof protobuf.Type && !sharp.root.lookup(n.fullName.slice(1))) {
                stats.omittedMessages++;
            }
        }
    }

    for (const n of newer) {
        if (!newerUsed.has(n)) {
            mismatches.push(`STALE test/xds/newer_than_bundled.txt: ${n}: the bundled Envoy API ` +
                'has it now, or SHARP no longer declares it: remove the line');
        }
    }

    for (const line of mismatches) console.log(line);
    console.log(`compared ${stats.messages} messages (${stats.fields} fields), ` +
        `${stats.enums} enums (${stats.values} values), ${stats.services} services ` +
        `(${stats.methods} methods) in ${packages.length - official.missing.length} packages ` +
        'against the official protos');
    console.log(`not declared by SHARP (a subset, fine): ${stats.omittedFields} fields of compared ` +
        `messages, ${stats.omittedMessages} messages of compared packages`);
    console.log(`newer than the bundled Envoy API (newer_than_bundled.txt, numbers checked free): ` +
        `${stats.newer}`);
    console.log(`skipped (not in the official set): ${[...skipped].sort().join(', ') || 'none'}`);
    console.log(`${mismatches.length} mismatches`);
    process.exit(mismatches.length ? 1 : 0);
}

main();
