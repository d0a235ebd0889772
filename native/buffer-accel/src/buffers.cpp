// BufferCore / AlignedMemory (buffer-protocol exporters over raw memory) and the
// small memory helpers address_of / memcopy.
#include "accel.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace isthmus_accel {
namespace {

using namespace nb::literals;

// ---------------------------------------------------------------------------
// Error classes used by BufferCore. Strong references, replaced by
// register_errors(); defaults until then: ValueError, BufferError, BufferError.
// ---------------------------------------------------------------------------
struct ErrorTypes {
    PyObject *released = nullptr;
    PyObject *readonly = nullptr;
    PyObject *in_use = nullptr;
};
ErrorTypes g_errors;

inline PyObject *err_released() { return g_errors.released ? g_errors.released : PyExc_ValueError; }
inline PyObject *err_readonly() { return g_errors.readonly ? g_errors.readonly : PyExc_BufferError; }
inline PyObject *err_in_use() { return g_errors.in_use ? g_errors.in_use : PyExc_BufferError; }

void register_errors(nb::handle released, nb::handle readonly, nb::handle in_use) {
    const nb::handle all[3] = {released, readonly, in_use};
    for (nb::handle h : all) {
        if (!PyExceptionClass_Check(h.ptr()))
            throw nb::type_error("register_errors() expects exception classes");
    }
    PyObject *old[3] = {g_errors.released, g_errors.readonly, g_errors.in_use};
    g_errors.released = nb::borrow(released).release().ptr();
    g_errors.readonly = nb::borrow(readonly).release().ptr();
    g_errors.in_use = nb::borrow(in_use).release().ptr();
    for (PyObject *o : old)
        Py_XDECREF(o);
}

// ---------------------------------------------------------------------------
// BufferCore: the exported memory plus the whole Buffer lifecycle.
//
// A buffer is created over [addr, addr + nbytes) and holds up to four owned references:
//   keep      what keeps the memory valid (a memoryview is release()d when we let go),
//   parent    the BufferCore this one is a slice of (its `children` counts us),
//   releaser  told `releaser._buffer_released(token)` once the buffer is released,
//   token     passed back to the releaser.
// release() refuses while slices (children) or buffer-protocol exports are alive; otherwise
// it marks the buffer released, drops keep and parent and runs the releaser callback.
// A buffer that dies unreleased does the same from tp_finalize (run by subtype_dealloc for
// Python subclasses and by the cycle collector), reporting callback errors as unraisable;
// the C++ destructor is the last resort for instances that never went through tp_finalize
// (direct BufferCore instances). The references are visited by tp_traverse and dropped by
// tp_clear, so a cycle through keep/releaser/token is collectable.
// ---------------------------------------------------------------------------
struct BufferCore;
PyTypeObject *g_core_type = nullptr;  // the BufferCore type object (immortal)
PyObject *g_str_release = nullptr;    // interned "release"
PyObject *g_str_released_cb = nullptr;  // interned "_buffer_released"
PyObject *g_zero = nullptr;            // the int 0

// nullptr stands for None in the reference fields.
inline PyObject *opt_ref(PyObject *o) { return (o == nullptr || o == Py_None) ? nullptr : Py_NewRef(o); }
inline PyObject *or_none(PyObject *o) { return Py_NewRef(o ? o : Py_None); }

struct BufferCore {
    uintptr_t addr = 0;
    Py_ssize_t nbytes = 0;
    Py_ssize_t exports = 0;
    Py_ssize_t children = 0;
    PyObject *keep = nullptr;
    PyObject *parent = nullptr;
    PyObject *releaser = nullptr;
    PyObject *token = nullptr;
    bool readonly = false;
    bool released = false;

