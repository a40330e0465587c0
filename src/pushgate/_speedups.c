/* pushgate._speedups: the per-delivery fan-out path, compiled.
 *
 * The loops that run once per delivery, and nothing else:
 *
 *   hand(sinks, frame, skip)          Hub._hand's loop (hub.py): frame to each sink
 *   hand_each(sinks, message, skip, delivered)
 *                                     Hub._hand_each's: each sink its encoding's bytes
 *   flush(outbox, conns, start, stop) Outbox._flush's loop (outbox.py): one write each
 *
 * Each does, for a WebSocket connection in the common case, what the Python methods
 * it stands for do, and calls those methods for everything else, so that the rare
 * paths are written once, in Python:
 *
 *   - hand and hand_each, for a connection of the type given to setup() whose phase
 *     is OPEN, are Output.send (wsoutput.py): the frame (compressed by
 *     Outbox.deflated if the connection negotiated permessage-deflate) appended to
 *     its _pending, and the connection marked as Outbox.mark does. Any other sink, or
 *     phase (WELCOMING counts held bytes, the others drop the frame), gets
 *     sink.send(frame). hand_each asks message.bytes_for(encoding) once per encoding
 *     and counts each encoding's recipients in the hub's Counter once per call.
 *   - flush, for such a connection whose phase is OPEN and whose transport is open,
 *     is Output.flush: the pending frames joined, _pending cleared, _head set to 0,
 *     transport.write(data), Output._check_output_bound() if it is backlogged, and
 *     the outbox's meters counted (once per call, not per connection). Anything else
 *     gets Outbox._write(conn); an exception in the common case gets
 *     Outbox._failed(conn, exc), what Outbox._write does with one.
 *
 * pushgate.speedups decides whether these are used (PUSHGATE_NO_SPEEDUPS=1: never);
 * tests/test_speedups.py runs the fan-out tests both ways.
 *
 * INTERFACE (below, and in speedups.py) changes with what these functions take or
 * expect: a build of another interface is then not used.
 *
 * The connection's state is read from its __slots__ by offset (the member
 * descriptors setup() finds), not by name: see docs/benchmarks.md, "A compiled
 * fan-out (issue 23)", for what each costs.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif
#ifndef Py_READONLY
#define Py_READONLY READONLY
#endif

#if PY_VERSION_HEX < 0x030C0000 /* 3.12's exception API, for 3.11 */
static PyObject *
PyErr_GetRaisedException(void)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_DECREF(type);
    Py_XDECREF(traceback);
    return value;
}

static void
PyErr_SetRaisedException(PyObject *exc)
{
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}
#endif

/* What setup() learnt; NULL types until it is called (then nothing is fast). */
static PyTypeObject *conn_type = NULL;   /* WebSocketConnection */
static PyTypeObject *outbox_type = NULL; /* Outbox */
static PyObject *open_phase = NULL;      /* Phase.OPEN */

/* Slot offsets in a connection, and in an outbox. */
static Py_ssize_t off_phase, off_deflate_bits, off_pending, off_outbox, off_transport,
    off_backlogged, off_head, off_encoding;
static Py_ssize_t off_dirty;

/* Interned method and attribute names. */
static PyObject *s_send, *s_mark, *s_deflated, *s_is_closing, *s_write, *s_write_conn,
    *s_failed, *s_check_output_bound, *s_meters, *s_writes, *s_frames_written,
    *s_bytes_written, *s_encoding, *s_bytes_for;
static PyObject *zero; /* the int 0 */

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static int
slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL) {
        return -1;
    }
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        Py_DECREF(descr);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != Py_T_OBJECT_EX || (member->flags & Py_READONLY)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a writable object slot", type->tp_name,
                     name);
        Py_DECREF(descr);
        return -1;
    }
    *offset = member->offset;
    Py_DECREF(descr);
    return 0;
}

PyDoc_STRVAR(setup_doc,
             "setup(conn_type, outbox_type, open_phase)\n\n"
             "Name the connection type whose fan-out is done here, the outbox type, and\n"
             "the phase in which a connection takes fan-out (Phase.OPEN).");

