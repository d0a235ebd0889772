// Atomics on raw (shared-memory) addresses, futex wait/wake and the ring wait/notify
// helpers. The futex word lives in a MAP_SHARED mapping used by two processes, so the
// non-private FUTEX_WAIT / FUTEX_WAKE operations are used throughout.
#include "accel.h"

#include <nanobind/stl/optional.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <optional>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace isthmus_accel {
namespace {

using namespace nb::literals;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Primitive helpers
// ---------------------------------------------------------------------------
inline uint64_t *p64(uintptr_t a) { return reinterpret_cast<uint64_t *>(a); }
inline uint32_t *p32(uintptr_t a) { return reinterpret_cast<uint32_t *>(a); }

inline uint64_t ld64(uintptr_t a) {
    return std::atomic_ref<uint64_t>(*p64(a)).load(std::memory_order_acquire);
}
inline uint32_t ld32(uintptr_t a) {
    return std::atomic_ref<uint32_t>(*p32(a)).load(std::memory_order_acquire);
}
inline void st32(uintptr_t a, uint32_t v) {
    std::atomic_ref<uint32_t>(*p32(a)).store(v, std::memory_order_release);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__) || defined(__arm__)
    asm volatile("yield" ::: "memory");
#else
    std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

// Shared (non-private) futex ops. Return the raw syscall result; errno on -1.
inline long sys_futex_wait(uintptr_t addr, uint32_t expected, const struct timespec *rel) {
    return syscall(SYS_futex, p32(addr), FUTEX_WAIT, expected, rel, nullptr, 0);
}
inline long sys_futex_wake(uintptr_t addr, int n) {
    return syscall(SYS_futex, p32(addr), FUTEX_WAKE, n, nullptr, nullptr, 0);
}

// Timeouts beyond this are treated as "no limit" (also avoids time_t overflow).
constexpr double kMaxTimeout = 1e9;

struct timespec to_timespec(std::chrono::nanoseconds d) {
    const int64_t ns = d.count() < 0 ? 0 : static_cast<int64_t>(d.count());
    struct timespec ts;
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    return ts;
}

// Busy-wait while *addr == value, for at most max_ns (clock checked every 64 spins).
// Returns the last value read. Does not touch the GIL.
uint64_t spin_u64(uintptr_t addr, uint64_t value, int64_t max_ns) {
    uint64_t v = ld64(addr);
    if (v != value || max_ns <= 0)
        return v;
    const Clock::time_point deadline = Clock::now() + std::chrono::nanoseconds(max_ns);
    for (;;) {
        for (int i = 0; i < 64; ++i) {
            cpu_relax();
            v = ld64(addr);
            if (v != value)
                return v;
        }
        if (Clock::now() >= deadline)
            return v;
    }
}

[[noreturn]] void raise_errno(int err) {
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    throw nb::python_error();
}

// ---------------------------------------------------------------------------
// Python-visible functions
// ---------------------------------------------------------------------------
uint64_t load_u64(uintptr_t addr) { return ld64(addr); }

void store_u64(uintptr_t addr, uint64_t value) {
    std::atomic_ref<uint64_t>(*p64(addr)).store(value, std::memory_order_release);
}

uint32_t load_u32(uintptr_t addr) { return ld32(addr); }

void store_u32(uintptr_t addr, uint32_t value) { st32(addr, value); }

uint32_t fetch_add_u32(uintptr_t addr, int64_t delta) {
    // Any delta is reduced mod 2**32, so negative deltas subtract.
    return std::atomic_ref<uint32_t>(*p32(addr))
        .fetch_add(static_cast<uint32_t>(static_cast<uint64_t>(delta)), std::memory_order_seq_cst);
}

uint32_t exchange_u32(uintptr_t addr, uint32_t value) {
    return std::atomic_ref<uint32_t>(*p32(addr)).exchange(value, std::memory_order_seq_cst);
}

void fence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

int futex_wait(uintptr_t addr, uint32_t expected, std::optional<double> timeout) {
    struct timespec ts;
    const struct timespec *rel = nullptr;
    if (timeout) {
        double t = *timeout;
        if (!(t > 0.0))
            t = 0.0;  // also maps NaN to 0
        if (t < kMaxTimeout) {
            ts = to_timespec(std::chrono::nanoseconds(static_cast<int64_t>(t * 1e9)));
            rel = &ts;
        }
    }
    long rc;
    int err;
    {
        nb::gil_scoped_release unlocked;
        rc = sys_futex_wait(addr, expected, rel);
        err = errno;
    }
    if (rc == 0)
        return 0;
    switch (err) {
        case ETIMEDOUT:
            return 1;
        case EAGAIN:
            return 2;
        case EINTR:
            if (PyErr_CheckSignals() != 0)
                throw nb::python_error();
            return 3;
        default:
            raise_errno(err);
    }
}

int futex_wake(uintptr_t addr, int n) {
    const long rc = sys_futex_wake(addr, n);
    if (rc < 0)
        raise_errno(errno);
    return static_cast<int>(rc);
}

uint64_t spin_while_equal_u64(uintptr_t addr, uint64_t value, int64_t max_ns) {
    if (max_ns > 2000) {
        nb::gil_scoped_release unlocked;
        return spin_u64(addr, value, max_ns);
    }
    return spin_u64(addr, value, max_ns);
}

enum class WaitStatus { changed, timed_out, interrupted, error };

struct WaitResult {
    WaitStatus status;
    uint64_t value;
    int err;
};

// Futex phase of ring_wait_u64; called with the GIL released.
WaitResult ring_futex_loop(uintptr_t addr, uint64_t value, uintptr_t seq_addr,
                           uintptr_t waiting_addr, bool has_deadline, Clock::time_point deadline) {
    for (;;) {
        struct timespec ts;
        const struct timespec *rel = nullptr;
        if (has_deadline) {
            const Clock::time_point now = Clock::now();
            if (now >= deadline)
                return {WaitStatus::timed_out, value, 0};
            ts = to_timespec(std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now));
            rel = &ts;
        }

        const uint32_t seq = ld32(seq_addr);
        st32(waiting_addr, 1);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        uint64_t v = ld64(addr);
        if (v != value) {
            st32(waiting_addr, 0);
            return {WaitStatus::changed, v, 0};
        }

        const long rc = sys_futex_wait(seq_addr, seq, rel);
        const int err = rc == 0 ? 0 : errno;
        st32(waiting_addr, 0);

        v = ld64(addr);
        if (v != value)
            return {WaitStatus::changed, v, 0};
        if (rc != 0 && err != ETIMEDOUT && err != EAGAIN) {
            if (err == EINTR)
                return {WaitStatus::interrupted, value, err};
            return {WaitStatus::error, value, err};
        }
        // The doorbell rang but the word did not move: a notification such as the peer closing.
        // Return (value unchanged) so the caller looks at the peer's state now, not a slice later.
        if (ld32(seq_addr) != seq)
            return {WaitStatus::changed, value, 0};
        // Woken spuriously or timed out: re-evaluate.
    }
}

