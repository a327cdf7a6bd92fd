/* banditroute._native: pieces of the decide loop's work per request that cost far more in Python than in C
 * (issue #16): the record batch writer, the duplicate-id check's tables and the request text's match.
 * Optional: without it (no C compiler at install) the same work is done in Python (or by aiokafka).
 *
 * Builder: a Kafka record batch writer (magic 2; compressed at build() by the codec function it is given, as aiokafka's
 * builder compresses). It stands in for aiokafka's DefaultRecordBatchBuilder inside aiokafka's BatchBuilder (see native_batch.py):
 * the same constructor, append(), build(), size() and set_producer_state(), and byte for byte the same batch
 * (tests/kafka/test_native_batch_logic.py). Two differences make it cheaper per record: the batch's buffer is grown
 * by doubling instead of by 1.125 at every append (and handed out by build() without a copy), and the batch
 * checksum (CRC-32C) uses the CPU's CRC32 instruction where there is one instead of a table lookup per byte. append() returns True instead of a
 * metadata object (the decide loop only tests it against None).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define HEADER_SIZE 61       /* >qiibIhiqqqhii */
#define CRC_OFFSET 17        /* >qiib */
#define ATTRIBUTES_OFFSET 21 /* >qiibI */
#define AFTER_LEN_OFFSET 12  /* >qi */
#define TRANSACTIONAL_MASK 0x10
#define MAX_VARINT 10

/* ---- CRC-32C (Castagnoli), reflected, as Kafka checksums a v2 batch ---- */

static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc_table[0][n];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xFF] ^ (c >> 8);
            crc_table[t][n] = c;
        }
    }
}

static uint32_t crc_soft(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
    while (n >= 8) {
        uint64_t v = 0; /* the next 8 bytes, little-endian whatever the CPU's order */
        for (int b = 7; b >= 0; b--) v = (v << 8) | p[b];
        v ^= crc;
        crc = crc_table[7][v & 0xFF] ^ crc_table[6][(v >> 8) & 0xFF] ^ crc_table[5][(v >> 16) & 0xFF] ^
              crc_table[4][(v >> 24) & 0xFF] ^ crc_table[3][(v >> 32) & 0xFF] ^ crc_table[2][(v >> 40) & 0xFF] ^
              crc_table[1][(v >> 48) & 0xFF] ^ crc_table[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = crc_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_HW_CRC 1
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}
#endif

static int use_hw_crc = 0;

static uint32_t crc32c(const unsigned char *p, size_t n) {
#ifdef HAVE_HW_CRC
    if (use_hw_crc) return crc_hw(0, p, n);
#endif
    return crc_soft(0, p, n);
}

/* ---- varints (zigzag, 7 bits a byte, low bits first), as a v2 record writes them ---- */

static inline int put_varint(unsigned char *out, int64_t value) {
    uint64_t z = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    int i = 0;
    while (z > 0x7F) {
        out[i++] = (unsigned char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    out[i++] = (unsigned char)z;
    return i;
}

static inline int varint_size(int64_t value) {
    uint64_t z = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    int i = 1;
    while (z > 0x7F) {
        z >>= 7;
        i++;
    }
    return i;
}

static inline void put_be(unsigned char *out, uint64_t value, int bytes) {
    for (int i = bytes - 1; i >= 0; i--) {
        out[i] = (unsigned char)(value & 0xFF);
        value >>= 8;
    }
}

/* ---- the builder ---- */

typedef struct {
    PyObject_HEAD
    PyObject *array; /* the batch's bytearray, written in place: build() hands it out without a copy */
    unsigned char *buf;
    Py_ssize_t len;
    Py_ssize_t cap;
    Py_ssize_t batch_size;
    int64_t first_ts;
    int64_t max_ts;
    int has_ts;
    int64_t last_offset;
    int32_t num_records;
    int transactional;
    int64_t producer_id;
    int64_t producer_epoch; /* an int16 on the wire */
    int64_t base_sequence;  /* an int32 on the wire */
    int built;
    int codec;          /* the attributes' compression bits (0: none) */
    PyObject *compress; /* with a codec: the records' bytes -> their compressed bytes (aiokafka's codec function;
                           the type is not garbage-collected, so it must not hold the builder) */
    int compressing;    /* inside compress: append, build and __init__ refuse */
} Builder;

static int grow(Builder *self, Py_ssize_t need) {
    if (self->len + need <= self->cap) return 0;
    if (need > PY_SSIZE_T_MAX / 2 - self->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = self->cap ? self->cap : 1024;
    if (!self->cap && cap < need) cap = need; /* the first buffer: as asked (Builder_init's capacity) */
    while (cap < self->len + need) cap *= 2; /* no overflow: len + need <= PY_SSIZE_T_MAX / 2 */
    if (self->array == NULL) {
        self->array = PyByteArray_FromStringAndSize(NULL, cap);
        if (self->array == NULL) return -1;
    } else if (PyByteArray_Resize(self->array, cap) < 0) {
        return -1;
    }
    self->buf = (unsigned char *)PyByteArray_AS_STRING(self->array);
    self->cap = cap;
    return 0;
}

static int64_t now_ms(void) {
    /* time.time() * 1000 as an int, as aiokafka's builder stamps a record given no timestamp */
    struct timespec t;
    timespec_get(&t, TIME_UTC); /* C11; the wall clock time.time() reads */
    return (int64_t)(((double)t.tv_sec + (double)t.tv_nsec * 1e-9) * 1000.0);
}

static int Builder_init(Builder *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"magic",         "compression_type", "is_transactional", "producer_id", "producer_epoch",
                             "base_sequence", "batch_size",       "capacity",         "compress",    NULL};
    int magic, compression, transactional, base_sequence;
    long long producer_id;
    short producer_epoch;
    Py_ssize_t batch_size, capacity = 0;
    PyObject *compress = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iipLhin|nO", kwlist, &magic, &compression, &transactional,
                                     &producer_id, &producer_epoch, &base_sequence, &batch_size, &capacity,
                                     &compress))
        return -1;
    if (magic != 2) {
        PyErr_SetString(PyExc_ValueError, "only magic 2 record batches are written");
        return -1;
    }
    if ((compression & 0x07) != 0 && compress == Py_None) {
        PyErr_SetString(PyExc_ValueError, "a compressed record batch needs its compress function");
        return -1;
    }
    if ((compression & 0x07) == 0 && compress != Py_None) {
        PyErr_SetString(PyExc_ValueError, "a compress function is for a compressed record batch only");
        return -1;
    }
    if (compress != Py_None && !PyCallable_Check(compress)) {
        PyErr_SetString(PyExc_TypeError, "compress must be callable");
        return -1;
    }
    if ((compression & 0x07) > 4) { /* gzip, snappy, lz4, zstd */
        PyErr_Format(PyExc_ValueError, "unknown compression codec %d", compression & 0x07);
        return -1;
    }
    if (self->compressing) {
        PyErr_SetString(PyExc_RuntimeError, "the batch is being compressed");
        return -1;
    }
    self->codec = compression & 0x07;
    Py_CLEAR(self->compress);
    if (compress != Py_None) {
        Py_INCREF(compress);
        self->compress = compress;
    }
    Py_CLEAR(self->array);
    self->buf = NULL;
    self->len = self->cap = 0;
    self->batch_size = batch_size;
    /* capacity: the bytes the batch is expected to reach (a hint: a batch grows past it, by doubling, when it
     * needs to), so that a batch as large as the last one is written without its buffer moved on the way */
    if (capacity > batch_size) capacity = batch_size;
    if (grow(self, capacity > HEADER_SIZE ? capacity : HEADER_SIZE) < 0) return -1;
    memset(self->buf, 0, HEADER_SIZE);
    self->len = HEADER_SIZE;
    self->has_ts = 0;
    self->first_ts = self->max_ts = 0;
    self->last_offset = 0;
    self->num_records = 0;
    self->transactional = transactional;
    self->producer_id = producer_id;
    self->producer_epoch = producer_epoch;
    self->base_sequence = base_sequence;
    self->built = 0;
    return 0;
}

static void Builder_dealloc(Builder *self) {
    Py_CLEAR(self->array);
    Py_CLEAR(self->compress);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* a key or value: NULL data and -1 length for None */
static int bytes_of(PyObject *obj, const char *what, Py_buffer *view, int *held) {
    *held = 0;
    if (obj == Py_None) {
        view->buf = NULL;
        view->len = -1;
        return 0;
    }
    if (PyBytes_CheckExact(obj)) {
        view->buf = PyBytes_AS_STRING(obj);
        view->len = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyByteArray_CheckExact(obj) || PyMemoryView_Check(obj)) {
        if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) return -1;
        *held = 1;
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "Not supported type for %s: %R", what, (PyObject *)Py_TYPE(obj));
    return -1;
}

static const char *append_names[] = {"offset", "timestamp", "key", "value", "headers"};
static PyObject *append_interned[5]; /* the same names as interned strings: a caller's keywords are these objects */

static PyObject *Builder_append(Builder *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    const char **names = append_names;
    PyObject *given[5] = {NULL, NULL, NULL, NULL, NULL};
    if (nargs > 5) {
        PyErr_SetString(PyExc_TypeError, "append() takes at most 5 arguments");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) given[i] = args[i];
    if (kwnames != NULL) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nk; k++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, k);
            int found = 0;
            for (int i = 0; i < 5; i++) {
                if (name == append_interned[i] || PyUnicode_CompareWithASCIIString(name, names[i]) == 0) {
                    if (given[i] != NULL) {
                        PyErr_Format(PyExc_TypeError, "append() got multiple values for '%s'", names[i]);
                        return NULL;
                    }
                    given[i] = args[nargs + k];
                    found = 1;
                    break;
                }
            }
            if (!found) {
                PyErr_Format(PyExc_TypeError, "append() got an unexpected keyword argument %R", name);
                return NULL;
            }
        }
    }
    for (int i = 0; i < 5; i++) {
        if (given[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "append() missing argument '%s'", names[i]);
            return NULL;
        }
    }
    if (self->built || self->array == NULL || self->compressing) {
        PyErr_SetString(PyExc_RuntimeError, "the batch was already built (or never initialised, or is being compressed)");
        return NULL;
    }
    if (!PyLong_CheckExact(given[0])) {
        PyErr_Format(PyExc_TypeError, "offset must be an int, not %R", given[0]);
        return NULL;
    }
    int64_t offset = PyLong_AsLongLong(given[0]);
    if (offset == -1 && PyErr_Occurred()) return NULL;
    int64_t ts;
    if (given[1] == Py_None) {
        ts = now_ms();
    } else if (PyLong_CheckExact(given[1])) {
        ts = PyLong_AsLongLong(given[1]);
        if (ts == -1 && PyErr_Occurred()) return NULL;
    } else {
        PyErr_Format(PyExc_TypeError, "timestamp must be an int or None, not %R", given[1]);
        return NULL;
    }
    PyObject *headers = given[4];
    if (!PyList_CheckExact(headers) && !PyTuple_CheckExact(headers)) { /* nothing in append runs Python code */
        PyErr_Format(PyExc_TypeError, "headers must be a list or tuple, not %R", (PyObject *)Py_TYPE(headers));
        return NULL;
    }
    PyObject *seq = PySequence_Fast(headers, "headers must be a list or tuple");
    if (seq == NULL) return NULL;
    Py_ssize_t nh = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_buffer key, value;
    int key_held = 0, value_held = 0;
    PyObject *result = NULL;
    if (bytes_of(given[2], "key", &key, &key_held) < 0) goto done_seq;
    if (bytes_of(given[3], "value", &value, &value_held) < 0) goto done_key;

    int first = !self->has_ts;
    int64_t delta = first ? 0 : (int64_t)((uint64_t)ts - (uint64_t)self->first_ts); /* wraps as aiokafka's */
    /* the record's body: attributes, timestamp delta, offset delta, key, value, headers */
    Py_ssize_t body = 1 + varint_size(delta) + varint_size(offset);
    body += key.len < 0 ? 1 : varint_size(key.len) + key.len;
    body += value.len < 0 ? 1 : varint_size(value.len) + value.len;
    body += varint_size(nh);
    for (Py_ssize_t h = 0; h < nh; h++) {
        PyObject *pair = items[h];
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0))) {
            PyErr_SetString(PyExc_TypeError, "a header is a (str, bytes or None) pair");
            goto done_value;
        }
        Py_ssize_t name_len;
        if (PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &name_len) == NULL) goto done_value;
        PyObject *hv = PyTuple_GET_ITEM(pair, 1);
        body += varint_size(name_len) + name_len;
        if (hv == Py_None) {
            body += 1;
        } else if (PyBytes_Check(hv)) {
            body += varint_size(PyBytes_GET_SIZE(hv)) + PyBytes_GET_SIZE(hv);
        } else {
            PyErr_SetString(PyExc_TypeError, "a header's value is bytes or None");
            goto done_value;
        }
    }
    Py_ssize_t required = body + varint_size(body);
    /* aiokafka's C builder: any record but offset 0 is refused once the batch would reach its size bound */
    if (offset != 0 && self->len + required >= self->batch_size) {
        result = Py_None;
        Py_INCREF(result);
        goto done_value;
    }
    if (grow(self, required) < 0) goto done_value;
    if (first) {
        self->first_ts = self->max_ts = ts;
        self->has_ts = 1;
    } else if (ts > self->max_ts) {
        self->max_ts = ts;
    }
    self->num_records += 1;
    self->last_offset = offset;
    unsigned char *out = self->buf + self->len;
    out += put_varint(out, body);
    *out++ = 0;
    out += put_varint(out, delta);
    out += put_varint(out, offset);
    if (key.len < 0) {
        *out++ = 1;
    } else {
        out += put_varint(out, key.len);
        memcpy(out, key.buf, (size_t)key.len);
        out += key.len;
    }
    if (value.len < 0) {
        *out++ = 1;
    } else {
        out += put_varint(out, value.len);
        memcpy(out, value.buf, (size_t)value.len);
        out += value.len;
    }
    out += put_varint(out, nh);
    for (Py_ssize_t h = 0; h < nh; h++) {
        PyObject *pair = items[h];
        Py_ssize_t name_len;
        const char *name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &name_len);
        out += put_varint(out, name_len);
        memcpy(out, name, (size_t)name_len);
        out += name_len;
        PyObject *hv = PyTuple_GET_ITEM(pair, 1);
        if (hv == Py_None) {
            *out++ = 1;
        } else {
            Py_ssize_t n = PyBytes_GET_SIZE(hv);
            out += put_varint(out, n);
            memcpy(out, PyBytes_AS_STRING(hv), (size_t)n);
            out += n;
        }
    }
    self->len = out - self->buf;
    result = Py_True;
    Py_INCREF(result);