static PyObject *
setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "setup(conn_type, outbox_type, open_phase)");
        return NULL;
    }
    PyTypeObject *conn = (PyTypeObject *)args[0], *outbox = (PyTypeObject *)args[1];
    if (slot_offset(conn, "_phase", &off_phase) < 0 ||
        slot_offset(conn, "_deflate_bits", &off_deflate_bits) < 0 ||
        slot_offset(conn, "_pending", &off_pending) < 0 ||
        slot_offset(conn, "_outbox", &off_outbox) < 0 ||
        slot_offset(conn, "_transport", &off_transport) < 0 ||
        slot_offset(conn, "_backlogged", &off_backlogged) < 0 ||
        slot_offset(conn, "_head", &off_head) < 0 ||
        slot_offset(conn, "encoding", &off_encoding) < 0 ||
        slot_offset(outbox, "_dirty", &off_dirty) < 0) {
        Py_CLEAR(conn_type); /* half set up: nothing is fast */
        return NULL;
    }
    Py_INCREF(conn);
    Py_XSETREF(conn_type, conn);
    Py_INCREF(outbox);
    Py_XSETREF(outbox_type, outbox);
    Py_INCREF(args[2]);
    Py_XSETREF(open_phase, args[2]);
    Py_RETURN_NONE;
}

