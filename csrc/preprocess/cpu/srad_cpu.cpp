// SRAD (spec step 4, denoise=srad): speckle-reducing anisotropic diffusion on
// J = exp(y), one streaming pass per iteration.  Compiled once per CPU
// variant (cpu_internal.h).
//
// The row kernels run 8 pixels per step in whole blocks of 8 and finish the
// row one pixel at a time.  The block form and the per-pixel form group a
// few sums differently (which product of a pair is fused: *_block below vs
// the preprocess_math.h spec the CUDA kernel shares); each is the same on
// every variant: AVX2 + FMA intrinsics, or the same operations per lane in
// portable code with detail::fma_f.
#include <algorithm>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define TF_SRAD_AVX2 1
#elif defined(__SSE4_1__)
#include <smmintrin.h>
#define TF_SRAD_SSE4 1
#endif

#include "cpu_internal.h"
#include "fma4_sse.h"

namespace thyrofast {
namespace cpu {
namespace TF_CPU_VARIANT {
namespace {

using detail::fma_f;

// ------------------------------------------------------- block arithmetic ---
// detail::srad_q2_frac as the 8-wide blocks compute it (ds^2 fused onto dn^2)
inline detail::SradQ2 srad_q2_frac_block(float jc, float jn, float js, float jw, float je, float* dn_out) {
  const float dn = jn - jc, ds = js - jc, dw = jw - jc, de = je - jc;
  const float g = fma_f(de, de, fma_f(dw, dw, fma_f(ds, ds, dn * dn)));
  const float s = ((dn + ds) + dw) + de;
  const float m = fma_f(4.0f, jc, s);
  detail::SradQ2 r;
  r.num = fma_f(8.0f, g, -(s * s));
  r.den = m * m;
  *dn_out = dn;
  return r;
}

// detail::srad_coeff (min(1, c) keeps c unless 1 < c, NaN included)
inline float srad_coeff_block(detail::SradQ2 q, float inv_den, float k) {
  const float c = q.den / fma_f(q.num, inv_den, q.den * k);
  return 1.0f < c ? 1.0f : c;
}

#if defined(TF_SRAD_AVX2)
struct SradQ2x8 {
  __m256 num, den;
};

// srad_q2_frac_block for 8 pixels given as values; *dn_out gets jn - jc
// (the fused row step reuses it as minus the south diff of the row above)
inline SradQ2x8 srad_q2_frac8(__m256 jc, __m256 jn, __m256 js, __m256 jw, __m256 je, __m256* dn_out) {
  const __m256 dn = _mm256_sub_ps(jn, jc), ds = _mm256_sub_ps(js, jc);
  const __m256 dw = _mm256_sub_ps(jw, jc), de = _mm256_sub_ps(je, jc);
  __m256 g = _mm256_mul_ps(dn, dn);
  g = _mm256_fmadd_ps(ds, ds, g);
  g = _mm256_fmadd_ps(dw, dw, g);
  g = _mm256_fmadd_ps(de, de, g);
  const __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(dn, ds), dw), de);
  const __m256 m = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), jc, s);
  SradQ2x8 r;
  r.num = _mm256_fmsub_ps(_mm256_set1_ps(8.0f), g, _mm256_mul_ps(s, s));
  r.den = _mm256_mul_ps(m, m);
  if (dn_out) *dn_out = dn;
  return r;
}

// the same for the 8 pixels rc[j..j+8)
inline SradQ2x8 srad_q2_frac8(const float* rc, const float* rn, const float* rs, int64_t j) {
  return srad_q2_frac8(_mm256_loadu_ps(rc + j), _mm256_loadu_ps(rn + j), _mm256_loadu_ps(rs + j),
                       _mm256_loadu_ps(rc + j - 1), _mm256_loadu_ps(rc + j + 1), nullptr);
}