uint64_t ring_wait_u64(uintptr_t addr, uint64_t value, uintptr_t seq_addr, uintptr_t waiting_addr,
                       int64_t spin_ns, std::optional<double> timeout) {
    // Fast path: already changed, no GIL round trip.
    const uint64_t first = ld64(addr);
    if (first != value)
        return first;

    const Clock::time_point start = Clock::now();
    bool has_deadline = false;
    Clock::time_point deadline{};
    if (timeout) {
        double t = *timeout;
        if (!(t > 0.0))
            t = 0.0;
        if (t < kMaxTimeout) {
            has_deadline = true;
            const auto ns = static_cast<int64_t>(t * 1e9);
            deadline = start + std::chrono::nanoseconds(ns);
            if (spin_ns > ns)
                spin_ns = ns;  // never spin past the timeout
        }
    }

    WaitResult r;
    {
        nb::gil_scoped_release unlocked;
        const uint64_t v = spin_u64(addr, value, spin_ns);
        if (v != value)
            return v;
        r = ring_futex_loop(addr, value, seq_addr, waiting_addr, has_deadline, deadline);
    }
    for (;;) {
        switch (r.status) {
            case WaitStatus::changed:
            case WaitStatus::timed_out:
                return r.value;
            case WaitStatus::error:
                raise_errno(r.err);
            case WaitStatus::interrupted:
                if (PyErr_CheckSignals() != 0)
                    throw nb::python_error();  // e.g. KeyboardInterrupt
                break;
        }
        nb::gil_scoped_release unlocked;
        r = ring_futex_loop(addr, value, seq_addr, waiting_addr, has_deadline, deadline);
    }
}