/* Outbox.mark(conn): the first connection of a turn schedules the flush (Python). */
static int
mark(PyObject *outbox, PyObject *conn)
{
    if (Py_IS_TYPE(outbox, outbox_type)) {
        PyObject *dirty = SLOT(outbox, off_dirty);
        if (dirty != NULL && PyList_CheckExact(dirty) && PyList_GET_SIZE(dirty) > 0) {
            return PyList_Append(dirty, conn);
        }
    }
    PyObject *res = PyObject_CallMethodOneArg(outbox, s_mark, conn);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

/* A frame compressed for one window size: Outbox.deflated, asked once per call of
 * hand() for each (outbox, window) it meets. */
typedef struct {
    PyObject *outbox; /* all three owned */
    PyObject *bits;
    PyObject *frame;
} Deflated;

/* Window sizes are 8 to 15, and a gateway has one outbox. */
#define DEFLATED_CACHE 8

/* The frame compressed (borrowed from the cache); NULL with no error set when the
 * cache is full (then Output.send does it). */
static PyObject *
deflated(Deflated *cache, PyObject *outbox, PyObject *bits, PyObject *frame)
{
    int i;
    for (i = 0; i < DEFLATED_CACHE && cache[i].frame != NULL; i++) {
        if (cache[i].outbox == outbox) {
            int same = cache[i].bits == bits
                ? 1 : PyObject_RichCompareBool(cache[i].bits, bits, Py_EQ);
            if (same < 0) {
                return NULL;
            }
            if (same) {
                return cache[i].frame;
            }
        }
    }
    if (i == DEFLATED_CACHE) {
        return NULL;
    }
    PyObject *made = PyObject_CallMethodObjArgs(outbox, s_deflated, frame, bits, NULL);
    if (made == NULL) {
        return NULL;
    }
    cache[i].outbox = Py_NewRef(outbox);
    cache[i].bits = Py_NewRef(bits);
    cache[i].frame = made;
    return made;
}

/* Output.send for a connection in phase OPEN; 1 if done, 0 if the caller must call
 * sink.send(frame) instead, -1 on error. */
static int
send_open(PyObject *conn, PyObject *frame, Deflated *cache)
{
    PyObject *phase = SLOT(conn, off_phase);
    PyObject *bits = SLOT(conn, off_deflate_bits);
    PyObject *outbox = SLOT(conn, off_outbox);
    if (phase != open_phase || bits == NULL || outbox == NULL) {
        return 0;
    }
    if (bits != zero) {
        int on = PyObject_IsTrue(bits);
        if (on < 0) {
            return -1;
        }
        if (on) {
            frame = deflated(cache, outbox, bits, frame); /* runs Python: */
            if (frame == NULL) {
                return PyErr_Occurred() ? -1 : 0;
            }
            outbox = SLOT(conn, off_outbox); /* read the slots again */
            if (outbox == NULL || SLOT(conn, off_phase) != open_phase) {
                return 0;
            }
        }
    }
    PyObject *pending = SLOT(conn, off_pending);
    if (pending == NULL || !PyList_CheckExact(pending)) {
        return 0;
    }
    if (PyList_Append(pending, frame) < 0) {
        return -1;
    }
    if (PyList_GET_SIZE(pending) == 1 && mark(outbox, conn) < 0) {
        return -1;
    }
    return 1;
}

/* send(sink, frame): the fast path for a connection of conn_type, sink.send else. */
static int
send_to(PyObject *sink, PyObject *frame, Deflated *cache)
{
    int done = Py_IS_TYPE(sink, conn_type) ? send_open(sink, frame, cache) : 0;
    if (done == 0) {
        PyObject *call[2] = {sink, frame};
        PyObject *res =
            PyObject_VectorcallMethod(s_send, call, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_XDECREF(res);
        done = res == NULL ? -1 : 1;
    }
    return done;
}

/* The bytes of one message for each encoding met in one call of hand_each, and how
 * many sinks of each got them. */
typedef struct {
    PyObject *encoding; /* owned */
    PyObject *frame;    /* owned */
    Py_ssize_t count;
} Encoded;

/* A hub holds a few encodings: the protocols times the transports. */
#define ENCODINGS 8

static void
free_cache(Deflated *cache, Encoded *encoded)
{
    for (int i = 0; i < DEFLATED_CACHE; i++) {
        Py_XDECREF(cache[i].outbox);
        Py_XDECREF(cache[i].bits);
        Py_XDECREF(cache[i].frame);
    }
    for (int i = 0; encoded != NULL && i < ENCODINGS; i++) {
        Py_XDECREF(encoded[i].encoding);
        Py_XDECREF(encoded[i].frame);
    }
}

PyDoc_STRVAR(hand_doc,
             "hand(sinks, frame, skip) -> int\n\n"
             "Hand frame to every sink but skip (None: to all); return how many got it.");

static PyObject *
hand(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "hand(sinks, frame, skip)");
        return NULL;
    }
    PyObject *frame = args[1], *skip = args[2];
    PyObject *it = PyObject_GetIter(args[0]);
    if (it == NULL) {
        return NULL;
    }
    Deflated cache[DEFLATED_CACHE] = {{0}};
    Py_ssize_t handed = 0;
    PyObject *sink;
    int failed = 0;
    while ((sink = PyIter_Next(it)) != NULL) {
        int done = sink == skip ? 0 : send_to(sink, frame, cache);
        Py_DECREF(sink);
        if (done < 0) {
            failed = 1;
            break;
        }
        handed += done;
    }
    Py_DECREF(it);
    free_cache(cache, NULL);
    if (failed || PyErr_Occurred()) {
        return NULL;
    }
    return PyLong_FromSsize_t(handed);
}

/* The bytes of message for sink's encoding, made by message.bytes_for once per
 * encoding (borrowed from encoded); NULL on error, or with no error set when there
 * are more encodings than ENCODINGS (then the caller asks the message itself). */
static Encoded *
encoded_for(PyObject *sink, PyObject *message, Encoded *encoded)
{
    PyObject *encoding =
        Py_IS_TYPE(sink, conn_type) ? SLOT(sink, off_encoding) : NULL;
    if (encoding != NULL) {
        Py_INCREF(encoding);
    }
    else if ((encoding = PyObject_GetAttr(sink, s_encoding)) == NULL) {
        return NULL;
    }
    int i;
    for (i = 0; i < ENCODINGS && encoded[i].encoding != NULL; i++) {
        if (encoded[i].encoding == encoding) { /* Encoding compares by identity */
            Py_DECREF(encoding);
            return &encoded[i];
        }
    }
    if (i == ENCODINGS) {
        Py_DECREF(encoding);
        return NULL;
    }
    PyObject *frame = PyObject_CallMethodOneArg(message, s_bytes_for, encoding);
    if (frame == NULL) {
        Py_DECREF(encoding);
        return NULL;
    }
    encoded[i].encoding = encoding;
    encoded[i].frame = frame;
    encoded[i].count = 0;
    return &encoded[i];
}

