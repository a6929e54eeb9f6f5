/* OTLP `TracesData` protobuf -> span records, read straight off the wire (`handlers/otlp.py`).

   `scan` walks the whole message as upb parses it (every field of the opentelemetry-proto schema
   checked: lengths, wire types, UTF-8 of each string field, nesting), and builds only what the
   mapping reads: per span its hex ids, name, scope, times, the attributes named in `keys` or
   starting with one of `prefixes` (a dict), and its events with their `event_keys` attributes.
   Spans with none of the first `markers` keys are only counted.

   It never decides that a payload is bad: on anything it does not read exactly as protobuf would
   (bad wire format, invalid UTF-8, a message field given twice, which protobuf merges, a group, an
   attribute entry with fields beside its key and value, nesting past MAX_DEPTH, more than MAX_KEYS
   keys asked for) it returns None and the caller parses the payload with protobuf, whose verdict
   stands. So where it answers, it answers as `read_spans`' protobuf path does
   (tests/unit/handlers/test_otlp_wire.py compares them on real and hostile payloads). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64 /* upb's limit is 100; deeper than this, protobuf decides */
#define MAX_KEYS 256

typedef struct {
    const uint8_t *p, *end;
} buf_t;

typedef struct {
    uint32_t number;
    uint32_t wire;  /* 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
    uint64_t value; /* varint or fixed */
    buf_t data;     /* length-delimited */
} field_t;

/* 1: a field read; 0: end of the message; -1: not read as protobuf would (the caller falls back) */
static int next_field(buf_t *b, field_t *f) {
    if (b->p >= b->end) return 0;
    uint64_t v[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        int shift = 0;
        for (;;) {
            if (b->p >= b->end || shift > 63) return -1;
            uint8_t c = *b->p++;
            if (shift == 63 && c > 1) return -1;
            v[k] |= (uint64_t)(c & 0x7f) << shift;
            if (!(c & 0x80)) break;
            shift += 7;
        }
        if (k == 0) {
            if (v[0] > 0xffffffffu || (v[0] >> 3) == 0) return -1;
            f->number = (uint32_t)(v[0] >> 3);
            f->wire = (uint32_t)(v[0] & 7);
            if (f->wire == 1 || f->wire == 5) {
                size_t size = f->wire == 1 ? 8 : 4;
                if ((size_t)(b->end - b->p) < size) return -1;
                uint64_t x = 0;
                memcpy(&x, b->p, size); /* little-endian hosts only: checked at import */
                f->value = x;
                b->p += size;
                return 1;
            }
            if (f->wire != 0 && f->wire != 2) return -1; /* groups and invalid wire types */
        }
    }
    if (f->wire == 0) {
        f->value = v[1];
        return 1;
    }
    if (v[1] > (uint64_t)(b->end - b->p)) return -1;
    f->data.p = b->p;
    f->data.end = b->p + v[1];
    b->p += v[1];
    return 1;
}

static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
        } else if (c >= 0xc2 && c <= 0xdf) {
            if (i + 1 >= n || (s[i + 1] & 0xc0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            if (i + 2 >= n || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80) return 0;
            if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] >= 0xa0)) return 0;
            i += 3;
        } else if (c >= 0xf0 && c <= 0xf4) {
            if (i + 3 >= n || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80 ||
                (s[i + 3] & 0xc0) != 0x80)
                return 0;
            if ((c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] >= 0x90)) return 0;
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* The schema, as opentelemetry-proto declares it: per message, each field's kind. */
enum kind { VARINT, FIXED64, FIXED32, BYTES, STRING, MESSAGE };
enum message {
    TRACES_DATA, RESOURCE_SPANS, RESOURCE, ENTITY_REF, KEY_VALUE, ANY_VALUE, ARRAY_VALUE,
    KEY_VALUE_LIST, SCOPE_SPANS, SCOPE, SPAN, EVENT, LINK, STATUS, MESSAGES
};
typedef struct {
    uint32_t number;
    enum kind kind;
    enum message message; /* MESSAGE fields */
    int repeated;
} schema_field_t;
typedef struct {
    const char *name;
    const schema_field_t *fields;
    int count;
} schema_t;

