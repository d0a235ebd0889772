// Shared declarations for the isthmus_buffer_accel extension module.
#pragma once

#include <nanobind/nanobind.h>

namespace nb = nanobind;

namespace isthmus_accel {

// BufferCore, AlignedMemory, register_errors, address_of, memcopy.
void bind_buffers(nb::module_ &m);

// Atomics on raw addresses, futex wait/wake, spin and ring wait/notify.
void bind_sync(nb::module_ &m);

}  // namespace isthmus_accel