/* delivered[key] += n, for a Counter (whose missing keys count 0). */
static int
add_count(PyObject *delivered, PyObject *key, Py_ssize_t n)
{
    if (n == 0) {
        return 0;
    }
    PyObject *was = PyObject_GetItem(delivered, key);
    if (was == NULL) {
        return -1;
    }
    PyObject *more = PyLong_FromSsize_t(n);
    PyObject *now = more == NULL ? NULL : PyNumber_Add(was, more);
    Py_DECREF(was);
    Py_XDECREF(more);
    if (now == NULL) {
        return -1;
    }
    int r = PyObject_SetItem(delivered, key, now);
    Py_DECREF(now);
    return r;
}

PyDoc_STRVAR(hand_each_doc,
             "hand_each(sinks, message, skip, delivered) -> int\n\n"
             "Hand each sink but skip message.bytes_for(sink.encoding), asked once per\n"
             "encoding; count each encoding's recipients in delivered (a Counter); return\n"
             "how many got it.");

static PyObject *
hand_each(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "hand_each(sinks, message, skip, delivered)");
        return NULL;
    }
    PyObject *message = args[1], *skip = args[2], *delivered = args[3];
    PyObject *it = PyObject_GetIter(args[0]);
    if (it == NULL) {
        return NULL;
    }
    Deflated cache[DEFLATED_CACHE] = {{0}};
    Encoded encoded[ENCODINGS] = {{0}};
    Py_ssize_t handed = 0;
    PyObject *sink;
    int failed = 0;
    while (!failed && (sink = PyIter_Next(it)) != NULL) {
        if (sink != skip) {
            Encoded *enc = encoded_for(sink, message, encoded);
            if (enc != NULL) {
                failed = send_to(sink, enc->frame, cache) < 0;
                enc->count += !failed;
            }
            else if (PyErr_Occurred()) {
                failed = 1;
            }
            else { /* more encodings than the table holds: as Hub._hand_each does */
                PyObject *encoding = PyObject_GetAttr(sink, s_encoding);
                PyObject *frame = encoding == NULL
                    ? NULL : PyObject_CallMethodOneArg(message, s_bytes_for, encoding);
                failed = frame == NULL || send_to(sink, frame, cache) < 0 ||
                         add_count(delivered, encoding, 1) < 0;
                Py_XDECREF(frame);
                Py_XDECREF(encoding);
            }
            handed++;
        }
        Py_DECREF(sink);
    }
    Py_DECREF(it);
    failed |= PyErr_Occurred() != NULL;
    /* Counted even after an error, as Hub._hand_each counts each as it goes. */
    PyObject *exc = failed ? PyErr_GetRaisedException() : NULL;
    for (int i = 0; i < ENCODINGS && encoded[i].encoding != NULL; i++) {
        if (add_count(delivered, encoded[i].encoding, encoded[i].count) < 0) {
            failed = 1;
            break;
        }
    }
    free_cache(cache, encoded);
    if (exc != NULL) {
        PyErr_Clear();
        PyErr_SetRaisedException(exc);
    }
    if (failed) {
        return NULL;
    }
    return PyLong_FromSsize_t(handed);
}

/* Outbox._write(conn) (1), or after an exception Outbox._failed(conn, exc) (1);
 * -1 if that raised in turn. */
