// What jaxcnn's native kernels share (conv_cpu.cc, pool_cpu.cc, norm_cpu.cc): the work split over
// XLA's intra-op thread pool, allocation failures turned into FFI errors, and the text of sizes
// in those errors. `who` names the kernel
// family in the errors ("jaxcnn native conv", "jaxcnn native pool").
#ifndef JAXCNN_NATIVE_PARALLEL_H_
#define JAXCNN_NATIVE_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace jaxcnn_native {

namespace ffi = xla::ffi;

// Work split over the thread pool: chunks claimed from an atomic counter by the caller and by
// helpers; the caller waits only for chunks a helper has claimed (and so is running), so a
// pool whose threads are all busy elsewhere cannot deadlock it: the caller then does them all.
// A helper that starts after the last chunk was claimed touches nothing but the shared counters.
// An exception in a chunk (an allocation that failed) must not leave its thread (the pool would
// terminate the process): it is caught there, the chunks not yet started are skipped, and the
// caller returns it as an FFI error once every claimed chunk is done.
enum class Failure : int { kNone, kMemory, kOther };

template <typename Body>
ffi::Error parallel_chunks(const char* who, ffi::ThreadPool& pool, int64_t chunks, int64_t workers,
                           Body body) {
  struct State { std::atomic<int64_t> next{0}, done{0}; std::atomic<Failure> failure{Failure::kNone}; };
  auto state = std::make_shared<State>();
  auto work = [state, chunks, body]() {
    int64_t mine;
    while ((mine = state->next.fetch_add(1)) < chunks) {
      if (state->failure.load() == Failure::kNone) {
        try {
          body(mine);
        } catch (const std::bad_alloc&) {
          state->failure.store(Failure::kMemory);
        } catch (...) {
          state->failure.store(Failure::kOther);
        }
      }
      state->done.fetch_add(1);
    }
  };
  int64_t helpers = std::min<int64_t>(workers - 1, chunks - 1);
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([work]() { work(); });
  work();
  while (state->done.load() < chunks) std::this_thread::yield();
  switch (state->failure.load()) {
    case Failure::kNone: return ffi::Error::Success();
    case Failure::kMemory:
      return ffi::Error(ffi::ErrorCode::kResourceExhausted, std::string(who) + ": out of memory in a kernel thread");
    default: return ffi::Error::Internal(std::string(who) + ": a worker failed");
  }
}

inline int64_t worker_count(ffi::ThreadPool& pool) {
  return std::max<int64_t>(1, pool.num_threads());
}

// The kernels allocate (row tables, partial sums, tap tables); a failure in the calling thread is
// caught here, one in a worker by parallel_chunks.
template <typename Kernel>
ffi::Error guarded(const char* who, Kernel kernel) {
  try {
    return kernel();
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, std::string(who) + ": out of memory");
  }
}

inline std::string str(int64_t value) { return std::to_string(value); }

// A buffer's dimensions as "(2, 3, 8)".
inline std::string shape(ffi::Span<const int64_t> dims) {
  std::string text = "(";
  for (size_t a = 0; a < dims.size(); ++a) text += (a ? ", " : "") + str(dims[a]);
  return text + ")";
}

}  // namespace jaxcnn_native

#endif  // JAXCNN_NATIVE_PARALLEL_H_