    BufferCore(uintptr_t a, Py_ssize_t n, bool ro, PyObject *k, PyObject *r, PyObject *t)
        : addr(a), nbytes(n), keep(opt_ref(k)), releaser(opt_ref(r)), token(opt_ref(t)),
          readonly(ro) {}
    BufferCore(const BufferCore &) = delete;
    BufferCore &operator=(const BufferCore &) = delete;
    ~BufferCore();
};

inline BufferCore *core_of(PyObject *o) { return nb::inst_ptr<BufferCore>(o); }
inline bool core_ready(PyObject *o) { return nb::inst_ready(o); }

// The pending exception, taken out of the interpreter and put back later (nullptr: none).
struct SavedError {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = nullptr;
    void take() { exc = PyErr_GetRaisedException(); }
    void put_back() { PyErr_SetRaisedException(std::exchange(exc, nullptr)); }
    explicit operator bool() const { return exc != nullptr; }
#else
    PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
    void take() { PyErr_Fetch(&type, &value, &tb); }
    void put_back() {
        PyErr_Restore(type, value, tb);
        type = value = tb = nullptr;
    }
    explicit operator bool() const { return type != nullptr; }
#endif
};

// Collects the errors of one finish(): the first is kept to be raised (unless everything is
// to be reported, as in finalisation); later ones are reported as unraisable, named after
// `where` (or its attribute `attr`).
struct Errors {
    bool report_all;
    SavedError first;

    void capture(PyObject *where, PyObject *attr) {
        if (!report_all && !first) {
            first.take();
            return;
        }
        SavedError e;
        e.take();
        PyObject *named = attr ? PyObject_GetAttr(where, attr) : Py_NewRef(where);
        if (!named)
            PyErr_Clear();
        e.put_back();
        PyErr_WriteUnraisable(named);
        Py_XDECREF(named);
    }
    int done() {
        if (!first)
            return 0;
        first.put_back();
        return -1;
    }
};

// Drop keep and parent and run the releaser callback of a buffer just marked released.
// Fields are detached before any Python code runs, so re-entrant calls see a finished
// buffer. Returns -1 with the first error set (report_all: every error is reported as
// unraisable and 0 is returned). Must be called without an exception set.
int core_finish(BufferCore *c, bool report_all) {
    PyObject *keep = std::exchange(c->keep, nullptr);
    PyObject *parent = std::exchange(c->parent, nullptr);
    PyObject *releaser = std::exchange(c->releaser, nullptr);
    PyObject *token = std::exchange(c->token, nullptr);
    Errors errs{report_all, {}};
    if (keep) {
        if (PyMemoryView_Check(keep)) {
            PyObject *r = PyObject_CallMethodNoArgs(keep, g_str_release);
            if (r)
                Py_DECREF(r);
            else
                errs.capture(keep, g_str_release);
        }
        Py_DECREF(keep);
    }
    if (parent) {
        --core_of(parent)->children;
        Py_DECREF(parent);
    }
    if (releaser) {
        PyObject *args[2] = {releaser, token ? token : Py_None};
        PyObject *r = PyObject_VectorcallMethod(
            g_str_released_cb, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
        if (r)
            Py_DECREF(r);
        else
            errs.capture(releaser, g_str_released_cb);
        Py_DECREF(releaser);
    }
    Py_XDECREF(token);
    return errs.done();
}

// Release an unreleased buffer that is dying (or garbage): never raises, keeps any
// exception that was set when it was called.
void core_finish_dying(BufferCore *c) {
    SavedError pending;
    pending.take();
    c->released = true;
    core_finish(c, true);
    pending.put_back();
}

// Drop whatever references are left (a buffer released by _core_release() keeps them).
void core_drop_refs(BufferCore *c) {
    if (PyObject *parent = std::exchange(c->parent, nullptr)) {
        --core_of(parent)->children;
        Py_DECREF(parent);
    }
    Py_CLEAR(c->keep);
    Py_CLEAR(c->releaser);
    Py_CLEAR(c->token);
}

BufferCore::~BufferCore() {
    // Normally tp_finalize has already released the buffer. Exports hold a reference to us,
    // so none can be alive here.
    if (!released && exports == 0)
        core_finish_dying(this);
    if (keep || parent || releaser || token) {
        SavedError pending;
        pending.take();
        core_drop_refs(this);
        pending.put_back();
    }
}

void core_finalize(PyObject *self) {
    if (!core_ready(self))
        return;
    BufferCore *c = core_of(self);
    // Unreachable with views or slices alive unless they are garbage too: then tp_clear or
    // the destructor finishes the job once they are gone.
    if (c->released || c->exports > 0 || c->children > 0)
        return;
    core_finish_dying(c);
}

int core_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    if (!core_ready(self))
        return 0;
    BufferCore *c = core_of(self);
    Py_VISIT(c->keep);
    Py_VISIT(c->parent);
    Py_VISIT(c->releaser);
    Py_VISIT(c->token);
    return 0;
}

int core_clear(PyObject *self) {
    if (!core_ready(self))
        return 0;
    BufferCore *c = core_of(self);
    // Garbage: whatever views or slices still count against us are garbage as well.
    if (!c->released)
        core_finish_dying(c);
    core_drop_refs(c);
    return 0;
}

int core_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    // A Python subclass whose __init__ never reached BufferCore.__init__ has no
    // valid state; treat it like a released buffer.
    if (!core_ready(self) || core_of(self)->released) {
        PyErr_SetString(err_released(),
                        "buffer has been released; it no longer refers to valid memory");
        view->obj = nullptr;
        return -1;
    }
    BufferCore *c = core_of(self);
    if ((flags & PyBUF_WRITABLE) && c->readonly) {
        PyErr_SetString(err_readonly(), "buffer is read-only");
        view->obj = nullptr;
        return -1;
    }
    if (PyBuffer_FillInfo(view, self, reinterpret_cast<void *>(c->addr), c->nbytes,
                          c->readonly ? 1 : 0, flags) != 0)
        return -1;
    ++c->exports;
    return 0;
}