done_value:
    if (value_held) PyBuffer_Release(&value);
done_key:
    if (key_held) PyBuffer_Release(&key);
done_seq:
    Py_DECREF(seq);
    return result;
}

/* The records (after the header) replaced by compress(records), as aiokafka's C builder does it: its codec is
 * handed a bytes copy, and its output is taken even when it is not smaller. The header is written after. While
 * compress runs, the builder refuses to be changed (compress is any callable: it could call back into it). */
static int compress_records(Builder *self) {
    Py_ssize_t size = self->len - HEADER_SIZE;
    PyObject *records = PyBytes_FromStringAndSize((const char *)self->buf + HEADER_SIZE, size);
    if (records == NULL) return -1;
    PyObject *compress = self->compress;
    Py_INCREF(compress);
    self->compressing = 1;
    PyObject *out = PyObject_CallOneArg(compress, records);
    self->compressing = 0;
    Py_DECREF(compress);
    Py_DECREF(records);
    if (out == NULL) return -1;
    Py_buffer data;
    if (PyObject_GetBuffer(out, &data, PyBUF_SIMPLE) < 0) {
        Py_DECREF(out);
        return -1;
    }
    int failed = data.len > size && grow(self, data.len - size) < 0;
    if (!failed) {
        memcpy(self->buf + HEADER_SIZE, data.buf, (size_t)data.len);
        self->len = HEADER_SIZE + data.len;
    }
    PyBuffer_Release(&data);
    Py_DECREF(out);
    return failed ? -1 : 0;
}

static PyObject *Builder_build(Builder *self, PyObject *Py_UNUSED(ignored)) {
    if (self->built || self->array == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the batch was already built");
        return NULL;
    }
    if (self->compressing) {
        PyErr_SetString(PyExc_RuntimeError, "the batch is being compressed");
        return NULL;
    }
    if (self->compress != NULL) {
        if (compress_records(self) < 0) return NULL;
        self->built = 1; /* the records are compressed now: nothing may be appended, nor compressed again */
    }
    unsigned char *h = self->buf;
    put_be(h, 0, 8);                                                   /* base offset, set by the broker */
    put_be(h + 8, (uint64_t)(self->len - AFTER_LEN_OFFSET), 4);        /* length */
    put_be(h + 12, (uint64_t)(int64_t)-1, 4);                          /* partition leader epoch */
    h[16] = 2;                                                         /* magic */
    put_be(h + 21, (uint64_t)((self->transactional ? TRANSACTIONAL_MASK : 0) | self->codec), 2); /* attributes */
    put_be(h + 23, (uint64_t)self->last_offset, 4);                    /* last offset delta */
    put_be(h + 27, (uint64_t)(self->has_ts ? self->first_ts : -1), 8); /* -1: no record (as aiokafka's) */
    put_be(h + 35, (uint64_t)(self->has_ts ? self->max_ts : -1), 8);
    put_be(h + 43, (uint64_t)self->producer_id, 8);
    put_be(h + 51, (uint64_t)self->producer_epoch, 2);
    put_be(h + 53, (uint64_t)self->base_sequence, 4);
    put_be(h + 57, (uint64_t)self->num_records, 4);
    put_be(h + CRC_OFFSET, crc32c(h + ATTRIBUTES_OFFSET, (size_t)(self->len - ATTRIBUTES_OFFSET)), 4);
    if (PyByteArray_Resize(self->array, self->len) < 0) return NULL;
    PyObject *out = self->array; /* the builder's reference, handed over */
    self->array = NULL;
    self->buf = NULL;
    self->cap = 0;
    self->built = 1;
    return out;
}

static PyObject *Builder_size(Builder *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromSsize_t(self->len);
}

static PyObject *Builder_set_producer_state(Builder *self, PyObject *args) {
    long long producer_id;
    short producer_epoch;
    int base_sequence;
    if (!PyArg_ParseTuple(args, "Lhi", &producer_id, &producer_epoch, &base_sequence)) return NULL;
    self->producer_id = producer_id;
    self->producer_epoch = producer_epoch;
    self->base_sequence = base_sequence;
    Py_RETURN_NONE;
}

