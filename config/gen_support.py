#!/usr/bin/env python3
"""gen_support.py: turns config/support.table into C (support_table.c) and
into docs/envoy-compatibility.md.

    gen_support.py TABLE --c OUT.c
    gen_support.py TABLE --doc OUT.md
    gen_support.py TABLE --check-doc DOC.md   (exit 1 if DOC.md is stale)

Table syntax (one entry a line, '#' starts a comment line):

    message <full.message.Name>
    message <full.message.Name> @ <parent.Message.field>   (fields that differ
                                   when the message is reached through that field)
      <field>  yes  [rule ...] [-- note]
      <field>  hint <why it is only a hint>
      <field>  no   <the feature SHARP does not implement>
    extension <full.type.Name>  yes|no  <what the extension is>

Rules are Envoy's validation constraints: gt=X gte=X lt=X lte=X (X a number
or a duration such as 0s, 1ms, 300s), required, min_len=N, min_items=N,
defined (an enum value must be one of the enum's values), const=X (the only
value SHARP implements; the note after -- says why).
"""
import re
import sys

DUR = re.compile(r'^(-?\d+(?:\.\d+)?)(ns|us|ms|s|m|h)$')
UNITS = {'ns': 1e-9, 'us': 1e-6, 'ms': 1e-3, 's': 1.0, 'm': 60.0, 'h': 3600.0}
OPS = {'gt': 'SHARP_RULE_GT', 'gte': 'SHARP_RULE_GTE', 'lt': 'SHARP_RULE_LT', 'lte': 'SHARP_RULE_LTE',
       'min_len': 'SHARP_RULE_MIN_LEN', 'min_items': 'SHARP_RULE_MIN_ITEMS', 'const': 'SHARP_RULE_CONST'}
STATUS = {'yes': 'SHARP_FIELD_YES', 'no': 'SHARP_FIELD_NO', 'hint': 'SHARP_FIELD_HINT'}


class TableError(Exception):
    pass


def number(text, where):
    m = DUR.match(text)
    if m:
        return float(m.group(1)) * UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        raise TableError(f'{where}: bad number "{text}"')


def parse_rule(tok, where):
    if tok == 'required':
        return ('SHARP_RULE_REQUIRED', 0.0, tok)
    if tok == 'defined':
        return ('SHARP_RULE_DEFINED', 0.0, tok)
    if '=' in tok:
        op, val = tok.split('=', 1)
        if op in OPS:
            return (OPS[op], number(val, where), tok)
    raise TableError(f'{where}: unknown rule "{tok}"')


def parse(path):
    messages = {}   # name -> list of (field, status, note, rules)
    order = []
    extensions = {}
    current = None
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            where = f'{path}:{n}'
            line = raw.rstrip('\n')
            if not line.strip() or line.lstrip().startswith('#'):
                continue
            words = line.split()
            if not line[0].isspace():
                if words[0] == 'message' and (len(words) == 2 or (len(words) == 4 and words[2] == '@')):
                    current = words[1] if len(words) == 2 else words[1] + '@' + words[3]
                    if current in messages:
                        raise TableError(f'{where}: message {current} listed twice')
                    messages[current] = []
                    order.append(current)
                    continue
                if words[0] == 'extension' and len(words) >= 3:
                    name, status = words[1], words[2]
                    if status not in ('yes', 'no'):
                        raise TableError(f'{where}: extension status must be yes or no')
                    if name in extensions:
                        raise TableError(f'{where}: extension {name} listed twice')
                    note = ' '.join(words[3:])
                    if not note:
                        raise TableError(f'{where}: an extension needs a description')
                    extensions[name] = (status, note)
                    current = None
                    continue
                raise TableError(f'{where}: expected "message NAME" or "extension NAME STATUS NOTE"')
            if current is None:
                raise TableError(f'{where}: field line outside a message')
            if len(words) < 2 or words[1] not in STATUS:
                raise TableError(f'{where}: expected "<field> yes|hint|no ..."')
            field, status, rest = words[0], words[1], words[2:]
            rules, note = [], ''
            if status in ('yes', 'hint'):
                if '--' in rest:
                    i = rest.index('--')
                    note = ' '.join(rest[i + 1:])
                    rest = rest[:i]
                rules = [parse_rule(t, where) for t in rest]
                if len(rules) > 4:
                    raise TableError(f'{where}: at most 4 rules')
                if status == 'hint' and not note:
                    raise TableError(f'{where}: "hint" needs "-- <why>"')
                if any(r[0] == 'SHARP_RULE_CONST' for r in rules) and not note:
                    raise TableError(f'{where}: a const rule needs "-- <why only this value>"')
            else:
                note = ' '.join(rest)
                if not note:
                    raise TableError(f'{where}: "{status}" needs the feature or the reason')
            if any(e[0] == field for e in messages[current]):
                raise TableError(f'{where}: field {field} listed twice')
            messages[current].append((field, status, note, rules))
    return messages, order, extensions


def cstr(s):
    if s is None or s == '':
        return 'NULL'
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'


