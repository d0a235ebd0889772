// BufferCore / AlignedMemory (buffer-protocol exporters over raw memory) and the
// small memory helpers address_of / memcopy.
#include "accel.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

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
// BufferCore
// ---------------------------------------------------------------------------
struct BufferCore {
    uintptr_t addr = 0;
    Py_ssize_t nbytes = 0;
    Py_ssize_t exports = 0;
    bool readonly = false;
    bool released = false;
};

int core_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    // A Python subclass whose __init__ never reached BufferCore.__init__ has no
    // valid state; treat it like a released buffer.
    if (!nb::inst_ready(self)) {
        PyErr_SetString(err_released(),
                        "buffer has been released; it no longer refers to valid memory");
        view->obj = nullptr;
        return -1;
    }
    BufferCore *c = nb::inst_ptr<BufferCore>(self);
    if (c->released) {
        PyErr_SetString(err_released(),
                        "buffer has been released; it no longer refers to valid memory");
        view->obj = nullptr;
        return -1;
    }
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
    BufferCore *c = nb::inst_ptr<BufferCore>(self);
    --c->exports;
}

PyType_Slot core_slots[] = {
    {Py_bf_getbuffer, reinterpret_cast<void *>(core_getbuffer)},
    {Py_bf_releasebuffer, reinterpret_cast<void *>(core_releasebuffer)},
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
    nb::class_<BufferCore>(
        m, "BufferCore",
        "Base type a Python class subclasses (class Buffer(BufferCore): __slots__ = (...)) "
        "to export the buffer protocol over raw memory.",
        nb::type_slots(core_slots))
        .def(nb::init<>())
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
        .def_prop_ro("_core_addr", [](const BufferCore &c) { return c.addr; })
        .def_prop_ro("_core_nbytes", [](const BufferCore &c) { return c.nbytes; })
        .def_prop_ro("_core_readonly", [](const BufferCore &c) { return c.readonly; })
        .def_prop_ro("_core_released", [](const BufferCore &c) { return c.released; })
        .def_prop_ro("_core_exports", [](const BufferCore &c) { return c.exports; })
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
            "Mark the buffer released (idempotent); raises the in-use error while views exist.");

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