static PyMethodDef Builder_methods[] = {
    {"append", (PyCFunction)(void (*)(void))Builder_append, METH_FASTCALL | METH_KEYWORDS,
     "append(offset, timestamp, key, value, headers): True, or None when the batch is full."},
    {"build", (PyCFunction)Builder_build, METH_NOARGS, "The batch's bytes, header and checksum written (once)."},
    {"size", (PyCFunction)Builder_size, METH_NOARGS, "Bytes written so far, header included."},
    {"set_producer_state", (PyCFunction)Builder_set_producer_state, METH_VARARGS,
     "set_producer_state(producer_id, producer_epoch, base_sequence)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "banditroute._native.Builder",
    .tp_basicsize = sizeof(Builder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A v2 record batch, as aiokafka's DefaultRecordBatchBuilder writes it.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Builder_init,
    .tp_dealloc = (destructor)Builder_dealloc,
    .tp_methods = Builder_methods,
};

/* ---- IdTable: codec.DuplicateIdCheck's two generations of 64-bit hashes ----
 *
 * The same tables as the Python code (open addressing, linear probing, at most half full, 0 marks a free slot,
 * the value's hash() or 1 as its digest), so the same values are caught: one C call per check instead of a
 * Python loop over an array. Both tables are allocated and touched when made (fixed memory from the start).
 */

typedef struct {
    PyObject_HEAD
    int64_t *current;
    int64_t *previous;
    Py_ssize_t size;
    Py_ssize_t generation;
    Py_ssize_t count;
    Py_ssize_t previous_count;
} IdTable;

static int64_t *table_new(Py_ssize_t size) {
    int64_t *table = PyMem_New(int64_t, (size_t)size); /* NULL if the size in bytes would overflow */
    if (table == NULL) return NULL;
    volatile int64_t *touch = table;
    for (Py_ssize_t i = 0; i < size; i++) touch[i] = 0;
    return table;
}

static int IdTable_init(IdTable *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"size", "generation", NULL};
    Py_ssize_t size, generation;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nn", kwlist, &size, &generation)) return -1;
    if (size < 8 || (size & (size - 1)) != 0 || generation < 1 || generation > size / 2) {
        PyErr_SetString(PyExc_ValueError, "size is a power of two >= 8 and at least twice the generation");
        return -1;
    }
    int64_t *current = table_new(size), *previous = table_new(size);
    if (current == NULL || previous == NULL) { /* the table as it was, untouched */
        PyMem_Free(current);
        PyMem_Free(previous);
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(self->current);
    PyMem_Free(self->previous);
    self->current = current;
    self->previous = previous;
    self->size = size;
    self->generation = generation;
    self->count = self->previous_count = 0;
    return 0;
}

static void IdTable_dealloc(IdTable *self) {
    PyMem_Free(self->current);
    PyMem_Free(self->previous);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* IdTable.seen for a hash: 1 if seen, else 0 (and remembered) */
static int id_seen(IdTable *self, Py_hash_t hash) {
    int64_t digest = hash ? (int64_t)hash : 1;
    size_t mask = (size_t)self->size - 1;
    size_t start = (size_t)digest & mask;
    size_t i = start;
    int64_t held;
    while ((held = self->previous[i]) != 0) {
        if (held == digest) return 1;
        i = (i + 1) & mask;
    }
    i = start; /* the current table last: i ends at its first free slot */
    while ((held = self->current[i]) != 0) {
        if (held == digest) return 1;
        i = (i + 1) & mask;
    }
    self->current[i] = digest;
    if (++self->count >= self->generation) {
        int64_t *older = self->previous;
        self->previous = self->current;
        memset(older, 0, (size_t)self->size * sizeof(int64_t));
        self->current = older;
        self->previous_count = self->count;
        self->count = 0;
    }
    return 0;
}

static PyObject *IdTable_seen(IdTable *self, PyObject *value) {
    if (self->current == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "IdTable was not initialised");
        return NULL;
    }
    Py_hash_t hash = PyObject_Hash(value);
    if (hash == -1 && PyErr_Occurred()) return NULL;
    return PyBool_FromLong(id_seen(self, hash));
}

static Py_ssize_t IdTable_len(IdTable *self) { return self->count + self->previous_count; }

static PyMethodDef IdTable_methods[] = {
    {"seen", (PyCFunction)IdTable_seen, METH_O,
     "seen(value): True if value's hash is held; else False, and it is held from now on."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods IdTable_as_sequence = {.sq_length = (lenfunc)IdTable_len};

static PyTypeObject IdTableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "banditroute._native.IdTable",
    .tp_basicsize = sizeof(IdTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "IdTable(size, generation): two generations of 64-bit hashes, as codec.DuplicateIdCheck keeps them.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)IdTable_init,
    .tp_dealloc = (destructor)IdTable_dealloc,
    .tp_methods = IdTable_methods,
    .tp_as_sequence = &IdTable_as_sequence,
};

/* ---- the two request texts of kafka/fast_request.py, matched as its regular expressions match them ----
 *
 * short_groups(raw, at) and sdk_groups(raw, at) return what _SHORT_TEXT.fullmatch(raw, at).groups() and
 * _SDK_TEXT.fullmatch(raw, at).groups() return (a tuple of bytes or None), or None where they do not match.
 * Every variable part is followed by a byte its class does not hold, so the expressions never backtrack into
 * a shorter part: each part is its longest run, checked for its length, as below.
 */

static inline int is_alnum(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* events.Identifier: [A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,127}; the run's length, or -1 */
static Py_ssize_t match_id(const unsigned char *p, Py_ssize_t n) {
    if (n < 1 || !is_alnum(p[0])) return -1;
    Py_ssize_t i = 1;
    while (i < n) {
        unsigned char c = p[i];
        if (is_alnum(c) || c == '.' || c == '_' || c == ':' || c == '/' || c == '@' || c == '+' || c == '=' ||
            c == '-')
            i++;
        else
            break;
    }
    return i <= 128 ? i : -1;
}

/* a reply topic: [A-Za-z0-9._-]{1,249} */
static Py_ssize_t match_reply(const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n && (is_alnum(p[i]) || p[i] == '.' || p[i] == '_' || p[i] == '-')) i++;
    return i >= 1 && i <= 249 ? i : -1;
}

/* UTC_TIME: dddd-dd-ddTdd:dd:dd(.ddd(ddd)?)?(Z|+00:00) */
static Py_ssize_t match_time(const unsigned char *p, Py_ssize_t n) {
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    Py_ssize_t i = 0;
    for (; shape[i]; i++) {
        if (i >= n) return -1;
        if (shape[i] == 'd' ? !is_digit(p[i]) : p[i] != (unsigned char)shape[i]) return -1;
    }
    if (i < n && p[i] == '.') {
        if (i + 4 > n || !is_digit(p[i + 1]) || !is_digit(p[i + 2]) || !is_digit(p[i + 3])) return -1;
        i += 4;
        if (i < n && is_digit(p[i])) {
            if (i + 3 > n || !is_digit(p[i + 1]) || !is_digit(p[i + 2])) return -1;
            i += 3;
        }
    }
    if (i < n && p[i] == 'Z') return i + 1;
    if (i + 6 <= n && memcmp(p + i, "+00:00", 6) == 0) return i + 6;
    return -1;
}

/* the literal ``text`` at p[*at], moving past it */
static inline int literal(const unsigned char *p, Py_ssize_t n, Py_ssize_t *at, const char *text, Py_ssize_t len) {
    if (*at + len > n || memcmp(p + *at, text, (size_t)len) != 0) return 0;
    *at += len;
    return 1;
}
#define LIT(text) literal(p, n, &at, text, (Py_ssize_t)(sizeof(text) - 1))

typedef Py_ssize_t (*part_fn)(const unsigned char *, Py_ssize_t);

/* a part (its span in spans[2k], spans[2k+1]) moving past it */
static inline int part(const unsigned char *p, Py_ssize_t n, Py_ssize_t *at, part_fn fn, Py_ssize_t *span) {
    Py_ssize_t len = fn(p + *at, n - *at);
    if (len < 0) return 0;
    span[0] = *at;
    span[1] = *at + len;
    *at += len;
    return 1;
}
#define PART(fn, k) part(p, n, &at, fn, spans + 2 * (k))

static PyObject *groups_of(const unsigned char *base, const Py_ssize_t *spans, int count) {
    PyObject *out = PyTuple_New(count);
    if (out == NULL) return NULL;
    for (int k = 0; k < count; k++) {
        PyObject *item;
        if (spans[2 * k] < 0) {
            item = Py_None;
            Py_INCREF(item);
        } else {
            item = PyBytes_FromStringAndSize((const char *)base + spans[2 * k], spans[2 * k + 1] - spans[2 * k]);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        }
        PyTuple_SET_ITEM(out, k, item);
    }
    return out;
}

/* raw (any bytes-like object, held in view) and the position to match from */
static int text_args(PyObject *const *args, Py_ssize_t nargs, const char *name, Py_buffer *view, Py_ssize_t *at) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s(raw, at) takes 2 arguments", name);
        return -1;
    }
    *at = PyLong_AsSsize_t(args[1]);
    if (*at == -1 && PyErr_Occurred()) return -1;
    if (*at < 0) *at = 0;
    if (PyBytes_CheckExact(args[0])) { /* the usual text: its bytes read in place, nothing to release */
        view->obj = NULL;
        view->buf = PyBytes_AS_STRING(args[0]);
        view->len = PyBytes_GET_SIZE(args[0]);
        return 0;
    }
    return PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE);
}

typedef int (*text_fn)(const unsigned char *p, Py_ssize_t n, Py_ssize_t at, Py_ssize_t *spans);

static PyObject *match_text(PyObject *const *args, Py_ssize_t nargs, const char *name, text_fn fn) {
    Py_buffer view;
    Py_ssize_t at;
    if (text_args(args, nargs, name, &view, &at) < 0) return NULL;
    Py_ssize_t spans[10] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
    const unsigned char *p = (const unsigned char *)view.buf;
    PyObject *out;
    if (at <= view.len && fn(p, view.len, at, spans)) {
        out = groups_of(p, spans, 5);
    } else {
        out = Py_None;
        Py_INCREF(out);
    }
    if (view.obj != NULL) PyBuffer_Release(&view);
    return out;
}

/* _SHORT_TEXT: ID","task_type":"ID","created_at":"TIME"(,"tenant":"ID")?(,"reply_to":"REPLY")?}
   groups: request_id, task_type, created_at, tenant, reply_to */
static int short_text(const unsigned char *p, Py_ssize_t n, Py_ssize_t at, Py_ssize_t *spans) {
    if (!PART(match_id, 0) || !LIT("\",\"task_type\":\"") || !PART(match_id, 1) || !LIT("\",\"created_at\":\"") ||
        !PART(match_time, 2) || !LIT("\""))
        return 0;
    if (LIT(",\"tenant\":\"") && (!PART(match_id, 3) || !LIT("\""))) return 0;
    if (LIT(",\"reply_to\":\"") && (!PART(match_reply, 4) || !LIT("\""))) return 0;
    return LIT("}") && at == n;
}

/* _SDK_TEXT: "TIME","exclude":null,"metadata":{},"objective":null,"reply_to":(null|"REPLY"),"request_id":"ID",
   "schema_version":1,"task_type":"ID","tenant":(null|"ID")}
   groups: created_at, reply_to, request_id, task_type, tenant */
static int sdk_text(const unsigned char *p, Py_ssize_t n, Py_ssize_t at, Py_ssize_t *spans) {
    if (!LIT("\"") || !PART(match_time, 0) ||
        !LIT("\",\"exclude\":null,\"metadata\":{},\"objective\":null,\"reply_to\":"))
        return 0;
    if (!LIT("null") && (!LIT("\"") || !PART(match_reply, 1) || !LIT("\""))) return 0;
    if (!LIT(",\"request_id\":\"") || !PART(match_id, 2) || !LIT("\",\"schema_version\":1,\"task_type\":\"") ||
        !PART(match_id, 3) || !LIT("\",\"tenant\":"))
        return 0;
    if (!LIT("null") && (!LIT("\"") || !PART(match_id, 4) || !LIT("\""))) return 0;
    return LIT("}") && at == n;
}

static PyObject *short_groups(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    return match_text(args, nargs, "short_groups", short_text);
}

static PyObject *sdk_groups(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    return match_text(args, nargs, "sdk_groups", sdk_text);
}

/* ---- lane: the decide loop's common request decided in C (kafka/decide_service.py, agents/decide.py) ----
 *
 * DecideService._run's loop for the requests that DecideLogic.decide_encoded answers from its kept answer with
 * the hot block's next row (DecideLogic.lane_parts): the request's text matched as shaped_request matches it,
 * the duplicate check, the row's decision written as _encode_row writes it, appended to the partition's record
 * batch, and the join's entry and the summary kept, with no Python frame per request. It takes a request only
 * when every condition under which the Python code would do exactly that holds, checked before anything is
 * changed, and stops at the first other record (untouched: the Python loop takes it). It runs no Python code:
 * the writer must be the C Builder, the stamps plain dicts, the rows and texts of the exact types (checked
 * before the first request), and the cyclic garbage collector is off for the call (on Python 3.11 a tuple's
 * allocation may start a collection, whose finalizers could run Python code and let another thread swap the
 * learnt state). So the GIL is held throughout, and the snapshot, the learnt state and the kept answer that
 * lane_parts checked stay as they were for the whole call (at most NATIVE_RECORDS requests). An error raised
 * after a request was taken (only a failed allocation) leaves the requests before it appended, as the Python
 * loop's own append would.
 */

static PyObject *s_value, *s_key, *s_rows, *s_pos, *s_size, *s_since_s, *s_until_s, *s_ms, *s_text, *s_json, *s_second,
    *s_prefix, *s_relative_offset;

static inline int leap_year(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static inline int two(const unsigned char *p) { return (p[0] - '0') * 10 + (p[1] - '0'); }

/* whether a text match_time accepted (dddd-dd-ddTdd:dd:dd...) is a date and time datetime.fromisoformat takes
   (it refuses year 0, month 13, February 30, hour 24, second 60, ...) */
static int valid_time(const unsigned char *p) {
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year = two(p) * 100 + two(p + 2), month = two(p + 5), day = two(p + 8);
    if (year < 1 || month < 1 || month > 12 || day < 1) return 0;
    if (day > days[month - 1] + (month == 2 && leap_year(year))) return 0;
    return two(p + 11) <= 23 && two(p + 14) <= 59 && two(p + 17) <= 59;
}

static PyObject *valid_time_py(PyObject *Py_UNUSED(module), PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "valid_time(text): text is bytes");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    return PyBool_FromLong(match_time(p, n) == n && valid_time(p));
}

/* Untrack a new tuple the cyclic collector need not see: one of only strs, bytes, ints, floats, bools, None and
   untracked tuples can be in no reference cycle (CPython's own rule for tuples, which it applies only when a
   collection walks them). The lane's summaries and join entries are then not walked by every young collection
   while they wait for their commit (~30,000 young tuples at a time in a drain, 6-9 ms a collection). */
static void untrack_atomic(PyObject *tuple) {
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tuple); k++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, k);
        if (item == Py_None || PyUnicode_CheckExact(item) || PyBytes_CheckExact(item) || PyFloat_CheckExact(item) ||
            PyLong_CheckExact(item) || PyBool_Check(item))
            continue;
        if (PyTuple_CheckExact(item) && !PyObject_GC_IsTracked(item)) continue;
        return;
    }
    PyObject_GC_UnTrack(tuple);
}

