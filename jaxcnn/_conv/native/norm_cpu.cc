// jaxcnn's CPU GroupNorm kernels, called from XLA as FFI custom calls (the loader, __init__.py
// beside this file, builds them into one library with conv_cpu.cc and pool_cpu.cc;
// normalising.py calls them).
//
// Channels last, float32, x: (N, *S, C) with 1 to 3 spatial axes (P = |S| positions), G groups of
// C/G channels, m = (C/G)·P elements per (sample, group). The maps are jaxcnn/norm.py's
// (Wu & He, 2018; torch.nn.functional.group_norm), per sample n and group g:
//
//   μ = mean x,   σ² = mean (x − μ)²,   r = (σ² + eps)^(−½),   x̂ = (x − μ)·r,   z = γ_c·x̂ + β_c
//   forward:  y = z, or max(0, z) with relu
//   VJP:      dy' = dy, or dy·[z > 0] with relu (jax.nn.relu's derivative: 0 at z = 0)
//             dx = dy'·γ_c·r − (x − μ)·r²·mean(γ·dy'·x̂) − r·mean(γ·dy')
//             partials[n, 0, c] = Σ_S dy'·x̂,   partials[n, 1, c] = Σ_S dy'
//
// (the scale and bias gradients are the partials summed over the samples, by the caller, so a
// batch split over devices or folded by vmap needs nothing more). One chunk of work is one
// sample, whose activation (100 KB at 28×28×32) stays in the core's cache while the kernel makes
// its passes over it: x (and dy) come from memory once per call, where XLA's fusions over the
// whole batch read them once per pass.
//
// Statistics in two passes (μ, then mean (x − μ)², never E[x²] − μ², whose float32 error grows as
// μ²/σ²), each summed per channel in double, then per group: a float32 sum of P values with a
// large common offset (x = 1000 + noise) loses ~P·2^-24 of the offset in rounding, more than the
// variance it is meant to measure at small noise; double costs little here (the conversions
// vectorise; both statistics passes over a 128×28×28×32 batch took 0.3 ms on one core). The
// elementwise passes work in float32 as the XLA form does: x − μ (μ as two floats: `statistics`),
// then one multiply-add.
//
// The entry points check the buffers' shapes and the groups against each other (a bad one is an
// FFI error, which JAX raises); an allocation that fails is an FFI error too.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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

constexpr const char* kWho = "jaxcnn native group_norm";   // in its errors
constexpr int64_t kParallelFloats = int64_t{1} << 15;        // smaller calls run on one thread

struct Norm {
  int64_t n, positions, c, groups;
  double eps;
  bool relu;
  int64_t per_group() const { return c / groups; }
  int64_t per_sample() const { return positions * c; }
};

// One sample's statistics, per channel: μ of c's group as a float32 pair mu[c] + mu_low[c] (x − μ
// is then (x − mu) − mu_low: the first difference exact for x near μ, one rounding in all, where
// x − float(μ) would be off by float32's rounding of μ, 3e-5 at μ = 1000, a third of a percent of
// a σ of 1e-2), rstd[c] = r of c's group. `sums`: C doubles of scratch.
void statistics(const Norm& g, const float* __restrict x, double* __restrict sums, float* __restrict mu,
                float* __restrict mu_low, float* __restrict rstd) {
  const int64_t c = g.c, cg = g.per_group();
  const double count = double(cg * g.positions);
  for (int64_t ch = 0; ch < c; ++ch) sums[ch] = 0.0;
  for (int64_t p = 0; p < g.positions; ++p)
    for (int64_t ch = 0; ch < c; ++ch) sums[ch] += double(x[p * c + ch]);
  std::vector<double> mean(c);
  for (int64_t gr = 0; gr < g.groups; ++gr) {
    double total = 0.0;
    for (int64_t k = 0; k < cg; ++k) total += sums[gr * cg + k];
    for (int64_t k = 0; k < cg; ++k) mean[gr * cg + k] = total / count;
  }
  for (int64_t ch = 0; ch < c; ++ch) sums[ch] = 0.0;
  const double* __restrict centre = mean.data();
  for (int64_t p = 0; p < g.positions; ++p)
    for (int64_t ch = 0; ch < c; ++ch) {
      const double d = double(x[p * c + ch]) - centre[ch];
      sums[ch] += d * d;
    }
  for (int64_t gr = 0; gr < g.groups; ++gr) {
    double total = 0.0;
    for (int64_t k = 0; k < cg; ++k) total += sums[gr * cg + k];
    const float r = float(1.0 / std::sqrt(total / count + g.eps));
    for (int64_t k = 0; k < cg; ++k) {
      mu[gr * cg + k] = float(mean[gr * cg + k]);
      mu_low[gr * cg + k] = float(mean[gr * cg + k] - double(mu[gr * cg + k]));
      rstd[gr * cg + k] = r;
    }
  }
}