// srad_coeff_block for 8 pixels (min_ps(1, c) is min_f(c, 1), NaN included)
inline __m256 srad_coeff8(SradQ2x8 q, __m256 inv_den, __m256 k) {
  const __m256 c = _mm256_div_ps(q.den, _mm256_fmadd_ps(q.num, inv_den, _mm256_mul_ps(q.den, k)));
  return _mm256_min_ps(_mm256_set1_ps(1.0f), c);
}

// detail::exp_f and detail::log_f for 8 floats, operation for operation
// (checked over all 2^32 bit patterns, NaN aside), in about half the
// instructions of the compiler's vectorized exp_f / log_f
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
  const __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  const __m256 kf = _mm256_floor_ps(fx);
  const __m256i k = _mm256_cvttps_epi32(kf);
  __m256 r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 r2 = _mm256_mul_ps(r, r);
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
  const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(y, scale);
}
inline __m256 log8(__m256 x_in) {
  const __m256 ok = _mm256_cmp_ps(x_in, _mm256_set1_ps(1.17549435e-38f), _CMP_GT_OQ);
  const __m256i u = _mm256_castps_si256(_mm256_blendv_ps(_mm256_set1_ps(1.0f), x_in, ok));
  const __m256i mant = _mm256_and_si256(u, _mm256_set1_epi32(0x007fffff));
  const __m256i small = _mm256_srli_epi32(_mm256_sub_epi32(mant, _mm256_set1_epi32(0x003504f3)), 31);
  const __m256i e = _mm256_sub_epi32(
      _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(u, 23), _mm256_set1_epi32(0xff)), _mm256_set1_epi32(126)), small);
  const __m256 m = _mm256_sub_ps(
      _mm256_castsi256_ps(_mm256_add_epi32(_mm256_or_si256(mant, _mm256_set1_epi32(0x3f000000)), _mm256_slli_epi32(small, 23))),
      _mm256_set1_ps(1.0f));
  const __m256 z = _mm256_mul_ps(m, m);
  __m256 y = _mm256_set1_ps(7.0376836292e-2f);
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.1514610310e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.1676998740e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.2420140846e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.4249322787e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.6668057665e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(2.0000714765e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-2.4999993993e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(3.3333331174e-1f));
  y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
  const __m256 ef = _mm256_cvtepi32_ps(e);
  y = _mm256_fmadd_ps(_mm256_set1_ps(-2.12194440e-4f), ef, y);
  y = _mm256_fmadd_ps(_mm256_set1_ps(-0.5f), z, y);
  const __m256 r = _mm256_fmadd_ps(_mm256_set1_ps(0.693359375f), ef, _mm256_add_ps(m, y));
  return _mm256_blendv_ps(_mm256_set1_ps(-87.0f), r, ok);
}
#endif


#if defined(TF_SRAD_SSE4)
inline __m128 neg4(__m128 a) { return _mm_xor_ps(a, _mm_set1_ps(-0.0f)); }

struct SradQ2x4 {
  __m128 num, den;
};

// srad_q2_frac_block for 4 pixels
inline SradQ2x4 srad_q2_frac4(__m128 jc, __m128 jn, __m128 js, __m128 jw, __m128 je, __m128* dn_out) {
  const __m128 dn = _mm_sub_ps(jn, jc), ds = _mm_sub_ps(js, jc);
  const __m128 dw = _mm_sub_ps(jw, jc), de = _mm_sub_ps(je, jc);
  __m128 g = _mm_mul_ps(dn, dn);
  g = fma4(ds, ds, g);
  g = fma4(dw, dw, g);
  g = fma4(de, de, g);
  const __m128 s = _mm_add_ps(_mm_add_ps(_mm_add_ps(dn, ds), dw), de);
  const __m128 m = fma4(_mm_set1_ps(4.0f), jc, s);
  SradQ2x4 r;
  r.num = fma4(_mm_set1_ps(8.0f), g, neg4(_mm_mul_ps(s, s)));
  r.den = _mm_mul_ps(m, m);
  if (dn_out) *dn_out = dn;
  return r;
}