static inline int64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* time.time() as Python computes it from the same clock */
static inline double time_s(void) {
    int64_t ns = clock_ns(CLOCK_REALTIME);
    return ns % 1000000000LL == 0 ? (double)(ns / 1000000000LL) : (double)ns / 1e9;
}

/* ns nanoseconds as milliseconds in decimal (``12.345678``, trailing zeros dropped, at least one decimal): the
   duration exactly as measured, without a shortest-repr float formatter (~2,500 instructions a call) */
/* u's decimal digits, written backwards to end: returns where they start (end - 20 at the most) */
static char *decimal_back(unsigned long long u, char *end) {
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                "8081828384858687888990919293949596979899";
    char *d = end;
    while (u >= 100) { /* two digits at a time */
        unsigned k = (unsigned)(u % 100) * 2;
        u /= 100;
        *--d = pairs[k + 1];
        *--d = pairs[k];
    }
    if (u >= 10) {
        *--d = pairs[u * 2 + 1];
        *--d = pairs[u * 2];
    } else {
        *--d = (char)('0' + u);
    }
    return d;
}

static void ms_decimal(int64_t ns, char *out) {
    int64_t whole = ns / 1000000, frac = ns % 1000000;
    char digits[24], *end = digits + sizeof digits, *d = decimal_back((unsigned long long)whole, end);
    memcpy(out, d, (size_t)(end - d));
    out += end - d;
    *out++ = '.';
    char f[6];
    for (int k = 5; k >= 0; k--) {
        f[k] = (char)('0' + frac % 10);
        frac /= 10;
    }
    int last = 5;
    while (last > 0 && f[last] == '0') last--;
    for (int k = 0; k <= last; k++) *out++ = f[k];
    *out = '\0';
}

static int double_attr(PyObject *obj, PyObject *name, double *out) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int ssize_attr(PyObject *obj, PyObject *name, Py_ssize_t *out) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int ssize_set(PyObject *obj, PyObject *name, Py_ssize_t value) {
    PyObject *v = PyLong_FromSsize_t(value);
    if (v == NULL) return -1;
    int rc = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return rc;
}

static inline int same_text(const unsigned char *p, const Py_ssize_t *span, PyObject *name) {
    if (name == Py_None) return span[0] < 0;
    Py_ssize_t len = PyBytes_GET_SIZE(name);
    return span[0] >= 0 && span[1] - span[0] == len && memcmp(p + span[0], PyBytes_AS_STRING(name), (size_t)len) == 0;
}

static PyObject *ascii_of(const unsigned char *p, Py_ssize_t len, const char *prefix, Py_ssize_t plen) {
    PyObject *out = PyUnicode_New(plen + len, 127);
    if (out == NULL) return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(out);
    memcpy(d, prefix, (size_t)plen);
    memcpy(d + plen, p, (size_t)len);
    return out;
}

#define SHORT_HEAD "{\"schema_version\":1,\"request_id\":\""
#define SDK_HEAD                                                                                                    \
    "{\"candidates\":null,\"constraints\":{\"capabilities\":[],\"max_cost_usd\":null,\"max_latency_ms\":null},"     \
    "\"created_at\":"
#define HEAD_LEN(h) ((Py_ssize_t)(sizeof(h) - 1))

typedef struct {
    PyObject *task_type, *tenant, *block, *texts, *shape, *clock, *served_const, *decided_const, *stamps;
    double next_evict;
} LaneParts;

typedef struct {
    PyObject *ids, *writer, *builder, *headers, *joinable, *decisions;
    Py_ssize_t max_bytes, limit;
} LaneIO;