static int
write_in_python(PyObject *outbox, PyObject *conn, int after_error)
{
    PyObject *res;
    if (after_error) {
        PyObject *exc = PyErr_GetRaisedException();
        if (!PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
            PyErr_SetRaisedException(exc); /* KeyboardInterrupt and the like go on */
            return -1;
        }
        res = PyObject_CallMethodObjArgs(outbox, s_failed, conn, exc, NULL);
        Py_DECREF(exc);
    }
    else {
        res = PyObject_CallMethodOneArg(outbox, s_write_conn, conn);
    }
    Py_XDECREF(res);
    return res == NULL ? -1 : 1;
}

typedef struct {
    Py_ssize_t writes, frames, bytes;
} Counts;

/* Output.flush for a connection in phase OPEN with an open transport: 1 if done
 * (counted in counts), 0 if Python must write it, -1 on error (nothing counted). */
static int
flush_open(PyObject *conn, PyObject *outbox, Counts *counts)
{
    PyObject *pending = SLOT(conn, off_pending);
    if (pending == NULL || !PyList_CheckExact(pending)) {
        return 0;
    }
    if (PyList_GET_SIZE(pending) == 0) {
        return 1; /* nothing queued: as Output.flush, nothing to do */
    }
    PyObject *transport = SLOT(conn, off_transport);
    if (SLOT(conn, off_phase) != open_phase || SLOT(conn, off_outbox) != outbox ||
        SLOT(conn, off_head) == NULL || SLOT(conn, off_backlogged) == NULL ||
        transport == NULL || transport == Py_None) {
        return 0;
    }
    Py_INCREF(transport); /* held across calls that may run Python */
    PyObject *closing = PyObject_CallMethodNoArgs(transport, s_is_closing);
    int is_closing = closing == NULL ? -1 : PyObject_IsTrue(closing);
    Py_XDECREF(closing);
    if (is_closing != 0) {
        Py_DECREF(transport);
        return is_closing < 0 ? -1 : 0; /* closing: Output.flush drops what waits */
    }
    pending = SLOT(conn, off_pending); /* is_closing() may run Python: look again */
    if (pending == NULL || !PyList_CheckExact(pending)) {
        Py_DECREF(transport);
        return 0;
    }
    PyObject *data;
    Py_ssize_t frames = PyList_GET_SIZE(pending);
    if (frames == 1 && PyBytes_CheckExact(PyList_GET_ITEM(pending, 0))) {
        data = Py_NewRef(PyList_GET_ITEM(pending, 0));
    }
    else {
        Py_ssize_t size = 0;
        for (Py_ssize_t i = 0; i < frames; i++) {
            PyObject *item = PyList_GET_ITEM(pending, i);
            if (!PyBytes_CheckExact(item)) {
                Py_DECREF(transport);
                return 0;
            }
            size += PyBytes_GET_SIZE(item);
        }
        if (frames == 0) { /* emptied meanwhile */
            Py_DECREF(transport);
            return 1;
        }
        data = PyBytes_FromStringAndSize(NULL, size);
        if (data == NULL) {
            Py_DECREF(transport);
            return -1;
        }
        char *to = PyBytes_AS_STRING(data);
        for (Py_ssize_t i = 0; i < frames; i++) {
            PyObject *item = PyList_GET_ITEM(pending, i);
            memcpy(to, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item));
            to += PyBytes_GET_SIZE(item);
        }
    }
    if (PyList_SetSlice(pending, 0, PY_SSIZE_T_MAX, NULL) < 0) { /* pending.clear() */
        Py_DECREF(data);
        Py_DECREF(transport);
        return -1;
    }
    PyObject *head = SLOT(conn, off_head);
    if (head != zero) { /* self._head = 0 */
        SLOT(conn, off_head) = Py_NewRef(zero);
        Py_XDECREF(head);
    }
    PyObject *call[2] = {transport, data};
    PyObject *res =
        PyObject_VectorcallMethod(s_write, call, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(transport);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    Py_DECREF(data);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    if (SLOT(conn, off_backlogged) == Py_True) { /* within its own bound? */
        res = PyObject_CallMethodNoArgs(conn, s_check_output_bound);
        if (res == NULL) {
            return -1;
        }
        Py_DECREF(res);
    }
    counts->writes += 1;
    counts->frames += frames;
    counts->bytes += size;
    return 1;
}