inline SradQ2x4 srad_q2_frac4(const float* rc, const float* rn, const float* rs, int64_t j) {
  return srad_q2_frac4(_mm_loadu_ps(rc + j), _mm_loadu_ps(rn + j), _mm_loadu_ps(rs + j), _mm_loadu_ps(rc + j - 1),
                       _mm_loadu_ps(rc + j + 1), nullptr);
}

// srad_coeff_block for 4 pixels (min_ps(1, c) keeps c unless 1 < c)
inline __m128 srad_coeff4(SradQ2x4 q, __m128 inv_den, __m128 k) {
  const __m128 c = _mm_div_ps(q.den, fma4(q.num, inv_den, _mm_mul_ps(q.den, k)));
  return _mm_min_ps(_mm_set1_ps(1.0f), c);
}

// detail::exp_f / detail::log_f for 4 floats, operation for operation (exp8 / log8)
inline __m128 exp4(__m128 x) {
  x = _mm_min_ps(_mm_set1_ps(88.0f), _mm_max_ps(_mm_set1_ps(-87.0f), x));
  const __m128 fx = fma4(x, _mm_set1_ps(1.44269504088896341f), _mm_set1_ps(0.5f));
  const __m128 kf = _mm_floor_ps(fx);
  const __m128i k = _mm_cvttps_epi32(kf);
  __m128 r = fma4(neg4(kf), _mm_set1_ps(0.693359375f), x);
  r = fma4(neg4(kf), _mm_set1_ps(-2.12194440e-4f), r);
  __m128 p = _mm_set1_ps(1.9875691500e-4f);
  p = fma4(p, r, _mm_set1_ps(1.3981999507e-3f));
  p = fma4(p, r, _mm_set1_ps(8.3334519073e-3f));
  p = fma4(p, r, _mm_set1_ps(4.1665795894e-2f));
  p = fma4(p, r, _mm_set1_ps(1.6666665459e-1f));
  p = fma4(p, r, _mm_set1_ps(5.0000001201e-1f));
  const __m128 r2 = _mm_mul_ps(r, r);
  const __m128 y = _mm_add_ps(fma4(p, r2, r), _mm_set1_ps(1.0f));
  const __m128 scale = _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(k, _mm_set1_epi32(127)), 23));
  return _mm_mul_ps(y, scale);
}
inline __m128 log4(__m128 x_in) {
  const __m128 ok = _mm_cmpgt_ps(x_in, _mm_set1_ps(1.17549435e-38f));
  const __m128i u = _mm_castps_si128(_mm_blendv_ps(_mm_set1_ps(1.0f), x_in, ok));
  const __m128i mant = _mm_and_si128(u, _mm_set1_epi32(0x007fffff));
  const __m128i small = _mm_srli_epi32(_mm_sub_epi32(mant, _mm_set1_epi32(0x003504f3)), 31);
  const __m128i e = _mm_sub_epi32(
      _mm_sub_epi32(_mm_and_si128(_mm_srli_epi32(u, 23), _mm_set1_epi32(0xff)), _mm_set1_epi32(126)), small);
  const __m128 m = _mm_sub_ps(
      _mm_castsi128_ps(_mm_add_epi32(_mm_or_si128(mant, _mm_set1_epi32(0x3f000000)), _mm_slli_epi32(small, 23))),
      _mm_set1_ps(1.0f));
  const __m128 z = _mm_mul_ps(m, m);
  __m128 y = _mm_set1_ps(7.0376836292e-2f);
  y = fma4(y, m, _mm_set1_ps(-1.1514610310e-1f));
  y = fma4(y, m, _mm_set1_ps(1.1676998740e-1f));
  y = fma4(y, m, _mm_set1_ps(-1.2420140846e-1f));
  y = fma4(y, m, _mm_set1_ps(1.4249322787e-1f));
  y = fma4(y, m, _mm_set1_ps(-1.6668057665e-1f));
  y = fma4(y, m, _mm_set1_ps(2.0000714765e-1f));
  y = fma4(y, m, _mm_set1_ps(-2.4999993993e-1f));
  y = fma4(y, m, _mm_set1_ps(3.3333331174e-1f));
  y = _mm_mul_ps(_mm_mul_ps(y, m), z);
  const __m128 ef = _mm_cvtepi32_ps(e);
  y = fma4(_mm_set1_ps(-2.12194440e-4f), ef, y);
  y = fma4(_mm_set1_ps(-0.5f), z, y);
  const __m128 r = fma4(_mm_set1_ps(0.693359375f), ef, _mm_add_ps(m, y));
  return _mm_blendv_ps(_mm_set1_ps(-87.0f), r, ok);
}
#endif