static PyObject *lane(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyList_CheckExact(args[0]) || !PyTuple_CheckExact(args[3]) || PyTuple_GET_SIZE(args[3]) != 10 ||
        !PyTuple_CheckExact(args[4]) || PyTuple_GET_SIZE(args[4]) != 8) {
        PyErr_SetString(PyExc_TypeError, "lane(records: list, i, end, parts: 10-tuple, io: 8-tuple)");
        return NULL;
    }
    PyObject *records = args[0];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]), end = PyLong_AsSsize_t(args[2]);
    if ((i == -1 || end == -1) && PyErr_Occurred()) return NULL;
    if (end > PyList_GET_SIZE(records)) end = PyList_GET_SIZE(records);
    LaneParts lp;
    PyObject *const *pt = &PyTuple_GET_ITEM(args[3], 0);
    lp.task_type = pt[0];
    lp.tenant = pt[1];
    lp.block = pt[2];
    lp.texts = pt[3];
    lp.shape = pt[4];
    lp.clock = pt[5];
    lp.next_evict = PyFloat_AsDouble(pt[6]);
    lp.served_const = pt[7];
    lp.decided_const = pt[8];
    lp.stamps = pt[9];
    LaneIO io;
    PyObject *const *it = &PyTuple_GET_ITEM(args[4], 0);
    io.ids = it[0];
    io.writer = it[1];
    io.builder = it[2];
    io.headers = it[3];
    io.joinable = it[4];
    io.decisions = it[5];
    io.max_bytes = PyLong_AsSsize_t(it[6]);
    io.limit = PyLong_AsSsize_t(it[7]);
    if (PyErr_Occurred()) return NULL;
    if (!PyBytes_CheckExact(lp.task_type) || (lp.tenant != Py_None && !PyBytes_CheckExact(lp.tenant)) ||
        !PyList_CheckExact(lp.texts) || !PyTuple_CheckExact(lp.shape) || PyTuple_GET_SIZE(lp.shape) != 4 ||
        !PyTuple_CheckExact(lp.served_const) || PyTuple_GET_SIZE(lp.served_const) != 6 ||
        !PyTuple_CheckExact(lp.decided_const) || PyTuple_GET_SIZE(lp.decided_const) != 2 || !PyList_CheckExact(lp.stamps) ||
        !PyObject_TypeCheck(io.ids, &IdTableType) || ((IdTable *)io.ids)->current == NULL ||
        (io.joinable != Py_None && !PyList_CheckExact(io.joinable)) || !PyList_CheckExact(io.decisions)) {
        PyErr_SetString(PyExc_TypeError, "lane: parts or io of the wrong types");
        return NULL;
    }
    for (int k = 0; k < 4; k++)
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(lp.shape, k))) {
            PyErr_SetString(PyExc_TypeError, "lane: the shape's texts are bytes");
            return NULL;
        }
    PyObject *rows = PyObject_GetAttr(lp.block, s_rows);
    if (rows == NULL) return NULL;
    Py_ssize_t pos, size, clock_ms, clock_second, offset;
    double since_s, until_s;
    PyObject *prefix = NULL, *clock_json = NULL, *result = NULL, *full = Py_None;
    Py_INCREF(full);
    Py_ssize_t taken = 0, start_pos = 0, start_offset = 0;
    double now_s = 0.0;
    int collecting = 0; /* whether the collector was on (turned off for the loop) */
    if (!PyList_CheckExact(rows) || ssize_attr(lp.block, s_pos, &pos) < 0 || ssize_attr(lp.block, s_size, &size) < 0 ||
        double_attr(lp.block, s_since_s, &since_s) < 0 || double_attr(lp.block, s_until_s, &until_s) < 0 ||
        ssize_attr(lp.clock, s_ms, &clock_ms) < 0 || ssize_attr(lp.clock, s_second, &clock_second) < 0 ||
        ssize_attr(io.builder, s_relative_offset, &offset) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "lane: block.rows is a list");
        Py_DECREF(rows);
        Py_DECREF(full);
        return NULL;
    }
    if (size > PyList_GET_SIZE(rows)) size = PyList_GET_SIZE(rows);
    if (size > PyList_GET_SIZE(lp.texts)) size = PyList_GET_SIZE(lp.texts);
    if (pos < 0 || i < 0) size = pos; /* nothing taken */
    for (Py_ssize_t k = pos; k < size; k++) { /* the rows of the plain form only: stop before any other */
        PyObject *row = PyList_GET_ITEM(rows, k);
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != 4 || !PyBool_Check(PyTuple_GET_ITEM(row, 3)) ||
            !PyBytes_CheckExact(PyList_GET_ITEM(lp.texts, k))) {
            size = k;
            break;
        }
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(lp.stamps); k++) {
        PyObject *stamp = PyList_GET_ITEM(lp.stamps, k);
        if (!PyTuple_CheckExact(stamp) || PyTuple_GET_SIZE(stamp) != 2 || !PyDict_CheckExact(PyTuple_GET_ITEM(stamp, 0)) ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(stamp, 1)))
            size = pos;
    }
    if (!PyObject_TypeCheck(io.writer, &BuilderType)) size = pos; /* its append may be Python code */
    start_pos = pos;
    start_offset = offset;
    prefix = PyObject_GetAttr(lp.clock, s_prefix);
    clock_json = PyObject_GetAttr(lp.clock, s_json);
    if (prefix == NULL || clock_json == NULL || !PyUnicode_Check(prefix) || !PyBytes_CheckExact(clock_json)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "lane: the clock's _prefix is str and json bytes");
        goto done;
    }
    PyObject *const *shape = &PyTuple_GET_ITEM(lp.shape, 0);
    PyObject *const *sc = &PyTuple_GET_ITEM(lp.served_const, 0); /* key, task_type, tenant, state_version,
                                                                      policy_name, capped (bool) */
    PyObject *task_type_str = PyTuple_GET_ITEM(lp.decided_const, 0), *capped = PyTuple_GET_ITEM(lp.decided_const, 1);
    collecting = PyGC_Disable();
    while (i < end && taken < io.limit && pos < size) {
        PyObject *record = PyList_GET_ITEM(records, i);
        /* the record: the common request's text of the hot task type and tenant, keyed by its request id */
        PyObject *value = PyObject_GetAttr(record, s_value);
        if (value == NULL) goto done;
        if (!PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) == 0 || PyBytes_GET_SIZE(value) > io.max_bytes) {
            Py_DECREF(value);
            break;
        }
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(value);
        Py_ssize_t n = PyBytes_GET_SIZE(value);
        Py_ssize_t spans[10] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
        const Py_ssize_t *rid, *tt, *created, *tenant, *reply;
        int shaped = 0;
        if (n >= HEAD_LEN(SHORT_HEAD) && memcmp(p, SHORT_HEAD, HEAD_LEN(SHORT_HEAD)) == 0) {
            shaped = short_text(p, n, HEAD_LEN(SHORT_HEAD), spans);
            rid = spans, tt = spans + 2, created = spans + 4, tenant = spans + 6, reply = spans + 8;
        } else if (n >= HEAD_LEN(SDK_HEAD) && memcmp(p, SDK_HEAD, HEAD_LEN(SDK_HEAD)) == 0) {
            shaped = sdk_text(p, n, HEAD_LEN(SDK_HEAD), spans);
            created = spans, reply = spans + 2, rid = spans + 4, tt = spans + 6, tenant = spans + 8;
        }
        if (!shaped || reply[0] >= 0 || !valid_time(p + created[0]) || !same_text(p, tt, lp.task_type) ||
            !same_text(p, tenant, lp.tenant)) {
            Py_DECREF(value);
            break;
        }
        PyObject *key = PyObject_GetAttr(record, s_key);
        if (key == NULL) {
            Py_DECREF(value);
            goto done;
        }
        Py_ssize_t rid_len = rid[1] - rid[0];
        if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) != rid_len ||
            memcmp(PyBytes_AS_STRING(key), p + rid[0], (size_t)rid_len) != 0) {
            Py_DECREF(key);
            Py_DECREF(value);
            break; /* another partition's (the Python loop places it) */
        }
        /* the kept answer and its block row: as decide_encoded checks them */
        int64_t t0 = clock_ns(CLOCK_MONOTONIC);
        double now = time_s();
        Py_ssize_t ms_now = (Py_ssize_t)(now * 1000.0);
        if (now >= lp.next_evict || !(since_s <= now && now < until_s) ||
            (ms_now != clock_ms && ms_now / 1000 != clock_second)) {
            Py_DECREF(key);
            Py_DECREF(value);
            break; /* an eviction, a new block or a new second of the clock: the Python path */
        }
        PyObject *request_id = ascii_of(p + rid[0], rid_len, "", 0);
        if (request_id == NULL) {
            Py_DECREF(key);
            Py_DECREF(value);
            goto done;
        }
        Py_hash_t hash = PyObject_Hash(request_id); /* an exact str's: it cannot fail */
        if (id_seen((IdTable *)io.ids, hash)) { /* a duplicate: the Python loop writes its dead letter */
            Py_DECREF(request_id);
            Py_DECREF(key);
            Py_DECREF(value);
            break;
        }
        /* taken: from here on the request is decided (or the call fails) */
        i++;
        now_s = now;
        if (ms_now != clock_ms) { /* _MillisecondClock.iso within its second */
            PyObject *text = PyUnicode_FromFormat("%U.%03dZ", prefix, (int)(ms_now % 1000));
            const char *utf8 = text == NULL ? NULL : PyUnicode_AsUTF8(text);
            PyObject *json = utf8 == NULL ? NULL : PyBytes_FromFormat("\"%s\"", utf8);
            PyObject *ms_obj = json == NULL ? NULL : PyLong_FromSsize_t(ms_now);
            int failed = ms_obj == NULL || PyObject_SetAttr(lp.clock, s_text, text) < 0 ||
                         PyObject_SetAttr(lp.clock, s_json, json) < 0 || PyObject_SetAttr(lp.clock, s_ms, ms_obj) < 0;
            Py_XDECREF(text);
            Py_XDECREF(ms_obj);
            if (failed) {
                Py_XDECREF(json);
                Py_DECREF(request_id);
                Py_DECREF(key);
                Py_DECREF(value);
                goto done;
            }
            Py_SETREF(clock_json, json);
            clock_ms = ms_now;
        }
        PyObject *row = PyList_GET_ITEM(rows, pos);
        PyObject *row_text = PyList_GET_ITEM(lp.texts, pos);
        pos++;
        int explored = PyTuple_GET_ITEM(row, 3) == Py_True; /* checked above: a bool */
        PyObject *decision_id = ascii_of(p + rid[0], rid_len, "d:", 2);
        int64_t ns = clock_ns(CLOCK_MONOTONIC) - t0;
        if (ns < 0) ns = 0;
        double ms = (double)ns / 1e6; /* the text's own value: both the nearest double to ns / 10**6 */
        char ms_text[32];
        ms_decimal(ns, ms_text);
        PyObject *payload = NULL, *ms_obj = NULL, *decided = NULL, *served = NULL;
        if (decision_id != NULL) {
            static const char h1[] = "{\"schema_version\":1,\"decision_id\":\"d:", h2[] = "\",\"request_id\":\"",
                              h3[] = ",\"decision_ms\":";
            const char *flag = explored ? "true" : "false";
            Py_ssize_t ms_len = (Py_ssize_t)strlen(ms_text), flag_len = explored ? 4 : 5;
            Py_ssize_t parts_len[] = {HEAD_LEN(h1), rid_len, HEAD_LEN(h2), rid_len, PyBytes_GET_SIZE(shape[0]),
                                      PyBytes_GET_SIZE(row_text), PyBytes_GET_SIZE(shape[1]), flag_len,
                                      PyBytes_GET_SIZE(shape[2]), PyBytes_GET_SIZE(clock_json), HEAD_LEN(h3), ms_len,
                                      PyBytes_GET_SIZE(shape[3])};
            const char *parts_at[] = {h1, (const char *)p + rid[0], h2, (const char *)p + rid[0],
                                      PyBytes_AS_STRING(shape[0]), PyBytes_AS_STRING(row_text),
                                      PyBytes_AS_STRING(shape[1]), flag, PyBytes_AS_STRING(shape[2]),
                                      PyBytes_AS_STRING(clock_json), h3, ms_text, PyBytes_AS_STRING(shape[3])};
            Py_ssize_t total = 0;
            for (int k = 0; k < 13; k++) total += parts_len[k];
            payload = PyBytes_FromStringAndSize(NULL, total);
            if (payload != NULL) {
                char *d = PyBytes_AS_STRING(payload);
                for (int k = 0; k < 13; k++) {
                    memcpy(d, parts_at[k], (size_t)parts_len[k]);
                    d += parts_len[k];
                }
            }
        }
        Py_DECREF(value);
        if (payload != NULL) ms_obj = PyFloat_FromDouble(ms);
        if (ms_obj != NULL) {
            PyObject *model = PyTuple_GET_ITEM(row, 0);
            decided = PyTuple_Pack(5, task_type_str, model, capped, ms_obj, payload);
            served = decided == NULL ? NULL
                                     : PyTuple_Pack(11, request_id, decision_id, sc[0], sc[1], sc[2], model,
                                                    PyTuple_GET_ITEM(row, 1), PyTuple_GET_ITEM(row, 2), sc[3], sc[4],
                                                    sc[5]);
        }
        Py_XDECREF(ms_obj);
        Py_DECREF(request_id);
        Py_XDECREF(decision_id);
        if (served == NULL) {
            Py_XDECREF(decided);
            Py_XDECREF(payload);
            Py_DECREF(key);
            goto done;
        }
        PyObject *fallbacks = PyTuple_GET_ITEM(row, 1); /* model names, one tuple shared by the rows of a kind */
        if (PyTuple_CheckExact(fallbacks) && PyObject_GC_IsTracked(fallbacks)) untrack_atomic(fallbacks);
        untrack_atomic(decided);
        untrack_atomic(served);
        /* appended to the partition's record batch, as _run appends it */
        PyObject *offset_obj = PyLong_FromSsize_t(offset);
        PyObject *appended = NULL;
        if (offset_obj != NULL) {
            PyObject *call[5] = {offset_obj, Py_None, key, payload, io.headers};
            appended = Builder_append((Builder *)io.writer, call, 5, NULL);
            Py_DECREF(offset_obj);
        }
        Py_DECREF(payload);
        int joined = appended == NULL ? -1 : (io.joinable == Py_None ? 0 : PyList_Append(io.joinable, served));
        Py_DECREF(served);
        if (joined < 0) {
            Py_XDECREF(appended);
            Py_DECREF(decided);
            Py_DECREF(key);
            goto done;
        }
        if (appended == Py_None) { /* the batch is full: the Python loop ships it (_finish) */
            Py_DECREF(appended);
            Py_SETREF(full, PyTuple_Pack(2, key, decided));
            Py_DECREF(decided);
            Py_DECREF(key);
            if (full == NULL) goto done;
            break;
        }
        Py_DECREF(appended);
        Py_DECREF(key);
        offset++;
        int kept = PyList_Append(io.decisions, decided);
        Py_DECREF(decided);
        if (kept < 0) goto done;
        taken++;
    }
    result = Py_BuildValue("(nnO)", i, taken, full);