#define F(n, k) {n, k, 0, 0}
#define M(n, m, r) {n, MESSAGE, m, r}
static const schema_field_t traces_data_fields[] = {M(1, RESOURCE_SPANS, 1)};
static const schema_field_t resource_spans_fields[] = {M(1, RESOURCE, 0), M(2, SCOPE_SPANS, 1), F(3, STRING)};
static const schema_field_t resource_fields[] = {M(1, KEY_VALUE, 1), F(2, VARINT), M(3, ENTITY_REF, 1)};
static const schema_field_t entity_ref_fields[] = {F(1, STRING), F(2, STRING), {3, STRING, 0, 1}, {4, STRING, 0, 1}};
static const schema_field_t key_value_fields[] = {F(1, STRING), M(2, ANY_VALUE, 0), F(3, VARINT)};
static const schema_field_t any_value_fields[] = {F(1, STRING), F(2, VARINT), F(3, VARINT), F(4, FIXED64),
                                           M(5, ARRAY_VALUE, 0), M(6, KEY_VALUE_LIST, 0), F(7, BYTES),
                                           F(8, VARINT)};
static const schema_field_t array_value_fields[] = {M(1, ANY_VALUE, 1)};
static const schema_field_t key_value_list_fields[] = {M(1, KEY_VALUE, 1)};
static const schema_field_t scope_spans_fields[] = {M(1, SCOPE, 0), M(2, SPAN, 1), F(3, STRING)};
static const schema_field_t scope_fields[] = {F(1, STRING), F(2, STRING), M(3, KEY_VALUE, 1), F(4, VARINT)};
static const schema_field_t span_fields[] = {F(1, BYTES), F(2, BYTES), F(3, STRING), F(4, BYTES), F(16, FIXED32),
                                      F(5, STRING), F(6, VARINT), F(7, FIXED64), F(8, FIXED64),
                                      M(9, KEY_VALUE, 1), F(10, VARINT), M(11, EVENT, 1), F(12, VARINT),
                                      M(13, LINK, 1), F(14, VARINT), M(15, STATUS, 0)};
static const schema_field_t event_fields[] = {F(1, FIXED64), F(2, STRING), M(3, KEY_VALUE, 1), F(4, VARINT)};
static const schema_field_t link_fields[] = {F(1, BYTES), F(2, BYTES), F(3, STRING), M(4, KEY_VALUE, 1),
                                      F(5, VARINT), F(6, FIXED32)};
static const schema_field_t status_fields[] = {F(2, STRING), F(3, VARINT)};
#undef F
#undef M
#define S(name, fields) {name, fields, (int)(sizeof(fields) / sizeof(fields[0]))}
static const schema_t SCHEMA[MESSAGES] = {
    S("opentelemetry.proto.trace.v1.TracesData", traces_data_fields),
    S("opentelemetry.proto.trace.v1.ResourceSpans", resource_spans_fields),
    S("opentelemetry.proto.resource.v1.Resource", resource_fields),
    S("opentelemetry.proto.common.v1.EntityRef", entity_ref_fields),
    S("opentelemetry.proto.common.v1.KeyValue", key_value_fields),
    S("opentelemetry.proto.common.v1.AnyValue", any_value_fields),
    S("opentelemetry.proto.common.v1.ArrayValue", array_value_fields),
    S("opentelemetry.proto.common.v1.KeyValueList", key_value_list_fields),
    S("opentelemetry.proto.trace.v1.ScopeSpans", scope_spans_fields),
    S("opentelemetry.proto.common.v1.InstrumentationScope", scope_fields),
    S("opentelemetry.proto.trace.v1.Span", span_fields),
    S("opentelemetry.proto.trace.v1.Span.Event", event_fields),
    S("opentelemetry.proto.trace.v1.Span.Link", link_fields),
    S("opentelemetry.proto.trace.v1.Status", status_fields),
};
#undef S

#define MAX_FIELD 16 /* the highest field number of the schema */
static const schema_field_t *FIELDS[MESSAGES][MAX_FIELD + 1]; /* by field number, filled at import */

static const schema_field_t *schema_field(enum message m, uint32_t number) {
    return number <= MAX_FIELD ? FIELDS[m][number] : NULL;
}

static const uint32_t WIRE_OF[] = {[VARINT] = 0, [FIXED64] = 1, [FIXED32] = 5, [BYTES] = 2, [STRING] = 2,
                                   [MESSAGE] = 2};

/* The field's schema entry after checking it as protobuf would (NULL: unknown, skipped as protobuf
   skips it); sets *ok = 0 for what only protobuf may judge: a known field with another wire type,
   invalid UTF-8, a singular message field seen twice (`seen` bit per field number < 64). */
