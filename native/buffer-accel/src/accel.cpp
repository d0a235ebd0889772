// Module entry point for isthmus_buffer_accel.
#include "accel.h"

#ifndef ISTHMUS_ACCEL_VERSION
#define ISTHMUS_ACCEL_VERSION "0.1.0"
#endif

NB_MODULE(isthmus_buffer_accel, m) {
    m.doc() =
        "Optional native accelerator for isthmus.buffer: buffer-protocol export over raw "
        "memory, aligned allocations, and atomics/futex primitives for shared-memory rings.";
    m.attr("__version__") = ISTHMUS_ACCEL_VERSION;

    // Buffer objects routinely outlive interpreter shutdown in user programs (module
    // globals, caches); nanobind's leak report would only be noise.
    nb::set_leak_warnings(false);

    isthmus_accel::bind_buffers(m);
    isthmus_accel::bind_sync(m);
}