int64_t workers(ffi::ThreadPool& pool, const Norm& g) {
  return g.n * g.per_sample() >= kParallelFloats ? worker_count(pool) : 1;
}

ffi::Error forward(ffi::ThreadPool& pool, const Norm& g, const float* x, const float* scale, const float* bias,
                   float* y) {
  return parallel_chunks(kWho, pool, g.n, workers(pool, g), [&](int64_t n) {
    const int64_t c = g.c;
    std::vector<double> sums(c);
    std::vector<float> mu(c), mu_low(c), rstd(c), a(c);
    statistics(g, x + n * g.per_sample(), sums.data(), mu.data(), mu_low.data(), rstd.data());
    for (int64_t ch = 0; ch < c; ++ch) a[ch] = scale[ch] * rstd[ch];   // y = (x − μ)·γr + β
    const float* __restrict in = x + n * g.per_sample();
    float* __restrict out = y + n * g.per_sample();
    const float *__restrict m = mu.data(), *__restrict ml = mu_low.data(), *__restrict s = a.data(),
                *__restrict b = bias;
    for (int64_t p = 0; p < g.positions; ++p)
      for (int64_t ch = 0; ch < c; ++ch) {
        const float z = ((in[p * c + ch] - m[ch]) - ml[ch]) * s[ch] + b[ch];
        out[p * c + ch] = g.relu && z < 0.f ? 0.f : z;   // a NaN passes, as jnp.maximum's
      }
  });
}

// dy, or dy where z = (x − μ)·γr + β > 0 (Relu), else +0 (a select, as jax.nn.relu's derivative:
// an infinite dy masked gives 0, not NaN). Written as a bit mask: GCC kept the loops with a `?:`
// here scalar ("control flow in loop"), 5-10x slower.
template <bool Relu>
inline float masked(float dy, float centred, float scale_r, float bias) {
  if (!Relu) return dy;
  uint32_t bits;
  std::memcpy(&bits, &dy, sizeof bits);
  bits &= -uint32_t(centred * scale_r + bias > 0.f);
  std::memcpy(&dy, &bits, sizeof bits);
  return dy;
}

// Sample n's dx and partial sums.
template <bool Relu>
void vjp_sample(const Norm& g, int64_t n, const float* x, const float* scale, const float* bias, const float* dy,
                float* dx, float* partials) {
  {
    const int64_t c = g.c, cg = g.per_group();
    const double count = double(cg * g.positions);
    std::vector<double> sums(c), dy_sums(c), dy_hat(c);
    std::vector<float> mu(c), mu_low(c), rstd(c), a(c), q(c), k(c);
    // dy's sample is first read two passes on: asked for now, it comes from memory while the
    // statistics read x (two streams at once instead of one after the other).
    for (int64_t at = 0; at < g.per_sample(); at += 64 / sizeof(float))
      __builtin_prefetch(dy + n * g.per_sample() + at);
    statistics(g, x + n * g.per_sample(), sums.data(), mu.data(), mu_low.data(), rstd.data());
    for (int64_t ch = 0; ch < c; ++ch) a[ch] = scale[ch] * rstd[ch];
    const float* __restrict in = x + n * g.per_sample();
    const float* __restrict grad = dy + n * g.per_sample();
    const float *__restrict m = mu.data(), *__restrict ml = mu_low.data(), *__restrict s = a.data(),
                *__restrict b = bias;
    double *__restrict s1 = dy_sums.data(), *__restrict s2 = dy_hat.data();
    for (int64_t p = 0; p < g.positions; ++p)
      for (int64_t ch = 0; ch < c; ++ch) {
        const float centred = (in[p * c + ch] - m[ch]) - ml[ch];
        const float d = masked<Relu>(grad[p * c + ch], centred, s[ch], b[ch]);
        s1[ch] += double(d);
        s2[ch] += double(d) * double(centred);   // Σ dy'·(x − μ); ·r below gives Σ dy'·x̂
      }
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      double mean_g_dy = 0.0, mean_g_dy_hat = 0.0;
      const double r = rstd[gr * cg];
      for (int64_t j = gr * cg; j < (gr + 1) * cg; ++j) {
        mean_g_dy += double(scale[j]) * s1[j];
        mean_g_dy_hat += double(scale[j]) * s2[j] * r;
      }
      mean_g_dy /= count;
      mean_g_dy_hat /= count;
      for (int64_t j = gr * cg; j < (gr + 1) * cg; ++j) {
        q[j] = float(r * r * mean_g_dy_hat);
        k[j] = float(r * mean_g_dy);
        partials[(n * 2) * c + j] = float(s2[j] * r);
        partials[(n * 2 + 1) * c + j] = float(s1[j]);
      }
    }
    float* __restrict out = dx + n * g.per_sample();
    const float *__restrict qq = q.data(), *__restrict kk = k.data();
    for (int64_t p = 0; p < g.positions; ++p)
      for (int64_t ch = 0; ch < c; ++ch) {
        const float centred = (in[p * c + ch] - m[ch]) - ml[ch];
        out[p * c + ch] = masked<Relu>(grad[p * c + ch], centred, s[ch], b[ch]) * s[ch] - centred * qq[ch] - kk[ch];
      }
  }
}