done:
    if (collecting == 1) PyGC_Enable();
    /* what the requests taken changed, written back whatever happened after them */
    if (pos != start_pos || offset != start_offset) {
        PyObject *exc_type, *exc, *exc_tb;
        PyErr_Fetch(&exc_type, &exc, &exc_tb);
        int failed = ssize_set(lp.block, s_pos, pos) < 0 || ssize_set(io.builder, s_relative_offset, offset) < 0;
        if (!failed) {
            PyObject *now_obj = PyFloat_FromDouble(now_s);
            Py_ssize_t count = now_obj == NULL ? -1 : PyList_GET_SIZE(lp.stamps);
            failed = count < 0;
            for (Py_ssize_t k = 0; k < count && !failed; k++) { /* Admission.check's stamps (the last time) */
                PyObject *stamp = PyList_GET_ITEM(lp.stamps, k); /* checked above: (dict, str) */
                failed = PyDict_SetItem(PyTuple_GET_ITEM(stamp, 0), PyTuple_GET_ITEM(stamp, 1), now_obj) < 0;
            }
            Py_XDECREF(now_obj);
        }
        if (exc_type != NULL) {
            PyErr_Restore(exc_type, exc, exc_tb);
        } else if (failed) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "lane: stamps are (dict, name) pairs");
            Py_CLEAR(result);
        }
    }
    Py_DECREF(rows);
    Py_XDECREF(prefix);
    Py_XDECREF(clock_json);
    Py_XDECREF(full);
    return result;
}

/* ---- rows_text: a block's rows' text (agents/decide.py, _rows_text) ----
 *
 * rows_text(heads, values, first, mids, last): row i is heads[i] + first + v[i*k] + mids[0] + v[i*k+1] + ... +
 * mids[k-2] + v[i*k+k-1] + last, where values is the comma-separated text of the block's draws (orjson's, its
 * brackets stripped) and k = len(mids) + 1; the same bytes as the Python code's split and joins, without a bytes
 * object per value. ValueError when values does not hold len(heads) * k of them (where the Python code's strict
 * zip raises too).
 */
static PyObject *rows_text(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyList_CheckExact(args[0]) || !PyBytes_CheckExact(args[1]) || !PyBytes_CheckExact(args[2]) ||
        !PyList_CheckExact(args[3]) || !PyBytes_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError, "rows_text(heads: list, values: bytes, first: bytes, mids: list, last: bytes)");
        return NULL;
    }
    PyObject *heads = args[0], *mids = args[3];
    Py_ssize_t size = PyList_GET_SIZE(heads), k = PyList_GET_SIZE(mids) + 1;
    for (Py_ssize_t i = 0; i < size; i++)
        if (!PyBytes_CheckExact(PyList_GET_ITEM(heads, i))) {
            PyErr_SetString(PyExc_TypeError, "rows_text: heads are bytes");
            return NULL;
        }
    for (Py_ssize_t j = 0; j + 1 < k; j++)
        if (!PyBytes_CheckExact(PyList_GET_ITEM(mids, j))) {
            PyErr_SetString(PyExc_TypeError, "rows_text: mids are bytes");
            return NULL;
        }
    const char *v = PyBytes_AS_STRING(args[1]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[1]);
    /* the values' boundaries: size * k of them, comma-separated */
    if (size > 0 && k > (n + 1) / size) { /* more values than the text can hold (commas + 1 <= n + 1): refused
                                               before any size is computed */
        PyErr_SetString(PyExc_ValueError, "rows_text: values does not hold len(heads) * k of them");
        return NULL;
    }
    Py_ssize_t count = size * k; /* <= n + 1: no overflow */
    Py_ssize_t first_len = PyBytes_GET_SIZE(args[2]), last_len = PyBytes_GET_SIZE(args[4]), mids_len = 0;
    for (Py_ssize_t j = 0; j + 1 < k; j++) mids_len += PyBytes_GET_SIZE(PyList_GET_ITEM(mids, j));
    Py_ssize_t *starts = PyMem_New(Py_ssize_t, (size_t)count + 1);
    if (starts == NULL) return PyErr_NoMemory();
    Py_ssize_t found = 0;
    if (count > 0) {
        starts[found++] = 0;
        for (Py_ssize_t at = 0; at < n; at++)
            if (v[at] == ',') {
                if (found == count) {
                    found = count + 1; /* too many */
                    break;
                }
                starts[found++] = at + 1;
            }
    } else if (n > 0) {
        found = 1;
    }
    if (found != count) {
        PyMem_Free(starts);
        PyErr_SetString(PyExc_ValueError, "rows_text: values does not hold len(heads) * k of them");
        return NULL;
    }
    starts[count] = n + 1; /* the value m ends at starts[m + 1] - 1 */
    PyObject *out = PyList_New(size);
    if (out == NULL) {
        PyMem_Free(starts);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *head = PyList_GET_ITEM(heads, i);
        Py_ssize_t m = i * k;
        Py_ssize_t values_len = (starts[m + k] - 1) - starts[m] - (k - 1); /* the commas between are not written */
        Py_ssize_t total = PyBytes_GET_SIZE(head) + first_len + values_len + mids_len + last_len;
        PyObject *row = PyBytes_FromStringAndSize(NULL, total);
        if (row == NULL) {
            Py_DECREF(out);
            PyMem_Free(starts);
            return NULL;
        }
        char *d = PyBytes_AS_STRING(row);
        memcpy(d, PyBytes_AS_STRING(head), (size_t)PyBytes_GET_SIZE(head));
        d += PyBytes_GET_SIZE(head);
        memcpy(d, PyBytes_AS_STRING(args[2]), (size_t)first_len);
        d += first_len;
        for (Py_ssize_t j = 0; j < k; j++) {
            Py_ssize_t from = starts[m + j], len = starts[m + j + 1] - 1 - from;
            memcpy(d, v + from, (size_t)len);
            d += len;
            PyObject *joint = j + 1 < k ? PyList_GET_ITEM(mids, j) : args[4];
            memcpy(d, PyBytes_AS_STRING(joint), (size_t)PyBytes_GET_SIZE(joint));
            d += PyBytes_GET_SIZE(joint);
        }
        PyList_SET_ITEM(out, i, row);
    }
    PyMem_Free(starts);
    return out;
}