static const schema_field_t *check(enum message m, const field_t *f, uint64_t *seen, int *ok) {
    const schema_field_t *s = schema_field(m, f->number);
    if (s == NULL) return NULL;
    if (WIRE_OF[s->kind] != f->wire) {
        *ok = 0;
        return s;
    }
    if (s->kind == STRING && !utf8_valid(f->data.p, (size_t)(f->data.end - f->data.p))) *ok = 0;
    if (s->kind == MESSAGE && !s->repeated) {
        uint64_t bit = 1ull << (f->number & 63);
        if (*seen & bit) *ok = 0;
        *seen |= bit;
    }
    return s;
}

/* 1: the message is one protobuf reads alike; 0: not (fall back) */
static int valid(enum message m, buf_t b, int depth) {
    if (depth > MAX_DEPTH) return 0;
    field_t f = {0};
    uint64_t seen = 0;
    int r, ok = 1;
    while ((r = next_field(&b, &f)) == 1) {
        const schema_field_t *s = check(m, &f, &seen, &ok);
        if (!ok) return 0;
        if (s && s->kind == MESSAGE && !valid(s->message, f.data, depth + 1)) return 0;
    }
    return r == 0;
}

/* What to build: the wanted attribute keys, as UTF-8, with the str to use in the dicts, found by
   a small hash of length and end bytes (`bucket`: the first key of each bucket, `next`: the chain). */
#define BUCKETS 128
typedef struct {
    const char *utf8[MAX_KEYS];
    Py_ssize_t size[MAX_KEYS];
    PyObject *name[MAX_KEYS];
    int count;
    int bucket[BUCKETS], next[MAX_KEYS];
} keys_t;

static unsigned bucket_of(const uint8_t *key, Py_ssize_t n) {
    return n ? ((unsigned)n * 31u + key[0] * 7u + key[n - 1]) % BUCKETS : 0;
}

/* 0, -1 with an exception, or 1: more keys than MAX_KEYS (the payload is left to protobuf) */
static int keys_from(PyObject *tuple, keys_t *keys) {
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    if (n > MAX_KEYS) return 1;
    for (int b = 0; b < BUCKETS; b++) keys->bucket[b] = -1;
    for (Py_ssize_t i = n - 1; i >= 0; i--) { /* chains in tuple order: the first of equal keys wins */
        PyObject *key = PyTuple_GET_ITEM(tuple, i);
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "keys must be str");
            return -1;
        }
        keys->utf8[i] = PyUnicode_AsUTF8AndSize(key, &keys->size[i]);
        if (keys->utf8[i] == NULL) return -1;
        keys->name[i] = key;
        unsigned b = bucket_of((const uint8_t *)keys->utf8[i], keys->size[i]);
        keys->next[i] = keys->bucket[b];
        keys->bucket[b] = (int)i;
    }
    keys->count = (int)n;
    return 0;
}

/* index of the key in `keys`, -1 if absent */
static int key_index(const keys_t *keys, buf_t key) {
    Py_ssize_t n = key.end - key.p;
    for (int i = keys->bucket[bucket_of(key.p, n)]; i >= 0; i = keys->next[i])
        if (keys->size[i] == n && memcmp(keys->utf8[i], key.p, (size_t)n) == 0) return i;
    return -1;
}

static int has_prefix(const keys_t *prefixes, buf_t key) {
    Py_ssize_t n = key.end - key.p;
    for (int i = 0; i < prefixes->count; i++)
        if (prefixes->size[i] <= n && memcmp(prefixes->utf8[i], key.p, (size_t)prefixes->size[i]) == 0)
            return 1;
    return 0;
}

static char fallback_tag;
#define FALLBACK ((PyObject *)&fallback_tag) /* "let protobuf read it": compared, never dereferenced */

static PyObject *text(buf_t b) {
    return PyUnicode_DecodeUTF8((const char *)b.p, b.end - b.p, NULL);
}

static PyObject *key_values(buf_t b);