void exp_row(float* r, int64_t w) {
  int64_t j = 0;
#if defined(TF_SRAD_AVX2)
  for (; j + 8 <= w; j += 8) _mm256_storeu_ps(r + j, exp8(_mm256_loadu_ps(r + j)));
#elif defined(TF_SRAD_SSE4)
  for (; j + 4 <= w; j += 4) _mm_storeu_ps(r + j, exp4(_mm_loadu_ps(r + j)));
#endif
  for (; j < w; ++j) r[j] = detail::exp_f(r[j]);
}

void log_row(float* r, int64_t w) {
  int64_t j = 0;
#if defined(TF_SRAD_AVX2)
  for (; j + 8 <= w; j += 8) _mm256_storeu_ps(r + j, log8(_mm256_loadu_ps(r + j)));
#elif defined(TF_SRAD_SSE4)
  for (; j + 4 <= w; j += 4) _mm_storeu_ps(r + j, log4(_mm_loadu_ps(r + j)));
#endif
  for (; j < w; ++j) r[j] = detail::log_f(r[j]);
}

// ------------------------------------------------------------ row kernels ---
// Interior rows of a padded image whose 1-ring border is valid.

// q2[j] = q^2 at (row rc, column j)
void srad_q2_row(const float* rc, const float* rn, const float* rs, int64_t w, float* q2) {
  int64_t j = 0;
#if defined(TF_SRAD_AVX2)
  for (; j + 8 <= w; j += 8) {
    const SradQ2x8 q = srad_q2_frac8(rc, rn, rs, j);
    _mm256_storeu_ps(q2 + j, _mm256_div_ps(q.num, q.den));
  }
#else
  const int64_t wb = w - w % 8;  // the block formula covers the same columns as with AVX2
#if defined(TF_SRAD_SSE4)
  for (; j < wb; j += 4) {
    const SradQ2x4 q = srad_q2_frac4(rc, rn, rs, j);
    _mm_storeu_ps(q2 + j, _mm_div_ps(q.num, q.den));
  }
#endif
  for (; j < wb; ++j) {
    float dn;
    const detail::SradQ2 q = srad_q2_frac_block(rc[j], rn[j], rs[j], rc[j - 1], rc[j + 1], &dn);
    q2[j] = q.num / q.den;
  }
#endif
  for (; j < w; ++j) q2[j] = detail::srad_q2(rc[j], rn[j], rs[j], rc[j - 1], rc[j + 1]);
}