void core_releasebuffer(PyObject *self, Py_buffer * /*view*/) {
    BufferCore *c = core_of(self);
    --c->exports;
}

// --- release() ----------------------------------------------------------------------------
PyObject *core_release(PyObject *self, PyObject * /*unused*/) {
    if (!core_ready(self))
        Py_RETURN_NONE;  // never initialised: nothing to give back
    BufferCore *c = core_of(self);
    if (c->released)
        Py_RETURN_NONE;
    if (c->children > 0)
        return PyErr_Format(err_in_use(),
                            "cannot release: %zd slice(s) of this buffer are still alive; "
                            "release or delete them first",
                            c->children);
    if (c->exports > 0)
        return PyErr_Format(err_in_use(),
                            "cannot release: %zd view(s) of this buffer are still alive; "
                            "release or delete them first",
                            c->exports);
    c->released = true;
    if (core_finish(c, false) < 0)
        return nullptr;
    Py_RETURN_NONE;
}

// --- _make() ------------------------------------------------------------------------------
bool as_addr(PyObject *o, uintptr_t &out) {
    // unsigned long is 64 bits on the (LP64) platforms we build for, and its conversion is
    // much cheaper than PyLong_AsUnsignedLongLong's byte-array path for multi-digit ints.
    static_assert(sizeof(unsigned long) == sizeof(uintptr_t), "LP64 expected");
    unsigned long v;
    if (PyLong_Check(o)) {
        v = PyLong_AsUnsignedLong(o);
    } else {
        PyObject *i = PyNumber_Index(o);
        if (!i)
            return false;
        v = PyLong_AsUnsignedLong(i);
        Py_DECREF(i);
    }
    if (v == static_cast<unsigned long>(-1) && PyErr_Occurred())
        return false;
    out = static_cast<uintptr_t>(v);
    return true;
}

bool as_nbytes(PyObject *o, Py_ssize_t &out) {
    Py_ssize_t n = PyLong_Check(o) ? PyLong_AsSsize_t(o) : PyNumber_AsSsize_t(o, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return false;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "nbytes must be >= 0");
        return false;
    }
    out = n;
    return true;
}

constexpr const char *kMakeArgs[6] = {"addr", "nbytes", "readonly", "keep", "releaser", "token"};

PyObject *core_make(PyObject *cls, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *a[6] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
    if (nargs > 6)
        return PyErr_Format(PyExc_TypeError, "_make() takes at most 6 arguments (%zd given)",
                            nargs);
    for (Py_ssize_t i = 0; i < nargs; ++i)
        a[i] = args[i];
    if (kwnames) {
        const Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nkw; ++k) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            int idx = -1;
            for (int j = 0; j < 6; ++j) {
                if (PyUnicode_CompareWithASCIIString(key, kMakeArgs[j]) == 0) {
                    idx = j;
                    break;
                }
            }
            if (idx < 0)
                return PyErr_Format(PyExc_TypeError,
                                    "_make() got an unexpected keyword argument '%U'", key);
            if (a[idx])
                return PyErr_Format(PyExc_TypeError, "_make() got multiple values for argument '%s'",
                                    kMakeArgs[idx]);
            a[idx] = args[nargs + k];
        }
    }
    for (int j = 0; j < 3; ++j) {
        if (!a[j])
            return PyErr_Format(PyExc_TypeError, "_make() missing required argument '%s'",
                                kMakeArgs[j]);
    }
    uintptr_t addr;
    Py_ssize_t nbytes;
    if (!as_addr(a[0], addr) || !as_nbytes(a[1], nbytes))
        return nullptr;
    const int ro = PyObject_IsTrue(a[2]);
    if (ro < 0)
        return nullptr;
    PyObject *self;
    try {
        self = nb::inst_alloc(nb::handle(cls)).release().ptr();
    } catch (nb::python_error &e) {
        e.restore();
        return nullptr;
    } catch (const std::exception &e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
        return nullptr;
    }
    new (core_of(self)) BufferCore(addr, nbytes, ro != 0, a[3], a[4], a[5]);
    nb::inst_mark_ready(self);
    return self;
}

