// jaxcnn's CPU convolution kernels, called from XLA as FFI custom calls (the loader beside this
// file, jaxcnn/_conv/native/__init__.py, builds, loads and calls them).
//
// Channels last, one group, float32, 1 to 3 spatial axes (fewer are padded to 3 with size-1
// axes). The geometry is lax.conv_general_dilated's: an output position i and a kernel tap k
// read the input at (i·s + k·d − lo) / ld along each axis, where that is a whole number inside
// the input (ld, the input dilation, as in a transposed convolution; the loader
// passes 1); elsewhere the padding's zeros. Two kernels:
//
//   conv:        y[n, i, o]  = Σ_{k, c} x[n, at(i, k), c] · w[k, c, o]
//   weight_grad: dw[k, c, o] = Σ_{n, i} x[n, at(i, k), c] · dy[n, i, o]
//
// The input gradient is `conv` of dy with the kernel flipped and its channels swapped, as in
// lax (the loader's native_input_grad). Both kernels first turn a block of output positions into a table of
// row pointers, one per (tap, position): the input's channel row, or a row of zeros where the
// tap reads the padding, so the inner loops are branch-free multiply-adds on registers
// (the products of a block of P positions by OB vectors of output channels).
//
// The entry points check the geometry against itself and against the buffers (a bad one is an
// FFI error, which JAX raises), and an allocation that fails, in any thread, is an FFI error too.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using jaxcnn_native::guarded;
using jaxcnn_native::parallel_chunks;
using jaxcnn_native::str;
using jaxcnn_native::worker_count;

#if defined(__AVX512F__)
constexpr int V = 16;        // floats per vector register
constexpr int REGS = 24;     // accumulators a block keeps in registers (of 32)
#else
constexpr int V = 8;
constexpr int REGS = 12;     // of 16
#endif
typedef float vec __attribute__((vector_size(V * 4)));