def emit_c(messages, extensions, out):
    rows = []
    for msg, fields in messages.items():
        for field, status, note, rules in fields:
            rows.append((msg, field, status, note, rules))
    rows.sort(key=lambda r: (r[0].encode(), r[1].encode()))
    o = ['/* Generated by config/gen_support.py from config/support.table: do not edit. */',
         '#include "config/support.h"', '',
         'const sharp_support_field_t sharp_support_fields[] = {']
    for msg, field, status, note, rules in rows:
        rs = ', '.join('{%s, %r, %s, %s}' % (op, x, cstr(t), cstr(note) if op == 'SHARP_RULE_CONST' else 'NULL')
                       for op, x, t in rules)
        o.append('    {%s, %s, %s, %s, %d, {%s}},' % (cstr(msg), cstr(field), STATUS[status], cstr(note),
                                                     len(rules), rs))
    o.append('};')
    o.append('const size_t sharp_support_nfields = sizeof sharp_support_fields / sizeof sharp_support_fields[0];')
    o.append('')
    o.append('const sharp_support_extension_t sharp_support_extensions[] = {')
    for name in sorted(extensions, key=lambda s: s.encode()):
        status, note = extensions[name]
        o.append('    {%s, %s, %s},' % (cstr(name), STATUS[status], cstr(note)))
    o.append('};')
    o.append('const size_t sharp_support_nextensions = '
             'sizeof sharp_support_extensions / sizeof sharp_support_extensions[0];')
    out.write('\n'.join(o) + '\n')


def md_cell(s):
    return s.replace('|', '\\|')


def emit_doc(messages, order, extensions, out):
    o = ['# Envoy compatibility', '',
         '<!-- Generated by config/gen_support.py from config/support.table: do not edit. -->', '',
         'SHARP reads Envoy v3 bootstraps. This page lists, for every Envoy message SHARP maps, '
         'which fields it implements and which it refuses, and which extensions (`typed_config` '
         'types) it implements. The configuration loader enforces the same table: a field marked '
         '**refused** is a startup error when it is set to anything but its default, naming the '
         'field path, `file:line:col` and the feature; a field not in the table at all is refused '
         'the same way. **yes** fields are validated with Envoy\'s rules (shown in the third column) '
         'and have the effect Envoy documents. **hint** fields are accepted and, as in Envoy, '
         'change no behaviour SHARP has (the reason is given).', '',
         'The same table is used for configuration received over the wire, so nothing a control '
         'plane sends can be silently dropped either.', '']
    yes = sum(1 for m in messages.values() for f in m if f[1] == 'yes')
    no = sum(1 for m in messages.values() for f in m if f[1] == 'no')
    hint = sum(1 for m in messages.values() for f in m if f[1] == 'hint')
    o.append(f'{len(messages)} messages: {yes} fields implemented, {hint} accepted as hints, {no} refused. '
             f'{sum(1 for e in extensions.values() if e[0] == "yes")} extensions implemented, '
             f'{sum(1 for e in extensions.values() if e[0] == "no")} known Envoy extensions refused by name.')
    o.append('')
    o.append('## Extensions')
    o.append('')
    o.append('| type | status | what |')
    o.append('|---|---|---|')
    for name in sorted(extensions, key=lambda s: (extensions[s][0] != 'yes', s)):
        status, note = extensions[name]
        o.append(f'| `{name}` | {"yes" if status == "yes" else "refused"} | {md_cell(note)} |')
    o.append('')
    o.append('## Messages')
    for msg in order:
        o.append('')
        if '@' in msg:
            name, ctx = msg.split('@', 1)
            o.append(f'### {name} (in `{ctx}`)')
            o.append('')
            o.append(f'Reached through `{ctx}`, these fields differ from the general entry for {name}.')
        else:
            o.append(f'### {msg}')
        o.append('')
        o.append('| field | status | rules / notes |')
        o.append('|---|---|---|')
        for field, status, note, rules in messages[msg]:
            label = {'yes': 'yes', 'no': 'refused', 'hint': 'hint'}[status]
            detail = ' '.join(f'`{t}`' for _, _, t in rules)
            if note:
                detail = (detail + ' ' if detail else '') + md_cell(note)
            o.append(f'| `{field}` | {label} | {detail} |')
    out.write('\n'.join(o) + '\n')


def main(argv):
    if len(argv) != 4 or argv[2] not in ('--c', '--doc', '--check-doc'):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        messages, order, extensions = parse(argv[1])
    except TableError as e:
        print(f'gen_support: {e}', file=sys.stderr)
        return 1
    if argv[2] == '--c':
        with open(argv[3], 'w') as f:
            emit_c(messages, extensions, f)
        return 0
    import io
    buf = io.StringIO()
    emit_doc(messages, order, extensions, buf)
    if argv[2] == '--doc':
        with open(argv[3], 'w') as f:
            f.write(buf.getvalue())
        return 0
    try:
        with open(argv[3]) as f:
            current = f.read()
    except OSError:
        current = None
    if current != buf.getvalue():
        print(f'gen_support: {argv[3]} is out of date with {argv[1]}; '
              f'run: python3 config/gen_support.py {argv[1]} --doc {argv[3]}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