template <bool Relu>
ffi::Error vjp(ffi::ThreadPool& pool, const Norm& g, const float* x, const float* scale, const float* bias,
               const float* dy, float* dx, float* partials) {
  return parallel_chunks(kWho, pool, g.n, workers(pool, g), [&](int64_t n) {
    vjp_sample<Relu>(g, n, x, scale, bias, dy, dx, partials);
  });
}

// ------------------------------------------------------------------------------------- FFI

ffi::Error invalid(const std::string& what) {
  return ffi::Error::InvalidArgument(std::string(kWho) + ": " + what);
}

ffi::Error same_dims(const char* what, ffi::Span<const int64_t> dims, ffi::Span<const int64_t> want) {
  if (std::equal(dims.begin(), dims.end(), want.begin(), want.end())) return ffi::Error::Success();
  return invalid(std::string(what) + " is " + shape(dims) + ", expected " + shape(want));
}

// The attributes and the buffers come from any caller of the custom call: checked before a kernel
// runs, so a bad one is an FFI error, never a read out of bounds.
ffi::Error geometry(Norm& g, ffi::Span<const int64_t> x, ffi::Span<const int64_t> scale,
                    ffi::Span<const int64_t> bias, int64_t groups, double eps, int64_t relu) {
  const int64_t rank = x.size();
  if (rank < 3 || rank > 5) return invalid("x has " + str(rank) + " dimensions, expected 3 to 5");
  g.n = x[0]; g.c = x[rank - 1]; g.positions = 1;
  for (int64_t a = 1; a < rank - 1; ++a) g.positions *= x[a];
  if (g.c < 1) return invalid("x has " + str(g.c) + " channels, expected >= 1");
  if (groups < 1 || g.c % groups) return invalid("groups " + str(groups) + " does not divide " + str(g.c) + " channels");
  if (scale.size() != 1 || scale[0] != g.c) return invalid("scale is " + shape(scale) + ", expected (" + str(g.c) + ")");
  if (bias.size() != 1 || bias[0] != g.c) return invalid("bias is " + shape(bias) + ", expected (" + str(g.c) + ")");
  if (!(eps >= 0.0)) return invalid("eps must be >= 0");
  if (relu != 0 && relu != 1) return invalid("relu " + str(relu) + ", expected 0 or 1");
  g.groups = groups; g.eps = eps; g.relu = relu != 0;
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;

ffi::Error GroupNormImpl(ffi::ThreadPool pool, F32 x, F32 scale, F32 bias, ffi::ResultBuffer<ffi::F32> y,
                         int64_t groups, double eps, int64_t relu) {
  Norm g;
  if (auto e = geometry(g, x.dimensions(), scale.dimensions(), bias.dimensions(), groups, eps, relu); e.failure())
    return e;
  if (auto e = same_dims("y", y->dimensions(), x.dimensions()); e.failure()) return e;
  return guarded(kWho, [&] {
    return forward(pool, g, x.typed_data(), scale.typed_data(), bias.typed_data(), y->typed_data());
  });
}

ffi::Error GroupNormVjpImpl(ffi::ThreadPool pool, F32 x, F32 scale, F32 bias, F32 dy,
                            ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> partials, int64_t groups,
                            double eps, int64_t relu) {
  Norm g;
  if (auto e = geometry(g, x.dimensions(), scale.dimensions(), bias.dimensions(), groups, eps, relu); e.failure())
    return e;
  if (auto e = same_dims("dy", dy.dimensions(), x.dimensions()); e.failure()) return e;
  if (auto e = same_dims("dx", dx->dimensions(), x.dimensions()); e.failure()) return e;
  const int64_t want[3] = {g.n, 2, g.c};
  if (auto e = same_dims("the partial sums", partials->dimensions(), ffi::Span<const int64_t>(want, 3)); e.failure())
    return e;
  return guarded(kWho, [&] {
    return (g.relu ? vjp<true> : vjp<false>)(pool, g, x.typed_data(), scale.typed_data(), bias.typed_data(), dy.typed_data(), dx->typed_data(),
               partials->typed_data());
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnGroupNorm, GroupNormImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<ffi::Buffer<ffi::F32>>().Attr<int64_t>("groups").Attr<double>("eps")
                                  .Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnGroupNormVjp, GroupNormVjpImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("groups").Attr<double>("eps").Attr<int64_t>("relu"));