namespace {

constexpr const char* kWho = "jaxcnn native conv";   // in its errors

// Vectors move in and out of the float buffers by memcpy, which compiles to one unaligned
// vector move: a load through a cast `vec*` would read floats as another type, which strict
// aliasing (exploited at -O3) does not allow.
inline vec load(const float* p) { vec v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, vec v) { std::memcpy(p, &v, sizeof v); }

struct Geometry {
  int64_t n, c, o;
  int64_t in[3], out[3], k[3], s[3], d[3], lo[3], ld[3];
  int64_t taps() const { return k[0] * k[1] * k[2]; }
  int64_t positions() const { return n * out[0] * out[1] * out[2]; }
};

// The input index that output index i and kernel offset k read along axis a, or -1 where that
// is the padding (or, with an input dilation, a hole between the input's samples).
inline int64_t input_index(const Geometry& g, int a, int64_t i, int64_t k) {
  int64_t at = i * g.s[a] + k * g.d[a] - g.lo[a];
  if (g.ld[a] == 1) return at >= 0 && at < g.in[a] ? at : -1;
  return at >= 0 && at % g.ld[a] == 0 && at / g.ld[a] < g.in[a] ? at / g.ld[a] : -1;
}

// table[t * stride + p]: the input row tap t reads for output position first + p (p < count),
// or zeros; the entries from count to stride are zeros too (a block's missing positions). The
// positions are taken a segment at a time (a run along the last axis, at fixed sample and
// leading indices), each tap along the whole segment: its first two axes' indices are fixed
// there, and along the last axis its row moves by a fixed step, so the inner loop is a
// branch-free select per position (a table built position by position, with a division by the
// input dilation per tap, cost as much as a third of the products of a 32-channel layer).
void row_table(const Geometry& g, const float* x, const float* zeros, int64_t first, int64_t count,
               int64_t stride, const float** table) {
  int64_t i[3], rest = first;
  i[2] = rest % g.out[2]; rest /= g.out[2];
  i[1] = rest % g.out[1]; rest /= g.out[1];
  i[0] = rest % g.out[0]; int64_t b = rest / g.out[0];
  const int64_t row = g.in[2] * g.c;
  for (int64_t p = 0; p < count;) {
    const int64_t len = std::min(count - p, g.out[2] - i[2]);
    const float* sample = x + b * g.in[0] * g.in[1] * row;
    int64_t t = 0;
    for (int64_t k0 = 0; k0 < g.k[0]; ++k0) {
      const int64_t a0 = input_index(g, 0, i[0], k0);
      for (int64_t k1 = 0; k1 < g.k[1]; ++k1) {
        const int64_t a1 = a0 < 0 ? -1 : input_index(g, 1, i[1], k1);
        for (int64_t k2 = 0; k2 < g.k[2]; ++k2, ++t) {
          const float** rows = table + t * stride + p;
          if (a1 < 0) {
            std::fill(rows, rows + len, zeros);
          } else if (g.ld[2] == 1) {
            const float* line = sample + (a0 * g.in[1] + a1) * row;
            const int64_t at = i[2] * g.s[2] + k2 * g.d[2] - g.lo[2];
            for (int64_t q = 0; q < len; ++q) {
              const int64_t a2 = at + q * g.s[2];
              rows[q] = a2 >= 0 && a2 < g.in[2] ? line + a2 * g.c : zeros;
            }
          } else {
            const float* line = sample + (a0 * g.in[1] + a1) * row;
            for (int64_t q = 0; q < len; ++q) {
              const int64_t a2 = input_index(g, 2, i[2] + q, k2);
              rows[q] = a2 < 0 ? zeros : line + a2 * g.c;
            }
          }
        }
      }
    }
    p += len;
    i[2] = 0;
    if (++i[1] == g.out[1]) { i[1] = 0;
      if (++i[0] == g.out[0]) { i[0] = 0; ++b; } }
  }
  for (int64_t t = 0; t < g.taps(); ++t) std::fill(table + t * stride + count, table + (t + 1) * stride, zeros);
}

// f(std::integral_constant<int, OB>{}, v) for each run of OB ≤ 4 vectors of output channels
// starting at vector v: the register blocks are compiled for each OB.
template <typename F>
void for_vector_runs(int64_t vectors, F f) {
  for (int64_t v = 0; v < vectors;) {
    switch (std::min<int64_t>(4, vectors - v)) {
      case 1: f(std::integral_constant<int, 1>{}, v); v += 1; break;
      case 2: f(std::integral_constant<int, 2>{}, v); v += 2; break;
      case 3: f(std::integral_constant<int, 3>{}, v); v += 3; break;
      default: f(std::integral_constant<int, 4>{}, v); v += 4; break;
    }
  }
}

// ------------------------------------------------------------------------------------ conv

// A block keeps P positions × OB vectors of output channels in registers. With one vector
// (16 output channels: the clips model's input gradient) the weights of CB input channels sit
// beside them, each row pointer read once per CB channels: 5.2 vs 9.2 ms for one pointer read
// per channel; with more vectors the pointer's cost is shared already and CB > 1 was slower.
constexpr int P1 = REGS * 2 / 3, CB1 = 8;
template <int OB> constexpr int positions_per_block() { return OB == 1 ? P1 : REGS / OB; }

template <int P, int OB, int CB>
void conv_block(const float* const* table, int64_t stride, int64_t taps, int64_t c, const float* w,
                int64_t o, int64_t o0, float* y, int64_t count) {
  vec acc[P][OB] = {};
  for (int64_t t = 0; t < taps; ++t) {
    const float* const* rows = table + t * stride;
    const float* wt = w + t * c * o + o0;
    for (int64_t c0 = 0; c0 < c; c0 += CB) {
      vec wv[CB][OB];
      for (int j = 0; j < CB; ++j)
        for (int b = 0; b < OB; ++b) wv[j][b] = load(wt + (c0 + j) * o + b * V);
#pragma GCC unroll 32   // P accumulators in registers: left rolled, one block of 16 kept them in memory
      for (int p = 0; p < P; ++p) {
        const float* r = rows[p] + c0;
        for (int j = 0; j < CB; ++j) {
          float xv = r[j];
          for (int b = 0; b < OB; ++b) acc[p][b] += xv * wv[j][b];
        }
      }
    }
  }
  for (int64_t p = 0; p < count; ++p)
    for (int b = 0; b < OB; ++b) store(y + p * o + o0 + b * V, acc[p][b]);
}

// The blocks of one chunk: `table` holds `stride` entries per tap, the positions past `count`
// rows of zeros, so a last block short of P positions reads zeros and stores only its own.
template <int OB, int CB>
void conv_range(const Geometry& g, const float* const* table, int64_t stride, int64_t count, const float* w,
                float* y, int64_t o0) {
  constexpr int P = positions_per_block<OB>();
  for (int64_t m = 0; m < count; m += P)
    conv_block<P, OB, CB>(table + m, stride, g.taps(), g.c, w, g.o, o0, y + m * g.o,
                          std::min<int64_t>(P, count - m));
}

// The largest of 8, 4, 2, 1 that divides the channels and leaves room in the registers.
int channel_block(int64_t c, int64_t limit) {
  for (int cb = 8; cb > 1; cb /= 2)
    if (c % cb == 0 && cb <= limit) return cb;
  return 1;
}

template <int OB>
void conv_range_any(const Geometry& g, const float* const* table, int64_t stride, int64_t count,
                    const float* w, float* y, int64_t o0) {
  constexpr int regs = V == 16 ? 30 : 14, P = positions_per_block<OB>();
  switch (OB > 1 ? 1 : channel_block(g.c, std::min(CB1, (regs - P * OB) / OB))) {
    case 8: return conv_range<OB, 8>(g, table, stride, count, w, y, o0);
    case 4: return conv_range<OB, 4>(g, table, stride, count, w, y, o0);
    case 2: return conv_range<OB, 2>(g, table, stride, count, w, y, o0);
    default: return conv_range<OB, 1>(g, table, stride, count, w, y, o0);
  }
}

// One row table per chunk of positions, shared by every run of output vectors (it was built
// once per run).
ffi::Error conv(ffi::ThreadPool& pool, const Geometry& g, const float* x, const float* w, float* y) {
  std::vector<float> zeros(g.c, 0.0f);
  const int64_t m = g.positions(), vectors = g.o / V;
  // 240 positions a chunk: whole blocks of every P (16, 12, 8, 6; 8, 6, 4, 3 without AVX-512)
  const int64_t block = 240, chunks = (m + block - 1) / block;
  return parallel_chunks(kWho, pool, chunks, worker_count(pool), [&](int64_t chunk) {
    int64_t first = chunk * block, count = std::min(m, first + block) - first;
    std::vector<const float*> table(block * g.taps());
    row_table(g, x, zeros.data(), first, count, block, table.data());
    for_vector_runs(vectors, [&](auto ob, int64_t v) {
      conv_range_any<decltype(ob)::value>(g, table.data(), block, count, w, y + first * g.o, v * V);
    });
  });
}

// ------------------------------------------------------------------------------ weight grad

// dw[t, c0 + j, o0 + ...] += Σ_p rows[p][c0 + j] · dy[p, o0 + ...] for CB consecutive channels
// j of one tap t, whose rows are `rows`: per position one row pointer, CB broadcasts and OB
// vectors of dy feed CB × OB multiply-adds (a row pointer per channel, as blocks of rows of
// any taps had it, made the loads outnumber the products).
template <int CB, int OB>
void weight_grad_block(const float* const* rows, int64_t count, int64_t c0, const float* dy, int64_t o,
                       int64_t o0, float* dw) {
  vec acc[CB][OB] = {};
#pragma GCC unroll 4   // 0.8 of the time rolled (the clips 16 -> 32 layer), the same sums
  for (int64_t p = 0; p < count; ++p) {
    vec dv[OB];
    for (int b = 0; b < OB; ++b) dv[b] = load(dy + p * o + o0 + b * V);
    const float* r = rows[p] + c0;
    for (int j = 0; j < CB; ++j) {
      float xv = r[j];
      for (int b = 0; b < OB; ++b) acc[j][b] += xv * dv[b];
    }
  }
  for (int j = 0; j < CB; ++j)
    for (int b = 0; b < OB; ++b) {
      float* at = dw + (c0 + j) * o + o0 + b * V;
      store(at, load(at) + acc[j][b]);
    }
}

// Each tap's channels in blocks of REGS / OB (as many accumulators as the registers hold), the
// last ones in blocks of 8, 4, 2, 1.
template <int OB>
void weight_grad_range(const Geometry& g, const float** table, int64_t count, const float* dy,
                       float* dw, int64_t o0) {
  constexpr int CB = REGS / OB;
  for (int64_t t = 0; t < g.taps(); ++t) {
    const float* const* rows = table + t * count;
    float* dwt = dw + t * g.c * g.o;
    int64_t c0 = 0;
    for (; c0 + CB <= g.c; c0 += CB) weight_grad_block<CB, OB>(rows, count, c0, dy, g.o, o0, dwt);
    for (; c0 + 8 <= g.c; c0 += 8) weight_grad_block<8, OB>(rows, count, c0, dy, g.o, o0, dwt);
    for (; c0 + 4 <= g.c; c0 += 4) weight_grad_block<4, OB>(rows, count, c0, dy, g.o, o0, dwt);
    for (; c0 + 2 <= g.c; c0 += 2) weight_grad_block<2, OB>(rows, count, c0, dy, g.o, o0, dwt);
    for (; c0 < g.c; ++c0) weight_grad_block<1, OB>(rows, count, c0, dy, g.o, o0, dwt);
  }
}

// ------------------------------------------------------------------- thin weight grad

// Fewer than kThin input channels (the clips model's first layer): a row table costs as much as
// the products. Per segment (the last axis at fixed sample and leading indices) its K0·K1 input
// lines are copied, padded, and TB (tap, channel) pairs sum, pair j reading q·s past its offset.
constexpr int64_t kThin = 8;

template <int TB, int OB>
void thin_block(const float* const* at, int64_t step, int64_t count, const float* dy, int64_t o,
                int64_t o0, float* const* into) {
  vec acc[TB][OB] = {};
  for (int64_t q = 0; q < count; ++q) {
    vec dv[OB];
    for (int b = 0; b < OB; ++b) dv[b] = load(dy + q * o + o0 + b * V);
    for (int j = 0; j < TB; ++j) {
      float xv = at[j][q * step];
      for (int b = 0; b < OB; ++b) acc[j][b] += xv * dv[b];
    }
  }
  for (int j = 0; j < TB; ++j)
    for (int b = 0; b < OB; ++b) store(into[j] + o0 + b * V, load(into[j] + o0 + b * V) + acc[j][b]);
}

template <int OB>   // the pairs in blocks of 8, the rest in blocks of 4, 3 and 1
void thin_pairs(const float* const* at, float* const* into, int64_t pairs, int64_t step, int64_t count,
                const float* dy, int64_t o, int64_t o0) {
  int64_t j = 0;
  for (; j + 8 <= pairs; j += 8) thin_block<8, OB>(at + j, step, count, dy, o, o0, into + j);
  for (; j + 4 <= pairs; j += 4) thin_block<4, OB>(at + j, step, count, dy, o, o0, into + j);
  for (; j + 3 <= pairs; j += 3) thin_block<3, OB>(at + j, step, count, dy, o, o0, into + j);
  for (; j < pairs; ++j) thin_block<1, OB>(at + j, step, count, dy, o, o0, into + j);
}

// A thread's K0·K1 padded lines (the padding stays zero; line sample first + m·ld, m < count, is
// input sample a2 + m), where each pair reads them and the partial's row it adds to (`into`).
struct Thin {
  int64_t span, first, a2, count;
  std::vector<float> lines; std::vector<const float*> at; std::vector<float*> into;
  Thin(const Geometry& g, float* partial) {
    const int64_t ld = g.ld[2], lo = g.lo[2];   // j = i·s + k·d below
    span = std::max<int64_t>(0, (g.out[2] - 1) * g.s[2] + (g.k[2] - 1) * g.d[2] + 1);
    a2 = lo >= 0 ? 0 : (ld - 1 - lo) / ld;
    count = span - 1 - lo < 0 ? 0 : std::max<int64_t>(0, std::min(g.in[2] - 1, (span - 1 - lo) / ld) - a2 + 1);
    first = a2 * ld + lo;
    lines.assign(g.k[0] * g.k[1] * span * g.c, 0.0f);
    for (int64_t r = 0; r < g.taps() * g.c; ++r) {   // pair r: tap r / c, channel r % c
      at.push_back(lines.data() + (r / g.c / g.k[2] * span + r / g.c % g.k[2] * g.d[2]) * g.c + r % g.c);
      into.push_back(partial + r * g.o);
    }
  }