// --- read-only attributes -----------------------------------------------------------------
// An instance whose __init__ never ran reads like an empty released buffer.
template <typename F>
PyObject *core_get(PyObject *self, PyObject *dflt, F f) {
    if (!core_ready(self))
        return Py_NewRef(dflt);
    return f(core_of(self));
}

PyObject *get_addr(PyObject *self, void *) {
    return core_get(self, g_zero, [](BufferCore *c) {
        return PyLong_FromUnsignedLongLong(static_cast<unsigned long long>(c->addr));
    });
}
PyObject *get_nbytes(PyObject *self, void *) {
    return core_get(self, g_zero, [](BufferCore *c) { return PyLong_FromSsize_t(c->nbytes); });
}
PyObject *get_readonly(PyObject *self, void *) {
    return core_get(self, Py_True, [](BufferCore *c) { return PyBool_FromLong(c->readonly); });
}
PyObject *get_released(PyObject *self, void *) {
    return core_get(self, Py_True, [](BufferCore *c) { return PyBool_FromLong(c->released); });
}
PyObject *get_exports(PyObject *self, void *) {
    return core_get(self, g_zero, [](BufferCore *c) { return PyLong_FromSsize_t(c->exports); });
}
PyObject *get_children(PyObject *self, void *) {
    return core_get(self, g_zero, [](BufferCore *c) { return PyLong_FromSsize_t(c->children); });
}
PyObject *get_keep(PyObject *self, void *) {
    return core_get(self, Py_None, [](BufferCore *c) { return or_none(c->keep); });
}
PyObject *get_parent(PyObject *self, void *) {
    return core_get(self, Py_None, [](BufferCore *c) { return or_none(c->parent); });
}
PyObject *get_releaser(PyObject *self, void *) {
    return core_get(self, Py_None, [](BufferCore *c) { return or_none(c->releaser); });
}
PyObject *get_token(PyObject *self, void *) {
    return core_get(self, Py_None, [](BufferCore *c) { return or_none(c->token); });
}