// c[j] = diffusion coefficient at (row rc, column j); c[w] = c[w - 1]
// (replicated edge)
void srad_coeff_row(const float* rc, const float* rn, const float* rs, int64_t w, detail::SradCoeffK k, float* c) {
  int64_t j = 0;
#if defined(TF_SRAD_AVX2)
  const __m256 vinv = _mm256_set1_ps(k.inv_den), vk = _mm256_set1_ps(k.k);
  for (; j + 8 <= w; j += 8) _mm256_storeu_ps(c + j, srad_coeff8(srad_q2_frac8(rc, rn, rs, j), vinv, vk));
#else
  const int64_t wb = w - w % 8;
#if defined(TF_SRAD_SSE4)
  const __m128 vinv = _mm_set1_ps(k.inv_den), vk = _mm_set1_ps(k.k);
  for (; j < wb; j += 4) _mm_storeu_ps(c + j, srad_coeff4(srad_q2_frac4(rc, rn, rs, j), vinv, vk));
#endif
  for (; j < wb; ++j) {
    float dn;
    c[j] = srad_coeff_block(srad_q2_frac_block(rc[j], rn[j], rs[j], rc[j - 1], rc[j + 1], &dn), k.inv_den, k.k);
  }
#endif
  for (; j < w; ++j)
    c[j] = detail::srad_coeff(detail::srad_q2_frac(rc[j], rn[j], rs[j], rc[j - 1], rc[j + 1]), k);
  c[w] = c[w - 1];
}

// out[j] = J at (row rc, column j) after one diffusion step; cc / cs: the
// coefficient rows of this row and the one below
void srad_update_row(const float* rc, const float* rn, const float* rs, const float* cc, const float* cs, int64_t w,
                     float quarter_lambda, float* out) {
  for (int64_t j = 0; j < w; ++j)
    out[j] = detail::srad_update(rc[j], rn[j], rs[j], rc[j - 1], rc[j + 1], cc[j], cs[j], cc[j + 1], quarter_lambda);
}

#if defined(TF_SRAD_AVX2)
// srad_step_row's body for U blocks of 8 pixels from column j, each phase
// done for every block before the next: the blocks' long chains (q^2, then
// the division) overlap instead of queueing one behind the other, which
// measured about 10% faster per iteration than one block at a time.  The
// operations per pixel and their order are unchanged.
template <int U>
inline void srad_step_blocks(const float* r0, const float* r1, const float* r2, const float* r3, const float* cc,
                             float* cn, int64_t j, __m256 vinv, __m256 vk, __m256 ql, float* out) {
  SradQ2x8 q[U];
  __m256 dn[U], c_s[U], up[U], t[U];
  // q^2 and c of row i + 1
  for (int u = 0; u < U; ++u) {
    const int64_t x = j + 8 * u;
    q[u] = srad_q2_frac8(_mm256_loadu_ps(r2 + x), _mm256_loadu_ps(r1 + x), _mm256_loadu_ps(r3 + x),
                         _mm256_loadu_ps(r2 + x - 1), _mm256_loadu_ps(r2 + x + 1), &dn[u]);
  }
  for (int u = 0; u < U; ++u) c_s[u] = srad_coeff8(q[u], vinv, vk);
  // update of row i: c_c (dn + dw), then + c_s ds, then + c_e de, each
  // fused; row i's south diff b - up is exactly -dn
  for (int u = 0; u < U; ++u) {
    const int64_t x = j + 8 * u;
    up[u] = _mm256_loadu_ps(r1 + x);
    t[u] = _mm256_mul_ps(_mm256_loadu_ps(cc + x), _mm256_add_ps(_mm256_sub_ps(_mm256_loadu_ps(r0 + x), up[u]),
                                                                _mm256_sub_ps(_mm256_loadu_ps(r1 + x - 1), up[u])));
  }
  for (int u = 0; u < U; ++u) t[u] = _mm256_fnmadd_ps(c_s[u], dn[u], t[u]);
  for (int u = 0; u < U; ++u) {
    const int64_t x = j + 8 * u;
    t[u] = _mm256_fmadd_ps(_mm256_loadu_ps(cc + x + 1), _mm256_sub_ps(_mm256_loadu_ps(r1 + x + 1), up[u]), t[u]);
  }
  for (int u = 0; u < U; ++u) {
    const int64_t x = j + 8 * u;
    _mm256_storeu_ps(cn + x, c_s[u]);
    _mm256_storeu_ps(out + x, _mm256_fmadd_ps(ql, t[u], up[u]));
  }
}
#endif

