// jaxcnn's CPU pooling kernels, called from XLA as FFI custom calls (the loader, ../native/__init__.py,
// builds them into one library with conv_cpu.cc; jaxcnn/_pool_native.py calls them).
//
// Channels last, float32, 1 to 3 spatial axes (fewer are padded to 3 with size-1 axes). Output
// position i and window tap k (row-major flat index t) read the input at i·s + k·d − lo along each
// axis where that is inside it; elsewhere the padding, which max pooling skips and average pooling
// counts as zero. The maps are jaxcnn/pool.py's primitives (the arithmetic of jaxcnn/_pool.py):
//
//   max_pool:    y[n, i, c] = max over the real taps, a[n, i, c] = its tap by PyTorch's scan: the
//                first real tap starts the running max, a later one replaces it when
//                value > max or value is NaN (ties go to the first maximum; a NaN wins)
//   gather:      y[n, i, c] = v[n, i·s + a·d − lo, c] (0 where a is no real tap)
//   scatter:     dx[n, j, c] = Σ_{i : i·s + a[n, i, c]·d − lo = j} dy[n, i, c]   (gather's adjoint)
//   avg_pool:    y[n, i, c] = (Σ_{real k} x[n, i·s + k − lo, c]) / div[i]
//   avg_pool_transpose: dx[n, j, c] = Σ_{i, k : i·s + k − lo = j} dy[n, i, c] / div[i]
//
// with PyTorch's divisor per axis, start = i·s − lo: min(start + K, L + lo) − start where the
// padding counts, else the real samples min(start + K, L) − max(start, 0). The sums run over the
// taps in row-major order, as the XLA forms do. On a large input the forward maps split their
// output positions over the thread pool, the adjoints (which add into dx where windows overlap)
// the samples.
//
// The entry points check the geometry against itself and against the buffers (a bad one is an
// FFI error, which JAX raises), an argmax that names no real tap reads zero and adds nothing, and
// an allocation that fails is an FFI error too.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using jaxcnn_native::guarded;
using jaxcnn_native::parallel_chunks;
using jaxcnn_native::shape;
using jaxcnn_native::str;
using jaxcnn_native::worker_count;

