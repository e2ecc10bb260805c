// Per-frame normalization and the output write (spec steps 5-6).  Compiled
// once per CPU variant (cpu_internal.h); the vector forms evaluate the same
// operations as detail::apply_affine / detail::float_to_half_rne.
#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "cpu_internal.h"

namespace thyrofast {
namespace cpu {
namespace TF_CPU_VARIANT {

// `spare`: a free buffer of at least h * w floats (the working image not
// holding the result), so the order statistics need no buffer of their own
detail::FrameAffine frame_affine(const float* img, float* spare, int64_t h, int64_t w, int64_t wp,
                                 const PreprocessParams& p, Workspace& ws) {
  detail::FrameAffine f{0.0f, 1.0f, 0, p.mean, 1.0f / p.std};
  const int64_t n = h * w;
  switch (p.normalize) {
    case Normalize::none:
      return f;
    case Normalize::percentile: {
      float vmin, vmax;
      copy_min_max(img, h, w, wp, spare, &vmin, &vmax);
      const detail::PercentilePos lo = detail::percentile_pos(n, p.percentile_lo);
      const detail::PercentilePos hi = detail::percentile_pos(n, p.percentile_hi);
      int64_t ranks[4] = {lo.k, std::min(lo.k + 1, n - 1), hi.k, std::min(hi.k + 1, n - 1)};
      float vals[4];
      select_ranks_in(spare, n, vmin, vmax, ranks, 4, vals, ws);
      const float vlo = detail::lerp_numpy(vals[0], vals[1], lo.frac);
      const float vhi = detail::lerp_numpy(vals[2], vals[3], hi.frac);
      detail::set_range_affine(f, vlo, vhi);
      return f;
    }
    case Normalize::minmax: {
      float vmin = img[kPad * wp + kPad], vmax = vmin;
      for (int64_t i = 0; i < h; ++i) {
        float a, b;
        min_max(img + (i + kPad) * wp + kPad, w, &a, &b);
        vmin = std::min(vmin, a);
        vmax = std::max(vmax, b);
      }
      detail::set_range_affine(f, vmin, vmax);
      return f;
    }
    case Normalize::zscore: {
      // running sums in order, in double (products not fused into them)
      double sum = 0.0;
      for (int64_t i = 0; i < h; ++i) {
        const float* row = img + (i + kPad) * wp + kPad;
        double s = 0.0;
        for (int64_t j = 0; j < w; ++j) s += row[j];
        sum += s;
      }
      const double mean = sum / static_cast<double>(n);
      double ss = 0.0;
      for (int64_t i = 0; i < h; ++i) {
        const float* row = img + (i + kPad) * wp + kPad;
        double s = 0.0;
        for (int64_t j = 0; j < w; ++j) {
          const double d = row[j] - mean;
          s += d * d;
        }
        ss += s;
      }
      detail::set_zscore_affine(f, mean, std::sqrt(ss / static_cast<double>(n)));
      return f;
    }
  }
  return f;
}

void write_output(const float* img, int64_t h, int64_t w, int64_t wp, const detail::FrameAffine& f,
                  const PreprocessParams& p, void* out, int64_t frame) {
  const int64_t plane = h * w;
  const int c = p.channels;
  if (p.out_type == OutputType::f32) {
    float* o = static_cast<float*>(out) + frame * c * plane;
    for (int64_t i = 0; i < h; ++i) {
      const float* row = img + (i + kPad) * wp + kPad;
      float* dst = o + i * w;
      int64_t j = 0;
#if defined(__AVX2__)
      // apply_affine 8 at a time, clip hoisted (max_ps(lo, v) / min_ps(hi, v)
      // are max_f / min_f, NaN included)
      const __m256 vlo = _mm256_set1_ps(f.lo), va = _mm256_set1_ps(f.a), vmean = _mm256_set1_ps(f.mean),
                   vis = _mm256_set1_ps(f.inv_std), zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
      if (f.clip) {
        for (; j + 8 <= w; j += 8) {
          __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(row + j), vlo), va);
          t = _mm256_min_ps(one, _mm256_max_ps(zero, t));
          _mm256_storeu_ps(dst + j, _mm256_mul_ps(_mm256_sub_ps(t, vmean), vis));
        }
      } else {
        for (; j + 8 <= w; j += 8) {
          const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(row + j), vlo), va);
          _mm256_storeu_ps(dst + j, _mm256_mul_ps(_mm256_sub_ps(t, vmean), vis));
        }
      }
#endif
      for (; j < w; ++j) dst[j] = detail::apply_affine(row[j], f);
    }
    for (int ch = 1; ch < c; ++ch) std::memcpy(o + ch * plane, o, sizeof(float) * static_cast<size_t>(plane));
  } else {
    uint16_t* o = static_cast<uint16_t*>(out) + frame * c * plane;
    float tmp[256];
    for (int64_t i = 0; i < h; ++i) {
      const float* row = img + (i + kPad) * wp + kPad;
      uint16_t* dst = o + i * w;
      for (int64_t j0 = 0; j0 < w; j0 += 256) {
        const int64_t m = std::min<int64_t>(256, w - j0);
        for (int64_t j = 0; j < m; ++j) tmp[j] = detail::apply_affine(row[j0 + j], f);
        int64_t j = 0;
#if defined(__F16C__)
        // hardware conversion, same round-to-nearest-even as float_to_half_rne
        for (; j + 8 <= m; j += 8) {
          const __m128i hv = _mm256_cvtps_ph(_mm256_loadu_ps(tmp + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j0 + j), hv);
        }
#endif
        for (; j < m; ++j) dst[j0 + j] = detail::float_to_half_rne(tmp[j]);
      }
    }
    for (int ch = 1; ch < c; ++ch) std::memcpy(o + ch * plane, o, sizeof(uint16_t) * static_cast<size_t>(plane));
  }
}

}  // namespace TF_CPU_VARIANT
}  // namespace cpu
}  // namespace thyrofast