/* ---- fresh_entries: the join's fresh pending entries (agents/pending.py, encode_fresh_many) ----
 *
 * fresh_entries(decisions, deadline_ms, default_policy, float_text): for each (partition, offset, served) of the
 * list decisions, the JSON text orjson writes of [3, decision_id or null (where it is "d:" + request_id),
 * task_key or null (where it is task_type), task_type, tenant, model, fallbacks, propensity, state_version,
 * policy or null (where it is default_policy), deadline_ms[task_type], offset]. None, with nothing made, where a
 * value is not of the kinds written here: strs of ASCII from ' ' to '~' other than '"' and '\\' (JSON text as
 * they are; the request id need only be ASCII, it is compared, not written), None for the tenant, a tuple of
 * such strs for the fallbacks, an exact float for the propensity (written as float_text(value) gives it:
 * orjson's own text), ints within int64 (not bools), a dict for deadline_ms holding the task type. The caller
 * then takes the Python path, which writes or refuses those as before.
 *
 * The rows of a handoff share their task, tenant, model, fallbacks and propensity objects in runs (the decide
 * loop's blocks): the text of those is made once per run of the same objects and copied for the rows after.
 */
typedef struct {
    char *at;
    Py_ssize_t len, cap;
} Text;

static int text_grow(Text *t, Py_ssize_t n) {
    Py_ssize_t cap = t->cap ? t->cap : 256;
    while (cap < t->len + n) cap *= 2;
    char *grown = PyMem_Realloc(t->at, (size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->at = grown;
    t->cap = cap;
    return 0;
}

static inline int text_put(Text *t, const char *s, Py_ssize_t n) {
    if (__builtin_expect(t->len + n > t->cap, 0) && text_grow(t, n) < 0) return -1;
    memcpy(t->at + t->len, s, (size_t)n);
    t->len += n;
    return 0;
}

/* the ASCII characters JSON text holds as they are: ' ' to '~' other than '"' and '\\' (set at module init) */
static unsigned char plain_table[128];

static void plain_table_init(void) {
    for (int k = 0; k < 128; k++) plain_table[k] = k >= ' ' && k <= '~' && k != '"' && k != '\\';
}

/* a str's characters when it is written as they are (see above), else NULL (*n: their count) */
static const char *plain_ascii(PyObject *s, Py_ssize_t *n) {
    if (!PyUnicode_CheckExact(s) || !PyUnicode_IS_COMPACT_ASCII(s)) return NULL;
    const unsigned char *c = (const unsigned char *)PyUnicode_DATA(s);
    Py_ssize_t len = PyUnicode_GET_LENGTH(s);
    unsigned char all = 1;
    for (Py_ssize_t i = 0; i < len; i++) all &= plain_table[c[i]]; /* compact ASCII: every c[i] < 128 */
    if (!all) return NULL;
    *n = len;
    return (const char *)c;
}

/* 1: written; 0: not of the kinds written here; -1: an error */
static int text_str(Text *t, PyObject *s) {
    Py_ssize_t n;
    const char *c = plain_ascii(s, &n);
    if (c == NULL) return 0;
    if (__builtin_expect(t->len + n + 2 > t->cap, 0) && text_grow(t, n + 2) < 0) return -1;
    char *d = t->at + t->len;
    d[0] = '"';
    memcpy(d + 1, c, (size_t)n);
    d[n + 1] = '"';
    t->len += n + 2;
    return 1;
}

/* null where null is set, else text_str of s: 1, 0 or -1 as text_str */
static int text_null_or_str(Text *t, int null, PyObject *s) {
    return null ? (text_put(t, "null", 4) < 0 ? -1 : 1) : text_str(t, s);
}

static int text_int(Text *t, PyObject *v) {
    if (!PyLong_CheckExact(v)) return 0;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) return 0;
    if (x == -1 && PyErr_Occurred()) return -1;
    char digits[24], *end = digits + sizeof digits;
    char *d = decimal_back(x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x, end);
    if (x < 0) *--d = '-';
    return text_put(t, d, end - d) < 0 ? -1 : 1;
}

/* whether two plain strs (as plain_ascii takes them) are equal; -1: one is not plain */
static int plain_equal(PyObject *a, PyObject *b) {
    if (a == b) return plain_ascii(a, &(Py_ssize_t){0}) != NULL ? 1 : -1;
    Py_ssize_t na, nb;
    const char *ca = plain_ascii(a, &na), *cb = plain_ascii(b, &nb);
    if (ca == NULL || cb == NULL) return -1;
    return na == nb && memcmp(ca, cb, (size_t)na) == 0;
}

/* the text of served's task key (or null), task type, tenant, model and fallbacks, comma-separated: 1, 0 or -1 as
 * text_str */
static int text_task(Text *t, PyObject *const *f) {
    int same_key = plain_equal(f[2], f[3]);
    if (same_key < 0 || !PyTuple_CheckExact(f[6])) return 0;
    int ok = text_null_or_str(t, same_key, f[2]);
    if (ok == 1) ok = text_put(t, ",", 1) < 0 ? -1 : 1;
    if (ok == 1) ok = text_str(t, f[3]);
    if (ok == 1) ok = text_put(t, ",", 1) < 0 ? -1 : 1;
    if (ok == 1) ok = text_null_or_str(t, f[4] == Py_None, f[4]);
    if (ok == 1) ok = text_put(t, ",", 1) < 0 ? -1 : 1;
    if (ok == 1) ok = text_str(t, f[5]);
    if (ok == 1) ok = text_put(t, ",[", 2) < 0 ? -1 : 1;
    for (Py_ssize_t j = 0; ok == 1 && j < PyTuple_GET_SIZE(f[6]); j++) {
        if (j > 0 && text_put(t, ",", 1) < 0) ok = -1;
        if (ok == 1) ok = text_str(t, PyTuple_GET_ITEM(f[6], j));
    }
    if (ok == 1) ok = text_put(t, "],", 2) < 0 ? -1 : 1;
    return ok;
}

/* float_text's answers in one fresh_entries call, by the double's bits: a handoff's rows hold a few distinct
 * propensities (one per kind of row of a decision block), but not in runs, so the tail's cache below misses on
 * most rows; a Python call per row was ~1,100 of the join's instructions a decision (callgrind, bench.decide_path) */
#define FLOAT_TEXTS 16
#define FLOAT_TEXT_MAX 40
typedef struct {
    int count, next;
    uint64_t bits[FLOAT_TEXTS];
    unsigned char len[FLOAT_TEXTS];
    char text[FLOAT_TEXTS][FLOAT_TEXT_MAX];
} FloatTexts;

/* the text of an exact float as float_text gives it, into t: 1, 0 (not bytes: the Python path) or -1 */
static int text_float(Text *t, FloatTexts *known, PyObject *value, PyObject *float_text) {
    double v = PyFloat_AS_DOUBLE(value);
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    for (int i = 0; i < known->count; i++) {
        if (known->bits[i] == bits) return text_put(t, known->text[i], known->len[i]) < 0 ? -1 : 1;
    }
    PyObject *number = PyObject_CallOneArg(float_text, value);
    if (number == NULL) return -1;
    int ok = PyBytes_CheckExact(number) ? 1 : 0;
    if (ok == 1) {
        Py_ssize_t n = PyBytes_GET_SIZE(number);
        ok = text_put(t, PyBytes_AS_STRING(number), n) < 0 ? -1 : 1;
        if (ok == 1 && n <= FLOAT_TEXT_MAX) { /* kept for the rows after (the oldest replaced when full) */
            int slot = known->count < FLOAT_TEXTS ? known->count++ : known->next++ % FLOAT_TEXTS;
            known->bits[slot] = bits;
            known->len[slot] = (unsigned char)n;
            memcpy(known->text[slot], PyBytes_AS_STRING(number), (size_t)n);
        }
    }
    Py_DECREF(number);
    return ok;
}

/* one (partition, offset, served) of fresh_entries into t (its text; the caller holds item): 1, 0 or -1 as
 * text_str. task and tail keep the text of the served tuple held in *task_from / *tail_from, for the rows after
 * that share its objects */
static int fresh_entry(Text *t, Text *task, Text *tail, PyObject **task_from, PyObject **tail_from, PyObject *item,
                       PyObject *deadline_ms, PyObject *default_policy, PyObject *float_text, FloatTexts *known) {
    PyObject *offset = PyTuple_GET_ITEM(item, 1), *served = PyTuple_GET_ITEM(item, 2);
    if (!PyTuple_CheckExact(served) || PyTuple_GET_SIZE(served) != 11) return 0;
    /* request_id, decision_id, task_key, task_type, tenant, model, fallbacks, propensity, version, policy */
    PyObject *const *f = &PyTuple_GET_ITEM(served, 0);
    if (!PyUnicode_CheckExact(f[0]) || !PyUnicode_IS_COMPACT_ASCII(f[0]) || !PyUnicode_CheckExact(f[1]) ||
        !PyUnicode_IS_COMPACT_ASCII(f[1]))
        return 0;
    Py_ssize_t rid_len = PyUnicode_GET_LENGTH(f[0]), did_len = PyUnicode_GET_LENGTH(f[1]);
    const char *rid = (const char *)PyUnicode_DATA(f[0]), *did = (const char *)PyUnicode_DATA(f[1]);
    int derived =
        did_len == rid_len + 2 && did[0] == 'd' && did[1] == ':' && memcmp(did + 2, rid, (size_t)rid_len) == 0;
    int ok;
    PyObject *const *tf = *task_from == NULL ? NULL : &PyTuple_GET_ITEM(*task_from, 0);
    if (tf == NULL || tf[2] != f[2] || tf[3] != f[3] || tf[4] != f[4] || tf[5] != f[5] || tf[6] != f[6]) {
        task->len = 0;
        ok = text_task(task, f);
        if (ok != 1) {
            Py_CLEAR(*task_from); /* task is partial */
            return ok;
        }
        Py_XSETREF(*task_from, Py_NewRef(served));
    }
    /* the propensity, version and policy: "<propensity>,<version>,<policy or null>," */
    PyObject *const *lf = *tail_from == NULL ? NULL : &PyTuple_GET_ITEM(*tail_from, 0);
    if (lf == NULL || lf[7] != f[7] || lf[8] != f[8] || lf[9] != f[9]) {
        int default_named = plain_equal(f[9], default_policy);
        if (default_named < 0 || !PyFloat_CheckExact(f[7])) return 0;
        tail->len = 0;
        ok = text_float(tail, known, f[7], float_text);
        if (ok == 1) ok = text_put(tail, ",", 1) < 0 ? -1 : 1;
        if (ok == 1) ok = text_int(tail, f[8]);
        if (ok == 1) ok = text_put(tail, ",", 1) < 0 ? -1 : 1;
        if (ok == 1) ok = text_null_or_str(tail, default_named, f[9]);
        if (ok == 1) ok = text_put(tail, ",", 1) < 0 ? -1 : 1;
        if (ok != 1) {
            Py_CLEAR(*tail_from); /* tail is partial */
            return ok;
        }
        Py_XSETREF(*tail_from, Py_NewRef(served));
    }
    PyObject *deadline = PyDict_GetItemWithError(deadline_ms, f[3]); /* borrowed; f[3] is a plain str */
    if (deadline == NULL) return PyErr_Occurred() ? -1 : 0; /* no Python code runs from here to its last use */
    t->len = 0;
    ok = text_put(t, "[3,", 3) < 0 ? -1 : 1;
    if (ok == 1) ok = text_null_or_str(t, derived, f[1]);
    if (ok == 1) ok = text_put(t, ",", 1) < 0 ? -1 : 1;
    if (ok == 1) ok = text_put(t, task->at, task->len) < 0 ? -1 : 1;
    if (ok == 1) ok = text_put(t, tail->at, tail->len) < 0 ? -1 : 1;
    if (ok == 1) ok = text_int(t, deadline);
    if (ok == 1) ok = text_put(t, ",", 1) < 0 ? -1 : 1;
    if (ok == 1) ok = text_int(t, offset);
    if (ok == 1) ok = text_put(t, "]", 1) < 0 ? -1 : 1;
    return ok;
}

static PyObject *fresh_entries(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "fresh_entries(decisions, deadline_ms, default_policy, float_text)");
        return NULL;
    }
    PyObject *decisions = args[0], *deadline_ms = args[1], *default_policy = args[2], *float_text = args[3];
    if (!PyList_CheckExact(decisions) || !PyDict_CheckExact(deadline_ms)) Py_RETURN_NONE;
    Py_ssize_t size = PyList_GET_SIZE(decisions);
    PyObject *out = PyList_New(size);
    if (out == NULL) return NULL;
    Text t = {NULL, 0, 0}, task = {NULL, 0, 0}, tail = {NULL, 0, 0};
    /* the served tuples the kept texts were made of (held: float_text, Python code, could drop the list's) */
    PyObject *task_from = NULL, *tail_from = NULL;
    FloatTexts known = {0, 0, {0}, {0}, {{0}}};
    int ok = 1; /* 0: not of the kinds written here; -1: an error */
    for (Py_ssize_t i = 0; i < size && ok == 1; i++) {
        if (PyList_GET_SIZE(decisions) != size) { /* changed by float_text (Python code): the Python path takes it */
            ok = 0;
            break;
        }
        PyObject *item = PyList_GET_ITEM(decisions, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3) {
            ok = 0;
            break;
        }
        Py_INCREF(item); /* offset and f point into it, across float_text and the deadline's lookup */
        ok = fresh_entry(&t, &task, &tail, &task_from, &tail_from, item, deadline_ms, default_policy, float_text,
                         &known);
        if (ok == 1) {
            PyObject *entry = PyBytes_FromStringAndSize(t.at, t.len);
            if (entry == NULL)
                ok = -1;
            else
                PyList_SET_ITEM(out, i, entry);
        }
        Py_DECREF(item);
    }
    Py_XDECREF(task_from);
    Py_XDECREF(tail_from);
    PyMem_Free(t.at);
    PyMem_Free(task.at);
    PyMem_Free(tail.at);
    if (ok == 1) return out;
    Py_DECREF(out); /* the entries made so far, and the NULL slots after them */
    if (ok < 0) return NULL;
    Py_RETURN_NONE;
}