bool ring_notify(uintptr_t seq_addr, uintptr_t waiting_addr) {
    std::atomic_ref<uint32_t>(*p32(seq_addr)).fetch_add(1, std::memory_order_seq_cst);
    if (std::atomic_ref<uint32_t>(*p32(waiting_addr)).load(std::memory_order_seq_cst) != 0) {
        if (sys_futex_wake(seq_addr, INT_MAX) < 0)
            raise_errno(errno);
        return true;
    }
    return false;
}

// One call for the producer's commit: the record's length, then head (release, so the consumer
// that sees head also sees the record), then the doorbell.
bool ring_publish(uintptr_t len_addr, uint64_t nbytes, uintptr_t head_addr, uint64_t head,
                  uintptr_t seq_addr, uintptr_t waiting_addr) {
    std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t *>(len_addr))
        .store(nbytes, std::memory_order_release);
    std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t *>(head_addr))
        .store(head, std::memory_order_release);
    return ring_notify(seq_addr, waiting_addr);
}

}  // namespace

void bind_sync(nb::module_ &m) {
    m.def("load_u64", &load_u64, "addr"_a, "Atomic 64-bit load (acquire).");
    m.def("store_u64", &store_u64, "addr"_a, "value"_a, "Atomic 64-bit store (release).");
    m.def("load_u32", &load_u32, "addr"_a, "Atomic 32-bit load (acquire).");
    m.def("store_u32", &store_u32, "addr"_a, "value"_a, "Atomic 32-bit store (release).");
    m.def("fetch_add_u32", &fetch_add_u32, "addr"_a, "delta"_a,
          "Atomic 32-bit fetch-add (seq_cst, wraps mod 2**32); returns the old value.");
    m.def("exchange_u32", &exchange_u32, "addr"_a, "value"_a,
          "Atomic 32-bit exchange (seq_cst); returns the old value.");
    m.def("fence", &fence, "Sequentially consistent thread fence.");
    m.def("futex_wait", &futex_wait, "addr"_a, "expected"_a, "timeout"_a.none() = nb::none(),
          "Shared FUTEX_WAIT. Returns 0 woken, 1 timed out, 2 value mismatch, 3 interrupted.");
    m.def("futex_wake", &futex_wake, "addr"_a, "n"_a = 1,
          "Shared FUTEX_WAKE; returns the number of waiters woken.");
    m.def("spin_while_equal_u64", &spin_while_equal_u64, "addr"_a, "value"_a, "max_ns"_a,
          "Busy-wait while *addr == value for at most max_ns; returns the last value read.");
    m.def("ring_wait_u64", &ring_wait_u64, "addr"_a, "value"_a, "seq_addr"_a, "waiting_addr"_a,
          "spin_ns"_a, "timeout"_a.none(),
          "Spin, then futex-wait on seq_addr until *addr != value or the timeout expires; "
          "returns the new value, or value unchanged on timeout or when seq_addr moved without it.");
    m.def("ring_notify", &ring_notify, "seq_addr"_a, "waiting_addr"_a,
          "Bump seq_addr and wake its waiters if waiting_addr is set; returns whether it woke.");
    m.def("ring_publish", &ring_publish, "len_addr"_a, "nbytes"_a, "head_addr"_a, "head"_a,
          "seq_addr"_a, "waiting_addr"_a,
          "Store the record length, then head (release), then ring_notify(seq_addr, "
          "waiting_addr); returns whether it woke a sleeper.");
}

}  // namespace isthmus_accel