/* A (validated) AnyValue as `handlers.otlp.any_value` returns it; NULL with an exception, or FALLBACK. */
static PyObject *any_value_of(buf_t b) {
    field_t f = {0}, only = {0};
    int known = 0;
    while (next_field(&b, &f) == 1)
        if (schema_field(ANY_VALUE, f.number) != NULL) {
            known++;
            only = f;
        }
    if (known > 1) return FALLBACK; /* a oneof set twice: protobuf keeps the last, or merges */
    if (known == 0) Py_RETURN_NONE;
    switch (only.number) {
    case 1: return text(only.data);
    case 2: return PyBool_FromLong(only.value != 0);
    case 3: return PyLong_FromLongLong((long long)only.value);
    case 4: {
        double d;
        memcpy(&d, &only.value, sizeof d);
        return PyFloat_FromDouble(d);
    }
    case 5: {
        PyObject *list = PyList_New(0);
        if (list == NULL) return NULL;
        buf_t items = only.data;
        field_t item = {0};
        while (next_field(&items, &item) == 1) {
            if (item.number != 1) continue;
            PyObject *value = any_value_of(item.data);
            if (value == NULL || value == FALLBACK || PyList_Append(list, value) < 0) {
                Py_DECREF(list);
                if (value != FALLBACK) Py_XDECREF(value);
                return value == FALLBACK ? FALLBACK : NULL;
            }
            Py_DECREF(value);
        }
        return list;
    }
    case 6: return key_values(only.data);
    case 7: return PyBytes_FromStringAndSize((const char *)only.data.p, only.data.end - only.data.p);
    default: Py_RETURN_NONE; /* string_value_strindex: any_value knows no such kind */
    }
}

/* One KeyValue's key and value buffers (`value` NULL-data when absent); 1 if it has other fields. */
static int key_value_parts(buf_t b, buf_t *key, buf_t *value) {
    static const uint8_t empty = 0;
    field_t f = {0};
    int others = 0;
    key->p = key->end = &empty;
    value->p = value->end = NULL;
    while (next_field(&b, &f) == 1) {
        if (f.number == 1) *key = f.data;
        else if (f.number == 2) *value = f.data;
        else others = 1;
    }
    return others;
}

static PyObject *value_or_none(buf_t value) {
    if (value.p == NULL) Py_RETURN_NONE;
    return any_value_of(value);
}

/* A KeyValueList (already validated) as a dict, the last of a repeated key winning. */
static PyObject *key_values(buf_t b) {
    PyObject *dict = PyDict_New();
    if (dict == NULL) return NULL;
    field_t f = {0};
    while (next_field(&b, &f) == 1) {
        if (f.number != 1) continue;
        buf_t key, value;
        key_value_parts(f.data, &key, &value);
        PyObject *name = text(key);
        PyObject *v = name ? value_or_none(value) : NULL;
        if (v == NULL || v == FALLBACK || PyDict_SetItem(dict, name, v) < 0) {
            Py_XDECREF(name);
            if (v != FALLBACK) Py_XDECREF(v);
            Py_DECREF(dict);
            return v == FALLBACK ? FALLBACK : NULL;
        }
        Py_DECREF(name);
        Py_DECREF(v);
    }
    return dict;
}

/* One attribute of a (validated) Span or Event into `dict` if wanted; *marked set when its key is a
   marker (index < markers). 0, or -1 with an exception, or 1 to fall back: the attributes are a map
   to `_READ`, whose entries hold a key and a value only (protobuf keeps an entry with other fields,
   such as `key_strindex`, out of the map). */
static int wanted_attributes(buf_t attribute, PyObject *dict, const keys_t *keys, const keys_t *prefixes,
                             int markers, int *marked) {
    buf_t key, value;
    if (key_value_parts(attribute, &key, &value)) return 1;
    int i = key_index(keys, key);
    if (i >= 0 && i < markers) *marked = 1;
    PyObject *name = NULL;
    if (i >= 0) {
        name = keys->name[i];
        Py_INCREF(name);
    } else if (prefixes != NULL && has_prefix(prefixes, key)) {
        name = text(key);
        if (name == NULL) return -1;
    } else {
        return 0;
    }
    PyObject *v = value_or_none(value);
    if (v == NULL || v == FALLBACK) {
        Py_DECREF(name);
        return v == NULL ? -1 : 1;
    }
    int r = PyDict_SetItem(dict, name, v);
    Py_DECREF(name);
    Py_DECREF(v);
    return r;
}