static int
add_to(PyObject *meters, PyObject *name, Py_ssize_t n)
{
    if (n == 0) {
        return 0;
    }
    PyObject *was = PyObject_GetAttr(meters, name);
    if (was == NULL) {
        return -1;
    }
    PyObject *more = PyLong_FromSsize_t(n);
    PyObject *now = more == NULL ? NULL : PyNumber_InPlaceAdd(was, more);
    Py_DECREF(was);
    Py_XDECREF(more);
    if (now == NULL) {
        return -1;
    }
    int r = PyObject_SetAttr(meters, name, now);
    Py_DECREF(now);
    return r;
}

PyDoc_STRVAR(flush_doc,
             "flush(outbox, conns, start, stop)\n\n"
             "Write each of conns[start:stop] (a list) with one write, as Outbox._write.");

static PyObject *
flush(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "flush(outbox, conns: list, start, stop)");
        return NULL;
    }
    PyObject *outbox = args[0], *conns = args[1];
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    Py_ssize_t stop = start == -1 && PyErr_Occurred() ? -1 : PyLong_AsSsize_t(args[3]);
    if (stop == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Counts counts = {0, 0, 0};
    int failed = 0;
    for (Py_ssize_t i = start; i < stop && i < PyList_GET_SIZE(conns); i++) {
        PyObject *conn = Py_NewRef(PyList_GET_ITEM(conns, i));
        int done = 0;
        if (Py_IS_TYPE(conn, conn_type)) {
            done = flush_open(conn, outbox, &counts);
        }
        if (done <= 0) {
            done = write_in_python(outbox, conn, done < 0);
        }
        Py_DECREF(conn);
        if (done < 0) {
            failed = 1;
            break;
        }
    }
    if (counts.writes) { /* counted even if a later connection raised, as in Python */
        PyObject *exc = failed ? PyErr_GetRaisedException() : NULL;
        PyObject *meters = PyObject_GetAttr(outbox, s_meters);
        int r = meters == NULL ? -1 : 0;
        if (meters != NULL && meters != Py_None) {
            r = add_to(meters, s_writes, counts.writes);
            r = r < 0 ? r : add_to(meters, s_frames_written, counts.frames);
            r = r < 0 ? r : add_to(meters, s_bytes_written, counts.bytes);
        }
        Py_XDECREF(meters);
        if (exc != NULL) {
            if (r < 0) {
                PyErr_Clear();
            }
            PyErr_SetRaisedException(exc);
        }
        failed |= r < 0;
    }
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL, setup_doc},
    {"hand", (PyCFunction)(void (*)(void))hand, METH_FASTCALL, hand_doc},
    {"hand_each", (PyCFunction)(void (*)(void))hand_each, METH_FASTCALL, hand_each_doc},
    {"flush", (PyCFunction)(void (*)(void))flush, METH_FASTCALL, flush_doc},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
#define INTERN(var, text)                                                                  \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(s_send, "send");
    INTERN(s_mark, "mark");
    INTERN(s_deflated, "deflated");
    INTERN(s_is_closing, "is_closing");
    INTERN(s_write, "write");
    INTERN(s_write_conn, "_write");
    INTERN(s_failed, "_failed");
    INTERN(s_check_output_bound, "_check_output_bound");
    INTERN(s_meters, "meters");
    INTERN(s_writes, "writes");
    INTERN(s_frames_written, "frames_written");
    INTERN(s_bytes_written, "bytes_written");
    INTERN(s_encoding, "encoding");
    INTERN(s_bytes_for, "bytes_for");
#undef INTERN
    if ((zero = PyLong_FromLong(0)) == NULL) {
        return -1;
    }
    /* speedups.INTERFACE: what pushgate.speedups expects of this module. */
    return PyModule_AddIntConstant(module, "INTERFACE", 1);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pushgate._speedups",
    .m_doc = "The per-delivery fan-out path of pushgate, compiled (see pushgate.speedups).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&module_def);
}