// One row step of an iteration: the coefficients of row i + 1 (into cn,
// cn[w] replicated) and, with them, the update of row i (into out).  r0..r3
// are rows i - 1 .. i + 2; cc holds row i's coefficients.  Fusing the two
// keeps the coefficient row below in registers and reuses its north diff:
// row i's south diff is exactly minus row i + 1's north diff.  Every load of
// a block comes before its stores (the rows of `cn` and `out` never overlap
// the rows read; the compiler cannot tell).
void srad_step_row(const float* r0, const float* r1, const float* r2, const float* r3, const float* cc, float* cn,
                   int64_t w, detail::SradCoeffK k, float quarter_lambda, float* out) {
  int64_t j = 0;
#if defined(TF_SRAD_AVX2)
  const __m256 vinv = _mm256_set1_ps(k.inv_den), vk = _mm256_set1_ps(k.k), ql = _mm256_set1_ps(quarter_lambda);
  for (; j + 16 <= w; j += 16) srad_step_blocks<2>(r0, r1, r2, r3, cc, cn, j, vinv, vk, ql, out);
  for (; j + 8 <= w; j += 8) srad_step_blocks<1>(r0, r1, r2, r3, cc, cn, j, vinv, vk, ql, out);
#else
  const int64_t wb = w - w % 8;
#if defined(TF_SRAD_SSE4)
  const __m128 vinv = _mm_set1_ps(k.inv_den), vk = _mm_set1_ps(k.k), ql = _mm_set1_ps(quarter_lambda);
  for (; j < wb; j += 4) {
    __m128 dn;
    const SradQ2x4 q = srad_q2_frac4(_mm_loadu_ps(r2 + j), _mm_loadu_ps(r1 + j), _mm_loadu_ps(r3 + j),
                                     _mm_loadu_ps(r2 + j - 1), _mm_loadu_ps(r2 + j + 1), &dn);
    const __m128 c_s = srad_coeff4(q, vinv, vk);
    const __m128 up = _mm_loadu_ps(r1 + j);
    __m128 t = _mm_mul_ps(_mm_loadu_ps(cc + j),
                          _mm_add_ps(_mm_sub_ps(_mm_loadu_ps(r0 + j), up), _mm_sub_ps(_mm_loadu_ps(r1 + j - 1), up)));
    t = fma4(neg4(c_s), dn, t);
    t = fma4(_mm_loadu_ps(cc + j + 1), _mm_sub_ps(_mm_loadu_ps(r1 + j + 1), up), t);
    _mm_storeu_ps(cn + j, c_s);
    _mm_storeu_ps(out + j, fma4(ql, t, up));
  }
#endif
  for (; j < wb; ++j) {
    float dn;
    const float c_s = srad_coeff_block(srad_q2_frac_block(r2[j], r1[j], r3[j], r2[j - 1], r2[j + 1], &dn), k.inv_den, k.k);
    const float up = r1[j];
    float t = cc[j] * ((r0[j] - up) + (r1[j - 1] - up));
    t = fma_f(-c_s, dn, t);
    t = fma_f(cc[j + 1], r1[j + 1] - up, t);
    cn[j] = c_s;
    out[j] = fma_f(quarter_lambda, t, up);
  }
#endif
  for (; j < w; ++j) {
    cn[j] = detail::srad_coeff(detail::srad_q2_frac(r2[j], r1[j], r3[j], r2[j - 1], r2[j + 1]), k);
    out[j] = detail::srad_update(r1[j], r0[j], r2[j], r1[j - 1], r1[j + 1], cc[j], cn[j], cc[j + 1], quarter_lambda);
  }
  cn[w] = cn[w - 1];
}

}  // namespace