PyGetSetDef core_getset[] = {
    {"_core_addr", get_addr, nullptr, "Address of the first byte.", nullptr},
    {"_core_nbytes", get_nbytes, nullptr, "Size in bytes.", nullptr},
    {"_core_readonly", get_readonly, nullptr, "True if writable exports are refused.", nullptr},
    {"_core_released", get_released, nullptr, "True once released.", nullptr},
    {"_core_exports", get_exports, nullptr,
     "Number of live buffer-protocol exports (memoryviews etc.).", nullptr},
    {"_children", get_children, nullptr, "Number of live slices made from this buffer.", nullptr},
    {"_keep", get_keep, nullptr, "What keeps the memory valid (None once released).", nullptr},
    {"_parent", get_parent, nullptr, "The buffer this one is a slice of, or None.", nullptr},
    {"_releaser", get_releaser, nullptr,
     "Object whose _buffer_released(token) runs on release, or None.", nullptr},
    {"_token", get_token, nullptr, "Token passed to the releaser.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef core_methods[] = {
    {"_make", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(core_make)),
     METH_FASTCALL | METH_KEYWORDS | METH_CLASS,
     "_make($type, /, addr, nbytes, readonly, keep=None, releaser=None, token=None)\n--\n\n"
     "Internal fast constructor: an instance of the calling class over raw memory\n"
     "[addr, addr + nbytes) kept valid by ``keep``; on release it calls\n"
     "``releaser._buffer_released(token)`` unless releaser is None."},
    {"release", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(core_release)),
     METH_NOARGS,
     "release($self, /)\n--\n\n"
     "Give the memory back to its owner; further use raises :class:`BufferReleasedError`.\n\n"
     "Raises :class:`BufferInUseError` (and changes nothing) while slices or views made from\n"
     "this buffer are alive.  Releasing twice is harmless."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot core_slots[] = {
    {Py_bf_getbuffer, reinterpret_cast<void *>(core_getbuffer)},
    {Py_bf_releasebuffer, reinterpret_cast<void *>(core_releasebuffer)},
    {Py_tp_finalize, reinterpret_cast<void *>(core_finalize)},
    {Py_tp_traverse, reinterpret_cast<void *>(core_traverse)},
    {Py_tp_clear, reinterpret_cast<void *>(core_clear)},
    {Py_tp_methods, reinterpret_cast<void *>(core_methods)},
    {Py_tp_getset, reinterpret_cast<void *>(core_getset)},
    {0, nullptr},
};

// ---------------------------------------------------------------------------
// AlignedMemory
// ---------------------------------------------------------------------------
struct AlignedMemory {
    void *ptr = nullptr;
    size_t nbytes = 0;
    size_t alignment = 0;

    AlignedMemory(int64_t n, int64_t align) {
        if (align < 8 || (align & (align - 1)) != 0)
            throw nb::value_error("alignment must be a power of two >= 8");
        if (n < 1)
            throw nb::value_error("nbytes must be >= 1");
        const uint64_t a = static_cast<uint64_t>(align);
        const uint64_t un = static_cast<uint64_t>(n);
        if (un > static_cast<uint64_t>(PY_SSIZE_T_MAX) - (a - 1))
            throw std::bad_alloc();
        const size_t rounded = static_cast<size_t>((un + a - 1) & ~(a - 1));
        void *p = std::aligned_alloc(static_cast<size_t>(a), rounded);
        if (!p)
            throw std::bad_alloc();  // -> MemoryError
        std::memset(p, 0, rounded);
        ptr = p;
        nbytes = static_cast<size_t>(un);
        alignment = static_cast<size_t>(a);
    }
    ~AlignedMemory() { std::free(ptr); }
    AlignedMemory(const AlignedMemory &) = delete;
    AlignedMemory &operator=(const AlignedMemory &) = delete;
};

int aligned_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    if (!nb::inst_ready(self)) {
        PyErr_SetString(PyExc_BufferError, "AlignedMemory is not initialized");
        view->obj = nullptr;
        return -1;
    }
    AlignedMemory *m = nb::inst_ptr<AlignedMemory>(self);
    return PyBuffer_FillInfo(view, self, m->ptr, static_cast<Py_ssize_t>(m->nbytes), 0, flags);
}

PyType_Slot aligned_slots[] = {
    {Py_bf_getbuffer, reinterpret_cast<void *>(aligned_getbuffer)},
    {0, nullptr},
};

// ---------------------------------------------------------------------------
// address_of / memcopy
// ---------------------------------------------------------------------------
nb::object address_of(nb::handle obj, bool writable) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) != 0)
        throw nb::python_error();  // TypeError / BufferError from the exporter, unchanged
    PyObject *t = PyTuple_New(3);
    PyObject *a = t ? PyLong_FromVoidPtr(view.buf) : nullptr;
    PyObject *n = a ? PyLong_FromSsize_t(view.len) : nullptr;
    const bool ro = view.readonly != 0;
    PyBuffer_Release(&view);
    if (!n) {
        Py_XDECREF(a);
        Py_XDECREF(t);
        throw nb::python_error();
    }
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, n);
    PyTuple_SET_ITEM(t, 2, Py_NewRef(ro ? Py_True : Py_False));
    return nb::steal(t);
}

constexpr size_t kMemcopyReleaseGil = 65536;

void memcopy(uintptr_t dst, uintptr_t src, size_t nbytes) {
    if (nbytes >= kMemcopyReleaseGil) {
        nb::gil_scoped_release unlocked;
        std::memcpy(reinterpret_cast<void *>(dst), reinterpret_cast<const void *>(src), nbytes);
    } else if (nbytes) {
        std::memcpy(reinterpret_cast<void *>(dst), reinterpret_cast<const void *>(src), nbytes);
    }
}

}  // namespace