  // One segment (sample b, leading indices i0, i1): its lines, then every pair over its positions.
  void segment(const Geometry& g, const float* x, const float* dy, int64_t b, int64_t i0, int64_t i1) {
    for (int64_t k0 = 0, line = 0; k0 < g.k[0]; ++k0)
      for (int64_t k1 = 0; k1 < g.k[1]; ++k1, ++line) {
        const int64_t a0 = input_index(g, 0, i0, k0), a1 = a0 < 0 ? -1 : input_index(g, 1, i1, k1);
        const float* row = a1 < 0 ? nullptr : x + (((b * g.in[0] + a0) * g.in[1] + a1) * g.in[2] + a2) * g.c;
        float* to = lines.data() + (line * span + first) * g.c;
        if (g.ld[2] == 1 && row) std::memcpy(to, row, count * g.c * sizeof(float));   // one run
        else if (g.ld[2] == 1) std::fill(to, to + count * g.c, 0.0f);
        else for (int64_t m = 0; m < count; ++m)
          for (int64_t c = 0; c < g.c; ++c) to[m * g.ld[2] * g.c + c] = row ? row[m * g.c + c] : 0.0f;
      }
    const float* dys = dy + ((b * g.out[0] + i0) * g.out[1] + i1) * g.out[2] * g.o;
    for_vector_runs(g.o / V, [&](auto ob, int64_t v) {
      thin_pairs<decltype(ob)::value>(at.data(), into.data(), g.taps() * g.c, g.s[2] * g.c, g.out[2], dys, g.o, v * V);
    });
  }
};

// The positions are cut into `groups` fixed ranges, each summed into a partial gradient of its
// own in position order, and the partials are added in group order: whichever thread runs a
// range, the sums are the same, so the result is the same bit for bit on every call.
ffi::Error weight_grad(ffi::ThreadPool& pool, const Geometry& g, const float* x, const float* dy, float* dw) {
  std::vector<float> zeros(g.c, 0.0f);
  const int64_t m = g.positions(), vectors = g.o / V, size = g.taps() * g.c * g.o;
  const bool thin = g.c < kThin;   // thin: ranges of segments, not of positions
  const int64_t block = 128, chunks = thin ? m / std::max<int64_t>(1, g.out[2]) : (m + block - 1) / block;
  const int64_t budget = std::max<int64_t>(1, (int64_t{16} << 20) / (size * 4));   // 16 MiB of partials
  const int64_t groups = std::max<int64_t>(1, std::min({2 * worker_count(pool), chunks, budget}));
  std::vector<std::vector<float>> partial(groups);
  ffi::Error done = parallel_chunks(kWho, pool, groups, std::min(worker_count(pool), groups), [&](int64_t group) {
    std::vector<float>& mine = partial[group];
    mine.assign(size, 0.0f);
    if (thin) {
      Thin scratch(g, mine.data());
      for (int64_t seg = group * chunks / groups; seg < (group + 1) * chunks / groups; ++seg)
        scratch.segment(g, x, dy, seg / (g.out[0] * g.out[1]), seg / g.out[1] % g.out[0], seg % g.out[1]);
      return;
    }
    std::vector<const float*> table(block * g.taps());
    for (int64_t chunk = group * chunks / groups; chunk < (group + 1) * chunks / groups; ++chunk) {
      int64_t first = chunk * block, count = std::min(m, first + block) - first;
      row_table(g, x, zeros.data(), first, count, count, table.data());
      const float* dyc = dy + first * g.o;
      for_vector_runs(vectors, [&](auto ob, int64_t v) {
        weight_grad_range<decltype(ob)::value>(g, table.data(), count, dyc, mine.data(), v * V);
      });
    }
  });
  if (done.failure()) return done;
  std::memset(dw, 0, size * sizeof(float));
  for (auto& part : partial)
    for (int64_t e = 0; e < size; ++e) dw[e] += part[e];
  return ffi::Error::Success();
}

// ------------------------------------------------------------------------------------- FFI

ffi::Error invalid(const std::string& what) {
  return ffi::Error::InvalidArgument(std::string(kWho) + ": " + what);
}

// The geometry is an attribute that any caller of the custom call can set: it is checked against
// itself and against the buffers before a kernel runs, so a bad one is an FFI error, never a read
// out of bounds or a division by zero. `sizes` holds 7 triples (in, out, k, s, d, lo, ld), 1-D and
// 2-D padded to three axes with leading size-1 axes; with r spatial axes the buffers are
// x: (n, *in, c), w: (*k, c, o), y: (n, *out, o) (the weight gradient's dy and dw are its y and w).
constexpr int64_t kMaxStep = int64_t{1} << 31;   // s, d, ld and |lo|: no overflow in i·s + k·d − lo

ffi::Error geometry(Geometry& g, ffi::Span<const int64_t> sizes, ffi::Span<const int64_t> xd,
                    ffi::Span<const int64_t> wd, ffi::Span<const int64_t> yd) {
  if (sizes.size() != 21) return invalid("expected 21 sizes, got " + str(sizes.size()));
  const int64_t rank = xd.size(), r = rank - 2;
  if (r < 1 || r > 3) return invalid("x has " + str(rank) + " dimensions, expected 3 to 5");
  if (int64_t(wd.size()) != rank || int64_t(yd.size()) != rank)
    return invalid("x, w and y have " + str(rank) + ", " + str(wd.size()) + " and " + str(yd.size()) +
                   " dimensions, expected the same");
  int64_t* fields[7] = {g.in, g.out, g.k, g.s, g.d, g.lo, g.ld};
  for (int f = 0; f < 7; ++f)
    for (int a = 0; a < 3; ++a) fields[f][a] = sizes[f * 3 + a];
  g.n = xd[0]; g.c = xd[r + 1]; g.o = wd[r + 1];
  for (int a = 0; a < 3; ++a) {
    const int64_t axis = a - (3 - r);   // the buffers' spatial axis, negative for a padded one
    const int64_t in = axis < 0 ? 1 : xd[1 + axis], out = axis < 0 ? 1 : yd[1 + axis],
                  k = axis < 0 ? 1 : wd[axis];
    const std::string where = "axis " + str(a) + ": ";
    if (g.in[a] != in || g.out[a] != out || g.k[a] != k)
      return invalid(where + "sizes (in, out, k) = (" + str(g.in[a]) + ", " + str(g.out[a]) + ", " +
                     str(g.k[a]) + ") but the buffers' are (" + str(in) + ", " + str(out) + ", " + str(k) + ")");
    if (g.k[a] < 1) return invalid(where + "kernel size " + str(g.k[a]) + ", expected >= 1");
    if (g.s[a] < 1 || g.d[a] < 1 || g.ld[a] < 1)
      return invalid(where + "stride " + str(g.s[a]) + ", dilation " + str(g.d[a]) + ", input dilation " +
                     str(g.ld[a]) + ": each must be >= 1");
    if (g.s[a] > kMaxStep || g.d[a] > kMaxStep || g.ld[a] > kMaxStep || g.lo[a] > kMaxStep || g.lo[a] < -kMaxStep)
      return invalid(where + "stride, dilation, input dilation or low pad beyond 2^31");
  }
  if (wd[r] != g.c) return invalid("w has " + str(wd[r]) + " input channels, x " + str(g.c));
  if (yd[0] != g.n || yd[r + 1] != g.o)
    return invalid("y is (" + str(yd[0]) + ", ..., " + str(yd[r + 1]) + "), expected (" + str(g.n) + ", ..., " +
                   str(g.o) + ")");
  if (g.c < 1) return invalid("input channels " + str(g.c) + ", expected >= 1");
  if (g.o < 1 || g.o % V)
    return invalid("output channels " + str(g.o) + ", expected a positive multiple of " + str(V));
  return ffi::Error::Success();
}

ffi::Error ConvImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                    ffi::ResultBuffer<ffi::F32> y, ffi::Span<const int64_t> sizes) {
  Geometry g;
  if (auto e = geometry(g, sizes, x.dimensions(), w.dimensions(), y->dimensions()); e.failure()) return e;
  return guarded(kWho, [&] { return conv(pool, g, x.typed_data(), w.typed_data(), y->typed_data()); });
}

ffi::Error WeightGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::ResultBuffer<ffi::F32> dw, ffi::Span<const int64_t> sizes) {
  Geometry g;
  if (auto e = geometry(g, sizes, x.dimensions(), dw->dimensions(), dy.dimensions()); e.failure()) return e;
  return guarded(kWho, [&] { return weight_grad(pool, g, x.typed_data(), dy.typed_data(), dw->typed_data()); });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConv, ConvImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("sizes"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWeightGrad, WeightGradImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("sizes"));

extern "C" int jaxcnn_vector_width() { return V; }