static PyObject *hex(buf_t b) {
    static const char digits[] = "0123456789abcdef";
    Py_ssize_t n = b.end - b.p;
    PyObject *out = PyUnicode_New(2 * n, 127);
    if (out == NULL) return NULL;
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        o[2 * i] = (Py_UCS1)digits[b.p[i] >> 4];
        o[2 * i + 1] = (Py_UCS1)digits[b.p[i] & 15];
    }
    return out;
}

typedef struct {
    PyObject *span_type, *event_type, *spans;
    keys_t keys, prefixes, event_keys;
    int markers;
    Py_ssize_t skipped;
} scan_t;

/* A (validated) Span.Event -> event_type(name, time_ns, attributes); NULL, or FALLBACK. */
static PyObject *span_event(scan_t *s, buf_t b) {
    static const uint8_t empty = 0;
    buf_t name = {&empty, &empty};
    uint64_t time_ns = 0;
    int marked = 0;
    PyObject *attributes = PyDict_New();
    if (attributes == NULL) return NULL;
    field_t f = {0};
    while (next_field(&b, &f) == 1) {
        if (f.number == 1) time_ns = f.value;
        else if (f.number == 2) name = f.data;
        else if (f.number == 3) {
            int r = wanted_attributes(f.data, attributes, &s->event_keys, NULL, 0, &marked);
            if (r != 0) {
                Py_DECREF(attributes);
                return r < 0 ? NULL : FALLBACK;
            }
        }
    }
    PyObject *n = text(name);
    PyObject *t = n ? PyLong_FromUnsignedLongLong(time_ns) : NULL;
    PyObject *out = t ? PyObject_CallFunctionObjArgs(s->event_type, n, t, attributes, NULL) : NULL;
    Py_XDECREF(n);
    Py_XDECREF(t);
    Py_DECREF(attributes);
    return out;
}

/* A (validated) Span -> span_type(...) appended to s->spans, or counted skipped: 0, -1, or 1 (fall back) */
static int read_span(scan_t *s, buf_t b, PyObject *scope) {
    static const uint8_t empty = 0;
    buf_t trace_id = {&empty, &empty}, span_id = {&empty, &empty}, name = {&empty, &empty};
    uint64_t start = 0, end = 0;
    int marked = s->markers == 0, r = 0;
    PyObject *attributes = PyDict_New(), *events = PyList_New(0);
    if (attributes == NULL || events == NULL) goto error;
    field_t f = {0};
    while (next_field(&b, &f) == 1) {
        switch (f.number) {
        case 1: trace_id = f.data; break;
        case 2: span_id = f.data; break;
        case 5: name = f.data; break;
        case 7: start = f.value; break;
        case 8: end = f.value; break;
        case 9:
            r = wanted_attributes(f.data, attributes, &s->keys, &s->prefixes, s->markers, &marked);
            if (r != 0) goto done;
            break;
        case 11: {
            PyObject *e = span_event(s, f.data);
            if (e == NULL || e == FALLBACK) {
                r = e == NULL ? -1 : 1;
                goto done;
            }
            r = PyList_Append(events, e);
            Py_DECREF(e);
            if (r < 0) goto done;
            break;
        }
        }
    }
    if (!marked) {
        s->skipped++;
        goto done;
    }
    PyObject *args[8] = {hex(trace_id), hex(span_id), text(name), scope, PyLong_FromUnsignedLongLong(start),
                         PyLong_FromUnsignedLongLong(end), attributes, events};
    PyObject *made = NULL;
    if (args[0] && args[1] && args[2] && args[4] && args[5])
        made = PyObject_Vectorcall(s->span_type, args, 8, NULL);
    for (int i = 0; i < 6; i++)
        if (i != 3) Py_XDECREF(args[i]);
    if (made == NULL) goto error;
    r = PyList_Append(s->spans, made);
    Py_DECREF(made);
    goto done;
error:
    r = -1;
done:
    Py_XDECREF(attributes);
    Py_XDECREF(events);
    return r;
}

/* A (validated) ScopeSpans' spans, under its scope's name */
static int read_scope_spans(scan_t *s, buf_t b) {
    static const uint8_t empty = 0;
    buf_t name = {&empty, &empty};
    field_t f = {0}, g = {0};
    buf_t all = b;
    while (next_field(&b, &f) == 1) /* the scope may follow its spans */
        if (f.number == 1) {
            buf_t fields = f.data;
            while (next_field(&fields, &g) == 1)
                if (g.number == 1) name = g.data;
        }
    PyObject *scope = text(name);
    if (scope == NULL) return -1;
    int r = 0;
    while (r == 0 && next_field(&all, &f) == 1)
        if (f.number == 2) r = read_span(s, f.data, scope);
    Py_DECREF(scope);
    return r;
}

