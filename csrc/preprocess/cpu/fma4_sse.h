// Exact fused multiply-add for 4 floats on CPUs without FMA (the baseline
// variant, x86-64-v2): the SSE form of detail::fma_f.  Internal to the CPU
// stages (cpu_internal.h); included only where __SSE4_1__ and not __FMA__.
#pragma once

#if defined(__SSE4_1__) && !defined(__FMA__)
#include <smmintrin.h>

#include "../../common/host_device.h"

namespace thyrofast {
namespace cpu {
namespace TF_CPU_VARIANT {
namespace {

// The baseline (x86-64-v2) has no FMA: the same block arithmetic 4 lanes at
// a time, each fused multiply-add exact through double as in detail::fma_f
// (lanes whose double sum may round twice take fma_f itself: rare).
inline bool needs_exact(__m128d s) {
  const __m128i low = _mm_and_si128(_mm_castpd_si128(s), _mm_set1_epi64x(0x1fffffff));
  const __m128d mid = _mm_castsi128_pd(_mm_cmpeq_epi64(low, _mm_set1_epi64x(0x10000000)));
  const __m128d tiny = _mm_cmplt_pd(_mm_andnot_pd(_mm_set1_pd(-0.0), s), _mm_set1_pd(0x1p-125));
  return _mm_movemask_pd(_mm_or_pd(mid, tiny)) != 0;
}

inline __m128 fma4(__m128 a, __m128 b, __m128 c) {
  const __m128d slo = _mm_add_pd(_mm_mul_pd(_mm_cvtps_pd(a), _mm_cvtps_pd(b)), _mm_cvtps_pd(c));
  const __m128d shi = _mm_add_pd(_mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(a, a)), _mm_cvtps_pd(_mm_movehl_ps(b, b))),
                                 _mm_cvtps_pd(_mm_movehl_ps(c, c)));
  if (needs_exact(slo) || needs_exact(shi)) {
    float fa[4], fb[4], fc[4];
    _mm_storeu_ps(fa, a);
    _mm_storeu_ps(fb, b);
    _mm_storeu_ps(fc, c);
    for (int l = 0; l < 4; ++l) fa[l] = detail::fma_f(fa[l], fb[l], fc[l]);
    return _mm_loadu_ps(fa);
  }
  return _mm_movelh_ps(_mm_cvtpd_ps(slo), _mm_cvtpd_ps(shi));
}

}  // namespace
}  // namespace TF_CPU_VARIANT
}  // namespace cpu
}  // namespace thyrofast
#endif