void bind_buffers(nb::module_ &m) {
    g_str_release = PyUnicode_InternFromString("release");
    g_str_released_cb = PyUnicode_InternFromString("_buffer_released");
    g_zero = PyLong_FromLong(0);
    if (!g_str_release || !g_str_released_cb || !g_zero)
        throw nb::python_error();

    auto core = nb::class_<BufferCore>(
        m, "BufferCore",
        "Base type a Python class subclasses (class Buffer(BufferCore): __slots__ = ...) to "
        "export the buffer protocol over raw memory; it owns the buffer's lifecycle (release, "
        "slices, the releaser callback, finalisation).",
        nb::type_slots(core_slots));
    g_core_type = reinterpret_cast<PyTypeObject *>(core.ptr());
    core.def(
            "__init__",
            [](BufferCore *c, uintptr_t addr, Py_ssize_t nbytes, bool readonly, nb::handle keep,
               nb::handle releaser, nb::handle token) {
                if (nbytes < 0)
                    throw nb::value_error("nbytes must be >= 0");
                new (c) BufferCore(addr, nbytes, readonly, keep.ptr(), releaser.ptr(), token.ptr());
            },
            "addr"_a = 0, "nbytes"_a = 0, "readonly"_a = false, "keep"_a = nb::none(),
            "releaser"_a = nb::none(), "token"_a = nb::none(),
            "Export [addr, addr + nbytes), kept valid by keep; see _make().")
        .def(
            "_core_set",
            [](BufferCore &c, uintptr_t addr, Py_ssize_t nbytes, bool readonly) {
                if (nbytes < 0)
                    throw nb::value_error("nbytes must be >= 0");
                c.addr = addr;
                c.nbytes = nbytes;
                c.readonly = readonly;
                c.released = false;
            },
            "addr"_a, "nbytes"_a, "readonly"_a,
            "Point the exported buffer at [addr, addr + nbytes); marks it not released.")
        .def(
            "_core_release",
            [](BufferCore &c) {
                if (c.exports > 0) {
                    PyErr_Format(err_in_use(),
                                 "cannot release: %zd view(s) of this buffer are still alive; "
                                 "release or delete them first",
                                 c.exports);
                    throw nb::python_error();
                }
                c.released = true;
            },
            "Mark the buffer released (idempotent) without running release(); raises the "
            "in-use error while views exist.")
        .def(
            "_add_child",
            [](BufferCore &c, nb::handle parent) {
                if (!PyObject_TypeCheck(parent.ptr(), g_core_type) || !core_ready(parent.ptr()))
                    throw nb::type_error("_add_child() expects an initialised BufferCore");
                if (c.parent)
                    throw nb::value_error("this buffer already has a parent");
                BufferCore *p = core_of(parent.ptr());
                if (p == &c)
                    throw nb::value_error("a buffer cannot be its own slice");
                if (c.released || p->released) {
                    PyErr_SetString(err_released(),
                                    "buffer has been released; it no longer refers to valid memory");
                    throw nb::python_error();
                }
                ++p->children;
                c.parent = nb::borrow(parent).release().ptr();
            },
            "parent"_a,
            nb::sig("def _add_child(self, parent: BufferCore) -> None"),
            "Make this buffer a slice of parent: parent counts it until it is released.");

    nb::class_<AlignedMemory>(m, "AlignedMemory",
                              "Zero-filled heap memory with the requested alignment that "
                              "exports a writable buffer.",
                              nb::type_slots(aligned_slots))
        .def(nb::init<int64_t, int64_t>(), "nbytes"_a, "alignment"_a = 64)
        .def_prop_ro("address", [](const AlignedMemory &a) { return reinterpret_cast<uintptr_t>(a.ptr); })
        .def_prop_ro("nbytes", [](const AlignedMemory &a) { return a.nbytes; })
        .def_prop_ro("alignment", [](const AlignedMemory &a) { return a.alignment; });

    m.def("register_errors", &register_errors, "released"_a, "readonly"_a, "in_use"_a,
          nb::sig("def register_errors(released: type[BaseException], readonly: type[BaseException], "
                  "in_use: type[BaseException]) -> None"),
          "Register the exception classes BufferCore raises (released, read-only, in use).");
    m.def("address_of", &address_of, "obj"_a, "writable"_a = false,
          nb::sig("def address_of(obj: object, writable: bool = False) -> tuple[int, int, bool]"),
          "Return (address, nbytes, readonly) of a C-contiguous buffer-protocol object.");
    m.def("memcopy", &memcopy, "dst"_a, "src"_a, "nbytes"_a,
          "memcpy between raw addresses; releases the GIL for copies >= 64 KiB.");
}

}  // namespace isthmus_accel