/* ---- hold_new: the join's fresh entries put in its held dict (agents/pending.py, PendingStore.hold_new) ----
 *
 * hold_new(held, keys, values): held[keys[i]] = values[i] for every i, with one look-up of each key (the dict's
 * setdefault), when none of the keys is in held yet: True. Otherwise held is left as it was (the keys put in
 * before the one found are taken out again) and the answer is False. A value found under a key is told from the
 * one being put by identity: the caller's values are new objects, held nowhere else (so a key repeated in keys
 * is found only when its values differ: the caller rejects repeats itself). None, with nothing done, unless every
 * key is an exact str: then no Python code runs in the loop (a str hashes and compares in C, and a dict's growth
 * allocates nothing the collector tracks), so the lists and the borrowed items stay as they are throughout. */
static void hold_undo(PyObject *held, PyObject *keys, Py_ssize_t upto) {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback); /* the error that stopped the loop, if any, outlives the undo */
    for (Py_ssize_t j = 0; j < upto; j++) {
        if (PyDict_DelItem(held, PyList_GET_ITEM(keys, j)) < 0) PyErr_Clear(); /* put in by this call: there */
    }
    PyErr_Restore(type, value, traceback);
}

static PyObject *hold_new(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "hold_new(held, keys, values)");
        return NULL;
    }
    PyObject *held = args[0], *keys = args[1], *values = args[2];
    if (!PyDict_CheckExact(held) || !PyList_CheckExact(keys) || !PyList_CheckExact(values)) {
        PyErr_SetString(PyExc_TypeError, "hold_new(held, keys, values): a dict and two lists");
        return NULL;
    }
    Py_ssize_t size = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(values) != size) {
        PyErr_SetString(PyExc_ValueError, "hold_new: as many values as keys");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        if (!PyUnicode_CheckExact(PyList_GET_ITEM(keys, i))) Py_RETURN_NONE;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        PyObject *there = PyDict_SetDefault(held, PyList_GET_ITEM(keys, i), value); /* borrowed */
        if (there == NULL) { /* no memory to grow the dict */
            hold_undo(held, keys, i);
            return NULL;
        }
        if (there != value) {
            hold_undo(held, keys, i);
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

static PyObject *crc32c_py(PyObject *Py_UNUSED(module), PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t crc = crc32c((const unsigned char *)view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

static PyMethodDef module_methods[] = {
    {"short_groups", (PyCFunction)(void (*)(void))short_groups, METH_FASTCALL,
     "short_groups(raw, at): fast_request._SHORT_TEXT.fullmatch(raw, at).groups(), or None."},
    {"sdk_groups", (PyCFunction)(void (*)(void))sdk_groups, METH_FASTCALL,
     "sdk_groups(raw, at): fast_request._SDK_TEXT.fullmatch(raw, at).groups(), or None."},
    {"lane", (PyCFunction)(void (*)(void))lane, METH_FASTCALL,
     "lane(records, i, end, parts, io): the decide loop's common requests of the kept hot answer, decided in C."},
    {"rows_text", (PyCFunction)(void (*)(void))rows_text, METH_FASTCALL,
     "rows_text(heads, values, first, mids, last): a block's rows' text (agents/decide.py, _rows_text)."},
    {"fresh_entries", (PyCFunction)(void (*)(void))fresh_entries, METH_FASTCALL,
     "fresh_entries(decisions, deadline_ms, default_policy, float_text): the join's fresh entries, or None."},
    {"hold_new", (PyCFunction)(void (*)(void))hold_new, METH_FASTCALL,
     "hold_new(held, keys, values): held[key] = value for each if no key is there yet (True), else False; "
     "None for a key not an exact str."},
    {"valid_time", valid_time_py, METH_O, "valid_time(text): whether a UTC_TIME text is a date datetime takes."},
    {"crc32c", crc32c_py, METH_O, "CRC-32C of a bytes-like object (as Kafka checksums a record batch)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The decide loop's record batches and duplicate-id check in C.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    plain_table_init();
    crc_init();
#ifdef HAVE_HW_CRC
    __builtin_cpu_init();
    use_hw_crc = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
    if (PyType_Ready(&BuilderType) < 0 || PyType_Ready(&IdTableType) < 0) return NULL;
    for (int i = 0; i < 5; i++) {
        append_interned[i] = PyUnicode_InternFromString(append_names[i]);
        if (append_interned[i] == NULL) return NULL;
    }
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {{&s_value, "value"}, {&s_key, "key"}, {&s_rows, "rows"}, {&s_pos, "pos"}, {&s_size, "size"}, {&s_since_s, "since_s"},
                 {&s_until_s, "until_s"}, {&s_ms, "ms"}, {&s_text, "text"}, {&s_json, "json"}, {&s_second, "_second"},
                 {&s_prefix, "_prefix"}, {&s_relative_offset, "_relative_offset"}};
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        *names[k].slot = PyUnicode_InternFromString(names[k].name);
        if (*names[k].slot == NULL) return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&BuilderType);
    if (PyModule_AddObject(m, "Builder", (PyObject *)&BuilderType) < 0) {
        Py_DECREF(&BuilderType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&IdTableType);
    if (PyModule_AddObject(m, "IdTable", (PyObject *)&IdTableType) < 0) {
        Py_DECREF(&IdTableType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "HARDWARE_CRC", use_hw_crc) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