namespace {

constexpr const char* kWho = "jaxcnn native pool";   // in its errors
#if defined(__AVX512F__)
constexpr int V = 16;   // floats per vector register
#else
constexpr int V = 8;
#endif
// V channels at once, or one (a block's tail): the vector comparisons give the masks `?:` takes.
typedef float Floats __attribute__((vector_size(V * 4)));
typedef int32_t Ints __attribute__((vector_size(V * 4)));
typedef float Float1 __attribute__((vector_size(4)));
typedef int32_t Int1 __attribute__((vector_size(4)));

struct Pool {
  int64_t n, c;
  int64_t in[3], out[3], k[3], s[3], d[3], lo[3];
  int64_t taps() const { return k[0] * k[1] * k[2]; }
  int64_t per_sample() const { return out[0] * out[1] * out[2]; }
  int64_t in_per_sample() const { return in[0] * in[1] * in[2]; }
  // The windows tile the input: each input sample is read by exactly one tap of one window.
  bool tiled() const {
    for (int a = 0; a < 3; ++a)
      if (s[a] != k[a] || (d[a] != 1 && k[a] != 1) || lo[a] != 0 || in[a] != out[a] * k[a]) return false;
    return true;
  }
};

// f(pos, rows, i) for every output position pos of [first, last), i its coordinates: rows[t] is the input row (sample
// and position, in units of c floats) that tap t reads, or -1 where it reads the padding. The
// position's coordinates are stepped, not divided out, and each axis's coordinate is worked out
// once per window offset of the axes before it.
template <typename F>
void for_positions(const Pool& g, int64_t first, int64_t last, F f) {
  std::vector<int64_t> rows(g.taps());
  int64_t i[3], rest = first;
  i[2] = rest % g.out[2]; rest /= g.out[2];
  i[1] = rest % g.out[1]; rest /= g.out[1];
  i[0] = rest % g.out[0]; int64_t b = rest / g.out[0];
  for (int64_t pos = first; pos < last; ++pos) {
    int64_t t = 0;
    for (int64_t k0 = 0; k0 < g.k[0]; ++k0) {
      const int64_t a0 = i[0] * g.s[0] + k0 * g.d[0] - g.lo[0];
      const bool in0 = a0 >= 0 && a0 < g.in[0];
      const int64_t row0 = (b * g.in[0] + a0) * g.in[1];
      for (int64_t k1 = 0; k1 < g.k[1]; ++k1) {
        const int64_t a1 = i[1] * g.s[1] + k1 * g.d[1] - g.lo[1];
        const bool in1 = in0 && a1 >= 0 && a1 < g.in[1];
        const int64_t row1 = (row0 + a1) * g.in[2];
        for (int64_t k2 = 0; k2 < g.k[2]; ++k2, ++t) {
          const int64_t a2 = i[2] * g.s[2] + k2 * g.d[2] - g.lo[2];
          rows[t] = in1 && a2 >= 0 && a2 < g.in[2] ? row1 + a2 : -1;
        }
      }
    }
    f(pos, static_cast<const int64_t*>(rows.data()), static_cast<const int64_t*>(i));
    if (++i[2] == g.out[2]) { i[2] = 0;
      if (++i[1] == g.out[1]) { i[1] = 0;
        if (++i[0] == g.out[0]) { i[0] = 0; ++b; } } }
  }
}

// The threads a map takes: one for an input of fewer than 2^15 floats (128 KiB), else XLA's pool.
// On a quiet machine the split halves the clips model's poolings (1.93 vs 1.09 ms a step); with
// other jobs on the cores one thread had been faster (the helpers start late), and the split
// then costs little: the caller claims the chunks no helper took (docs/lowering.md, "Pooling
// kernels").
constexpr int64_t kParallelFloats = int64_t{1} << 15;

int64_t workers(ffi::ThreadPool& pool, const Pool& g) {
  return g.n * g.in_per_sample() * g.c >= kParallelFloats ? worker_count(pool) : 1;
}

// The forward maps: output positions in chunks of about 16K floats, split over the pool.
template <typename F>
ffi::Error over_positions(ffi::ThreadPool& pool, const Pool& g, F f) {
  const int64_t m = g.n * g.per_sample(), block = std::max<int64_t>(1, (int64_t{1} << 14) / g.c);
  const int64_t chunks = (m + block - 1) / block;
  return parallel_chunks(kWho, pool, chunks, workers(pool, g), [&](int64_t chunk) {
    const int64_t first = chunk * block;
    for_positions(g, first, std::min(m, first + block), f);
  });
}

// The adjoints: whole samples per chunk (windows of one sample may overlap, samples never do),
// each sample's dx zeroed and then added into; where the windows tile the input, f writes every
// sample of dx once (`set`), and there is nothing to zero.
template <typename F>
ffi::Error over_samples(ffi::ThreadPool& pool, const Pool& g, float* dx, bool set, F f) {
  const int64_t size = g.in_per_sample() * g.c;
  const int64_t block = std::max<int64_t>(1, ((int64_t{1} << 16) + size - 1) / std::max<int64_t>(1, size));
  const int64_t chunks = (g.n + block - 1) / block;
  return parallel_chunks(kWho, pool, chunks, workers(pool, g), [&](int64_t chunk) {
    const int64_t first = chunk * block, last = std::min(g.n, first + block);
    if (!set) std::memset(dx + first * size, 0, (last - first) * size * sizeof(float));
    for_positions(g, first * g.per_sample(), last * g.per_sample(), f);
  });
}

// ---------------------------------------------------------------------------------- max

// One block of W channels from ch0 (W = V, or 1 for the tail): the running max and argmax stay
// in registers over the taps and are stored once.
template <typename F, typename I>
inline void max_block(const float* x, const int64_t* rows, int64_t taps, int64_t first, int64_t c, int64_t ch0,
                      float* best_out, int32_t* arg_out) {
  F best;
  std::memcpy(&best, x + rows[first] * c + ch0, sizeof best);
  I arg = I{} + static_cast<int32_t>(first);
  for (int64_t t = first + 1; t < taps; ++t) {
    if (rows[t] < 0) continue;
    F value;
    std::memcpy(&value, x + rows[t] * c + ch0, sizeof value);
    const I take = (value > best) | (value != value);   // a NaN wins
    best = take ? value : best;
    arg = take ? I{} + static_cast<int32_t>(t) : arg;
  }
  std::memcpy(best_out + ch0, &best, sizeof best);
  std::memcpy(arg_out + ch0, &arg, sizeof arg);
}

ffi::Error max_pool(ffi::ThreadPool& pool, const Pool& g, const float* x, float* y, int32_t* a) {
  const int64_t c = g.c, taps = g.taps();
  return over_positions(pool, g, [&](int64_t pos, const int64_t* rows, const int64_t*) {
    float* best = y + pos * c;
    int32_t* arg = a + pos * c;
    int64_t first = 0;
    while (first < taps && rows[first] < 0) ++first;
    if (first == taps) {   // a window of padding only (the front door refuses them)
      std::fill(best, best + c, -std::numeric_limits<float>::infinity());
      std::fill(arg, arg + c, -1);
      return;
    }
    int64_t ch = 0;
    for (; ch + V <= c; ch += V) max_block<Floats, Ints>(x, rows, taps, first, c, ch, best, arg);
    for (; ch < c; ++ch) max_block<Float1, Int1>(x, rows, taps, first, c, ch, best, arg);
  });
}

// into[ch0 + j] = dy where the argmax is tap t, else 0, for a block of channels (as max_block).
template <typename F, typename I>
inline void select_block(const int32_t* arg, const float* grad, int64_t t, int64_t ch0, float* into) {
  I taken;
  F value;
  std::memcpy(&taken, arg + ch0, sizeof taken);
  std::memcpy(&value, grad + ch0, sizeof value);
  const F picked = (taken == I{} + static_cast<int32_t>(t)) ? value : F{};
  std::memcpy(into + ch0, &picked, sizeof picked);
}

// The row an argmax names, or -1 where it names no tap or a tap of the padding.
inline int64_t named_row(const int64_t* rows, int64_t taps, int32_t argmax) {
  return argmax >= 0 && argmax < taps ? rows[argmax] : -1;
}

ffi::Error max_pool_gather(ffi::ThreadPool& pool, const Pool& g, const float* v, const int32_t* a, float* y) {
  const int64_t c = g.c, taps = g.taps();
  return over_positions(pool, g, [&](int64_t pos, const int64_t* rows, const int64_t*) {
    for (int64_t ch = 0; ch < c; ++ch) {
      const int64_t row = named_row(rows, taps, a[pos * c + ch]);
      y[pos * c + ch] = row < 0 ? 0.0f : v[row * c + ch];
    }
  });
}

ffi::Error max_pool_scatter(ffi::ThreadPool& pool, const Pool& g, const float* dy, const int32_t* a, float* dx) {
  const int64_t c = g.c, taps = g.taps();
  if (g.tiled())   // dx at tap t of a window: its dy where the argmax is t, else 0
    return over_samples(pool, g, dx, true, [&](int64_t pos, const int64_t* rows, const int64_t*) {
      const float* grad = dy + pos * c;
      const int32_t* arg = a + pos * c;
      for (int64_t t = 0; t < taps; ++t) {
        float* into = dx + rows[t] * c;
        int64_t ch = 0;
        for (; ch + V <= c; ch += V) select_block<Floats, Ints>(arg, grad, t, ch, into);
        for (; ch < c; ++ch) select_block<Float1, Int1>(arg, grad, t, ch, into);
      }
    });
  return over_samples(pool, g, dx, false, [&](int64_t pos, const int64_t* rows, const int64_t*) {
    for (int64_t ch = 0; ch < c; ++ch) {
      const int64_t row = named_row(rows, taps, a[pos * c + ch]);
      if (row >= 0) dx[row * c + ch] += dy[pos * c + ch];
    }
  });
}

// ---------------------------------------------------------------------------------- avg

// PyTorch's divisor of the output position at coordinates i (the module comment), a whole number.
float divisor(const Pool& g, const int64_t* i, bool count_include_pad) {
  int64_t count = 1;
  for (int a = 0; a < 3; ++a) {
    const int64_t start = i[a] * g.s[a] - g.lo[a];
    count *= count_include_pad ? std::min(start + g.k[a], g.in[a] + g.lo[a]) - start
                               : std::min(start + g.k[a], g.in[a]) - std::max<int64_t>(start, 0);
  }
  return static_cast<float>(count);
}

ffi::Error avg_pool(ffi::ThreadPool& pool, const Pool& g, const float* x, float* y, bool include_pad) {
  const int64_t c = g.c, taps = g.taps();
  return over_positions(pool, g, [&](int64_t pos, const int64_t* rows, const int64_t* i) {
    float* sum = y + pos * c;
    std::fill(sum, sum + c, 0.0f);
    for (int64_t t = 0; t < taps; ++t) {
      if (rows[t] < 0) continue;
      const float* value = x + rows[t] * c;
      for (int64_t ch = 0; ch < c; ++ch) sum[ch] += value[ch];
    }
    const float div = divisor(g, i, include_pad);
    for (int64_t ch = 0; ch < c; ++ch) sum[ch] /= div;
  });
}

ffi::Error avg_pool_transpose(ffi::ThreadPool& pool, const Pool& g, const float* dy, float* dx, bool include_pad) {
  const int64_t c = g.c, taps = g.taps();
  const bool set = g.tiled();   // each sample of dx gets one share: written, not added
  return over_samples(pool, g, dx, set, [&](int64_t pos, const int64_t* rows, const int64_t* i) {
    const float div = divisor(g, i, include_pad);
    const float* grad = dy + pos * c;
    for (int64_t t = 0; t < taps; ++t) {
      if (rows[t] < 0) continue;
      float* into = dx + rows[t] * c;
      if (set)
        for (int64_t ch = 0; ch < c; ++ch) into[ch] = grad[ch] / div;
      else
        for (int64_t ch = 0; ch < c; ++ch) into[ch] += grad[ch] / div;   // dy / div, as the XLA form
    }
  });
}

// ------------------------------------------------------------------------------------- FFI

ffi::Error invalid(const std::string& what) {
  return ffi::Error::InvalidArgument(std::string(kWho) + ": " + what);
}

// The geometry is an attribute that any caller of the custom call can set: it is checked against
// itself and against the buffers before a kernel runs, so a bad one is an FFI error, never a read
// out of bounds. `sizes` holds 6 triples (in, out, k, s, d, lo), 1-D and 2-D padded to three axes
// with leading size-1 axes; with r spatial axes the unpooled buffer (x, v or dx) is (n, *in, c)
// and the pooled ones (y, the argmax, dy) are (n, *out, c).
constexpr int64_t kMaxSize = int64_t{1} << 31;   // every size and step: no overflow in i·s + k·d − lo

ffi::Error geometry(Pool& g, ffi::Span<const int64_t> sizes, ffi::Span<const int64_t> unpooled,
                    ffi::Span<const int64_t> pooled) {
  if (sizes.size() != 18) return invalid("expected 18 sizes, got " + str(sizes.size()));
  const int64_t rank = unpooled.size(), r = rank - 2;
  if (r < 1 || r > 3) return invalid("the input has " + str(rank) + " dimensions, expected 3 to 5");
  if (int64_t(pooled.size()) != rank || pooled[0] != unpooled[0] || pooled[r + 1] != unpooled[r + 1])
    return invalid("the pooled buffer is " + shape(pooled) + ", the input " + shape(unpooled) +
                   ": expected the same rank, batch and channels");
  int64_t* fields[6] = {g.in, g.out, g.k, g.s, g.d, g.lo};
  for (int f = 0; f < 6; ++f)
    for (int a = 0; a < 3; ++a) fields[f][a] = sizes[f * 3 + a];
  g.n = unpooled[0]; g.c = unpooled[r + 1];
  for (int a = 0; a < 3; ++a) {
    const int64_t axis = a - (3 - r);   // the buffers' spatial axis, negative for a padded one
    const int64_t in = axis < 0 ? 1 : unpooled[1 + axis], out = axis < 0 ? 1 : pooled[1 + axis];
    const std::string where = "axis " + str(a) + ": ";
    if (g.in[a] != in || g.out[a] != out)
      return invalid(where + "sizes (in, out) = (" + str(g.in[a]) + ", " + str(g.out[a]) +
                     ") but the buffers' are (" + str(in) + ", " + str(out) + ")");
    if (g.k[a] < 1 || g.s[a] < 1 || g.d[a] < 1)
      return invalid(where + "window " + str(g.k[a]) + ", stride " + str(g.s[a]) + ", dilation " + str(g.d[a]) +
                     ": each must be >= 1");
    if (g.k[a] > kMaxSize || g.s[a] > kMaxSize || g.d[a] > kMaxSize || g.in[a] > kMaxSize ||
        g.out[a] > kMaxSize || g.lo[a] > kMaxSize || g.lo[a] < -kMaxSize)
      return invalid(where + "a size, window, stride, dilation or low pad beyond 2^31");
  }
  if (g.taps() > kMaxSize) return invalid("a window of " + str(g.taps()) + " taps, beyond 2^31");
  if (g.c < 1) return invalid("channels " + str(g.c) + ", expected >= 1");
  return ffi::Error::Success();
}

ffi::Error same_dims(const char* what, ffi::Span<const int64_t> dims, ffi::Span<const int64_t> pooled) {
  if (std::equal(dims.begin(), dims.end(), pooled.begin(), pooled.end())) return ffi::Error::Success();
  return invalid(std::string(what) + " is " + shape(dims) + ", expected the pooled shape " + shape(pooled));
}

using F32 = ffi::Buffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;
using Sizes = ffi::Span<const int64_t>;

ffi::Error MaxPoolImpl(ffi::ThreadPool pool, F32 x, ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::S32> a,
                       Sizes sizes) {
  Pool g;
  if (auto e = geometry(g, sizes, x.dimensions(), y->dimensions()); e.failure()) return e;
  if (auto e = same_dims("the argmax", a->dimensions(), y->dimensions()); e.failure()) return e;
  return guarded(kWho, [&] { return max_pool(pool, g, x.typed_data(), y->typed_data(), a->typed_data()); });
}

ffi::Error MaxPoolGatherImpl(ffi::ThreadPool pool, F32 v, S32 a, ffi::ResultBuffer<ffi::F32> y, Sizes sizes) {
  Pool g;
  if (auto e = geometry(g, sizes, v.dimensions(), y->dimensions()); e.failure()) return e;
  if (auto e = same_dims("the argmax", a.dimensions(), y->dimensions()); e.failure()) return e;
  return guarded(kWho, [&] { return max_pool_gather(pool, g, v.typed_data(), a.typed_data(), y->typed_data()); });
}

ffi::Error MaxPoolScatterImpl(ffi::ThreadPool pool, F32 dy, S32 a, ffi::ResultBuffer<ffi::F32> dx, Sizes sizes) {
  Pool g;
  if (auto e = geometry(g, sizes, dx->dimensions(), dy.dimensions()); e.failure()) return e;
  if (auto e = same_dims("the argmax", a.dimensions(), dy.dimensions()); e.failure()) return e;
  return guarded(kWho, [&] { return max_pool_scatter(pool, g, dy.typed_data(), a.typed_data(), dx->typed_data()); });
}

ffi::Error AvgPoolImpl(ffi::ThreadPool pool, F32 x, ffi::ResultBuffer<ffi::F32> y, Sizes sizes,
                       int64_t count_include_pad) {
  Pool g;
  if (auto e = geometry(g, sizes, x.dimensions(), y->dimensions()); e.failure()) return e;
  return guarded(kWho, [&] { return avg_pool(pool, g, x.typed_data(), y->typed_data(), count_include_pad != 0); });
}

ffi::Error AvgPoolTransposeImpl(ffi::ThreadPool pool, F32 dy, ffi::ResultBuffer<ffi::F32> dx, Sizes sizes,
                                int64_t count_include_pad) {
  Pool g;
  if (auto e = geometry(g, sizes, dx->dimensions(), dy.dimensions()); e.failure()) return e;
  return guarded(kWho, [&] {
    return avg_pool_transpose(pool, g, dy.typed_data(), dx->typed_data(), count_include_pad != 0);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnMaxPool, MaxPoolImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>().Attr<Sizes>("sizes"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnMaxPoolGather, MaxPoolGatherImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<S32>()
                                  .Ret<ffi::Buffer<ffi::F32>>().Attr<Sizes>("sizes"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnMaxPoolScatter, MaxPoolScatterImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<S32>()
                                  .Ret<ffi::Buffer<ffi::F32>>().Attr<Sizes>("sizes"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnAvgPool, AvgPoolImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<Sizes>("sizes").Attr<int64_t>("count_include_pad"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnAvgPoolTranspose, AvgPoolTransposeImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<Sizes>("sizes").Attr<int64_t>("count_include_pad"));