static PyObject *scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 7 || !PyTuple_Check(args[3]) || !PyLong_Check(args[4]) || !PyTuple_Check(args[5]) ||
        !PyTuple_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "scan(payload, span_type, event_type, keys, markers, prefixes, event_keys)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    long markers = PyLong_AsLong(args[4]);
    scan_t s = {.span_type = args[1], .event_type = args[2], .markers = (int)markers};
    PyObject *out = NULL;
    if (markers < 0 && PyErr_Occurred()) goto end;
    PyObject *const tuples[3] = {args[3], args[5], args[6]};
    keys_t *const into[3] = {&s.keys, &s.prefixes, &s.event_keys};
    int keyed = 0; /* 1: more keys than MAX_KEYS */
    for (int i = 0; i < 3 && !keyed; i++)
        if ((keyed = keys_from(tuples[i], into[i])) < 0) goto end;
    buf_t top = {view.buf, (const uint8_t *)view.buf + view.len};
    if (keyed || markers > MAX_KEYS || !valid(TRACES_DATA, top, 1)) {
        out = Py_NewRef(Py_None);
        goto end;
    }
    s.spans = PyList_New(0);
    if (s.spans == NULL) goto end;
    field_t resource_spans = {0}, scope_spans = {0};
    int r = 0;
    while (r == 0 && next_field(&top, &resource_spans) == 1) {
        if (resource_spans.number != 1) continue;
        buf_t rs = resource_spans.data;
        while (r == 0 && next_field(&rs, &scope_spans) == 1)
            if (scope_spans.number == 2) r = read_scope_spans(&s, scope_spans.data);
    }
    if (r == 0) out = Py_BuildValue("(On)", s.spans, s.skipped);
    else if (r > 0) out = Py_NewRef(Py_None);
    Py_DECREF(s.spans);
end:
    PyBuffer_Release(&view);
    return out;
}

/* The schema this file reads, {message: {field number: kind}}, for the import-time check against
   the installed opentelemetry-proto (a field it lacks would go unchecked). */
static PyObject *schema(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    static const char *KINDS[] = {"varint", "fixed64", "fixed32", "bytes", "string", "message"};
    PyObject *out = PyDict_New();
    for (int m = 0; out && m < MESSAGES; m++) {
        PyObject *fields = PyDict_New();
        if (fields == NULL || PyDict_SetItemString(out, SCHEMA[m].name, fields) < 0) {
            Py_XDECREF(fields);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(fields);
        for (int i = 0; i < SCHEMA[m].count; i++) {
            const schema_field_t *f = &SCHEMA[m].fields[i];
            PyObject *number = PyLong_FromUnsignedLong(f->number);
            PyObject *kind = f->kind == MESSAGE ? Py_BuildValue("(ssi)", KINDS[f->kind], SCHEMA[f->message].name, f->repeated)
                                                : Py_BuildValue("(ssi)", KINDS[f->kind], "", f->repeated);
            int r = number && kind ? PyDict_SetItem(fields, number, kind) : -1;
            Py_XDECREF(number);
            Py_XDECREF(kind);
            if (r < 0) {
                Py_CLEAR(out);
                break;
            }
        }
    }
    return out;
}

static PyMethodDef METHODS[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(payload, span_type, event_type, keys, markers, prefixes, event_keys) -> (spans, skipped) or None"},
    {"schema", schema, METH_NOARGS, "The schema read: {message: {field number: (kind, message, repeated)}}"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "handlers._otlp_wire",
                                    "OTLP TracesData read off the wire (see handlers/otlp.py).", -1, METHODS};

PyMODINIT_FUNC PyInit__otlp_wire(void) {
    for (int m = 0; m < MESSAGES; m++)
        for (int i = 0; i < SCHEMA[m].count; i++) {
            if (SCHEMA[m].fields[i].number > MAX_FIELD) {
                PyErr_SetString(PyExc_ImportError, "a field number past MAX_FIELD");
                return NULL;
            }
            FIELDS[m][SCHEMA[m].fields[i].number] = &SCHEMA[m].fields[i];
        }
    return PyModule_Create(&MODULE);
}