// Each iteration is one streaming pass: the coefficient row below is
// computed just before the row is updated, so coefficients live in two
// L1-sized rows, and the borders of each output row are replicated as it is
// written.  exp is fused into the q^2 pass that sets the speckle scale and
// log into the last update.
void srad(float* a, float* b, Workspace& ws, int64_t h, int64_t w, int64_t wp, const PreprocessParams& p) {
  const int64_t wc = (w + 1 + 15) & ~int64_t{15};  // coefficient row stride (w + 1 used)
  float* coef = ws.floats(Workspace::kCoef, static_cast<size_t>(2 * wc));
  const float quarter_lambda = 0.25f * p.srad_lambda;
  auto row = [wp](float* img, int64_t i) { return img + (i + kPad) * wp + kPad; };
  // copy row i, its 1-ring border included, onto row k
  auto copy_row = [&](float* img, int64_t i, int64_t k) {
    std::memcpy(row(img, k) - 1, row(img, i) - 1, sizeof(float) * static_cast<size_t>(w + 2));
  };
  auto fill_edges = [w](float* r) {
    r[-1] = r[0];
    r[w] = r[w - 1];
  };

  // J = exp(y - shift), one row ahead of q^2, the first iteration's speckle measure
  float ymax = 0.0f;
  for (int64_t i = 0; i < h; ++i) {
    float lo, hi;
    min_max(row(a, i), w, &lo, &hi);
    ymax = i == 0 ? hi : std::max(ymax, hi);
  }
  const float shift = detail::srad_log_shift(ymax);
  if (shift != 0.0f) {
    for (int64_t i = 0; i < h; ++i) {
      float* r = row(a, i);
      for (int64_t j = 0; j < w; ++j) r[j] = detail::clamp_f(r[j], -87.0f, 88.0f) - shift;
    }
  }
  // q^2 of the first iteration goes to `b`, which the first update
  // overwrites only after the median is taken: one buffer fewer to touch
  float* q2 = b;
  exp_row(row(a, 0), w);
  fill_edges(row(a, 0));
  copy_row(a, 0, -1);
  for (int64_t i = 0; i < h; ++i) {
    if (i + 1 < h) {
      exp_row(row(a, i + 1), w);
      fill_edges(row(a, i + 1));
    } else {
      copy_row(a, h - 1, h);
    }
    const float* rc = row(a, i);
    srad_q2_row(rc, rc - wp, rc + wp, w, q2 + i * w);
  }
  // q0^2(0) = median of q^2 over the frame (NumPy: mean of the two middle values)
  const int64_t cnt = h * w;
  int64_t ranks[2] = {(cnt - 1) / 2, cnt / 2};
  float vals[2];
  select_ranks(q2, cnt, ranks, 2, vals, ws);
  const float q0sq0 = (vals[0] + vals[1]) * 0.5f;

  for (int n = 0; n < p.srad_iterations; ++n) {
    const bool last = n + 1 == p.srad_iterations;
    const float q0sq = detail::srad_q0sq(q0sq0, n, p.srad_rho, p.srad_lambda);
    const detail::SradCoeffK k = detail::srad_coeff_k(q0sq);
    float* c0 = coef;
    float* c1 = c0 + wc;
    srad_coeff_row(row(a, 0), row(a, -1), row(a, 1), w, k, c0);
    for (int64_t i = 0; i < h; ++i) {
      const float* rc = row(a, i);
      float* out = row(b, i);
      if (i + 1 < h) {
        srad_step_row(rc - wp, rc, rc + wp, rc + 2 * wp, c0, c1, w, k, quarter_lambda, out);
      } else {  // the last row's coefficients are replicated downwards
        srad_update_row(rc, rc - wp, rc + wp, c0, c0, w, quarter_lambda, out);
      }
      if (last) {
        log_row(out, w);
        if (shift != 0.0f)
          for (int64_t j = 0; j < w; ++j) out[j] += shift;
      } else {
        fill_edges(out);
      }
      std::swap(c0, c1);
    }
    if (!last) {
      copy_row(b, 0, -1);
      copy_row(b, h - 1, h);
    }
    std::swap(a, b);
  }
}

}  // namespace TF_CPU_VARIANT
}  // namespace cpu
}  // namespace thyrofast
