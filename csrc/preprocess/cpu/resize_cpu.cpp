// Crop + luma + separable resize of one frame (spec steps 1-3), streaming
// input rows through a two-row cache into the padded working image.
//
// Compiled once per CPU variant (cpu_internal.h).  Every variant computes the
// same bits: where the AVX2 code groups the arithmetic (the horizontal pass's
// 8-product tree), the portable code spells out the same grouping.
#include <algorithm>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "cpu_internal.h"
#include "fma4_sse.h"

namespace thyrofast {
namespace cpu {
namespace TF_CPU_VARIANT {
namespace {

using detail::fma_f;
using detail::LumaCoeffs;

// acc[x] = fma(w, row[x], acc[x]) for x in [x0, n) (4 at a time without FMA hardware)
inline void fma_row(float w, const float* row, float* acc, int64_t x0, int64_t n) {
  int64_t x = x0;
#if defined(__SSE4_1__) && !defined(__FMA__)
  const __m128 vw = _mm_set1_ps(w);
  for (; x + 4 <= n; x += 4) _mm_storeu_ps(acc + x, fma4(vw, _mm_loadu_ps(row + x), _mm_loadu_ps(acc + x)));
#endif
  for (; x < n; ++x) acc[x] = fma_f(w, row[x], acc[x]);
}

template <typename T>
inline float luma3(const LumaCoeffs& k, const T* p, int64_t sc) {
  // (r p0 + g p1) + b p2, each sum fused with the product on its left
  return fma_f(k.b, static_cast<float>(p[2 * sc]), fma_f(k.r, static_cast<float>(p[0]), k.g * static_cast<float>(p[sc])));
}

template <typename T>
void convert_row(const T* src, int64_t w, int64_t sw, int64_t sc, int64_t c, const LumaCoeffs& k, float* dst) {
  if (c == 1) {
    const float s = k.gray;
    if (sw == 1) {
      for (int64_t x = 0; x < w; ++x) dst[x] = static_cast<float>(src[x]) * s;
    } else {
      for (int64_t x = 0; x < w; ++x) dst[x] = static_cast<float>(src[x * sw]) * s;
    }
    return;
  }
  // the interleaved fast path and the general one evaluate the same expression
  // (luma3), so the result does not depend on the layout
  if (sw == 3 && sc == 1) {
    for (int64_t x = 0; x < w; ++x) dst[x] = luma3(k, src + 3 * x, 1);
    return;
  }
  for (int64_t x = 0; x < w; ++x) dst[x] = luma3(k, src + x * sw, sc);
}

// dst[j] = sum_t w[j][t] * src[start[j] + t] for one row.  With at most 8
// taps, outputs in whole blocks of 8 are one 8-wide multiply of the
// (zero-padded) weights with 8 consecutive inputs, summed as the tree
// ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)) (AVX2: 8 outputs share
// one transpose-add); `src` must be readable (finite values) 8 floats past
// its end.  The remaining outputs sum their taps in order.
void horizontal_pass(const float* src, const AxisView& tx, float* dst, int64_t out_w) {
  const int64_t kx = tx.g.taps;
  const int64_t* xs = tx.start;
  int64_t j = 0;
  if (kx <= 8) {
    const float* w8 = tx.w8;
#if defined(__AVX2__)
    for (; j + 8 <= out_w; j += 8) {
      __m256 p[8];
      for (int q = 0; q < 8; ++q)
        p[q] = _mm256_mul_ps(_mm256_loadu_ps(src + xs[j + q]), _mm256_loadu_ps(w8 + (j + q) * 8));
      // transpose-add: lane q of the result is the tree sum of p[q]'s lanes
      const __m256 a01 = _mm256_hadd_ps(p[0], p[1]);
      const __m256 a23 = _mm256_hadd_ps(p[2], p[3]);
      const __m256 a45 = _mm256_hadd_ps(p[4], p[5]);
      const __m256 a67 = _mm256_hadd_ps(p[6], p[7]);
      const __m256 b0 = _mm256_hadd_ps(a01, a23);
      const __m256 b1 = _mm256_hadd_ps(a45, a67);
      const __m256 lo = _mm256_permute2f128_ps(b0, b1, 0x20);
      const __m256 hi = _mm256_permute2f128_ps(b0, b1, 0x31);
      _mm256_storeu_ps(dst + j, _mm256_add_ps(lo, hi));
    }
#else
    for (; j + 8 <= out_w; j += 8) {
      for (int q = 0; q < 8; ++q) {
        const float* a = src + xs[j + q];
        const float* w = w8 + (j + q) * 8;
        float pr[8];
        for (int l = 0; l < 8; ++l) pr[l] = a[l] * w[l];
        dst[j + q] = ((pr[0] + pr[1]) + (pr[2] + pr[3])) + ((pr[4] + pr[5]) + (pr[6] + pr[7]));
      }
    }
#endif
  }
  // The rest sums its taps in order.  Products of the first kx & ~3 taps
  // are rounded before they are added, the last kx mod 4 are fused into the
  // sum: the arithmetic of the build that recorded the golden bits (GCC's
  // in-order vectorized reduction, 8 and 4 products at a time, then a fused
  // scalar remainder), kept so the bits stay.
  const float* wx = tx.w;
  const int64_t kx4 = kx & ~int64_t{3};
  for (; j < out_w; ++j) {
    const float* a = src + xs[j];
    const float* w = wx + j * kx;
    float s = 0.0f;
    int64_t t = 0;
    for (; t < kx4; ++t) s += w[t] * a[t];
    for (; t < kx; ++t) s = fma_f(w[t], a[t], s);
    dst[j] = s;
  }
}

#if defined(__AVX2__) && defined(__FMA__)
// The uint8 vertical area sum in one pass over 64 columns at a time, the
// row sums held in registers (uint16: at most 257 rows of 255): acc =
// wf * sum(full rows), then acc = fma(w_e, edge row, acc) per edge row, the
// same operations as the whole-row loops.  Returns the columns done (a
// multiple of 64); the caller finishes the rest.
inline __m256 u8x8_to_ps(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

int64_t vertical_area_u8_avx2(const uint8_t* const* full_rows, int n_full, const uint8_t* const* edge_rows,
                              const float* edge_w, int n_edge, float wf, int64_t rw, float* acc) {
  constexpr int kB = 64;  // columns per block: 8 float accumulators
  const __m256 vwf = _mm256_set1_ps(wf);
  int64_t x = 0;
  for (; x + kB <= rw; x += kB) {
    __m256 f[8];
    if (n_full == 0) {
      for (int q = 0; q < 8; ++q) f[q] = _mm256_setzero_ps();
    } else {
      auto load16 = [](const uint8_t* p) {
        return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      };
      __m256i s[4];
      for (int q = 0; q < 4; ++q) s[q] = load16(full_rows[0] + x + 16 * q);
      int r = 1;
      for (; r + 2 <= n_full; r += 2) {  // rows in pairs (integer sums: any order is exact)
        const uint8_t* a = full_rows[r] + x;
        const uint8_t* b = full_rows[r + 1] + x;
        for (int q = 0; q < 4; ++q)
          s[q] = _mm256_add_epi16(s[q], _mm256_add_epi16(load16(a + 16 * q), load16(b + 16 * q)));
      }
      if (r < n_full)
        for (int q = 0; q < 4; ++q) s[q] = _mm256_add_epi16(s[q], load16(full_rows[r] + x + 16 * q));
      for (int q = 0; q < 4; ++q) {
        f[2 * q] = _mm256_mul_ps(vwf, _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(s[q]))));
        f[2 * q + 1] = _mm256_mul_ps(vwf, _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(s[q], 1))));
      }
    }
    for (int e = 0; e < n_edge; ++e) {
      const uint8_t* row = edge_rows[e] + x;
      const __m256 we = _mm256_set1_ps(edge_w[e]);
      for (int q = 0; q < 8; ++q) f[q] = _mm256_fmadd_ps(we, u8x8_to_ps(row + 8 * q), f[q]);
    }
    for (int q = 0; q < 8; ++q) _mm256_storeu_ps(acc + x + 8 * q, f[q]);
  }
  return x;
}
#endif

// Vertical area pass for gray frames: the rows fully inside an output row's
// box all carry the weight 1/s, so they are summed as integers (16 lanes of
// uint16 per AVX2 add for uint8 input) and converted once; only the two
// partial rows at the box edges go through float.  Output row `acc` gets
// sum_t w_t * row_t / max_value, as the generic path computes.
//
// vertical_area_rows does the arithmetic over columns [0, rw) of rows that
// are contiguous in memory.  Each column's result depends only on that
// column's values (integer sums are exact in any order; the float steps are
// the same per column).
template <typename T>
void vertical_area_rows(const T* const* full_rows, int n_full, const T* const* edge_rows, const float* edge_w,
                        int n_edge, float wf, int64_t rw, float* acc, uint32_t* isum) {
  using Acc = typename std::conditional<sizeof(T) == 1, uint16_t, uint32_t>::type;
  int64_t x0 = 0;
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (sizeof(T) == 1) {
    x0 = vertical_area_u8_avx2(reinterpret_cast<const uint8_t* const*>(full_rows), n_full,
                               reinterpret_cast<const uint8_t* const*>(edge_rows), edge_w, n_edge, wf, rw, acc);
  }
#endif
  if (x0 == rw) return;
  // whole-row passes over [x0, rw): long unit-stride loops vectorize with little overhead
  Acc* sum = reinterpret_cast<Acc*>(isum);
  if (n_full == 0) {
    for (int64_t x = x0; x < rw; ++x) acc[x] = 0.0f;
  } else {
    const T* r0 = full_rows[0];
    for (int64_t x = x0; x < rw; ++x) sum[x] = r0[x];
    for (int r = 1; r < n_full; ++r) {
      const T* row = full_rows[r];
      for (int64_t x = x0; x < rw; ++x) sum[x] = static_cast<Acc>(sum[x] + row[x]);
    }
    for (int64_t x = x0; x < rw; ++x) acc[x] = wf * static_cast<float>(sum[x]);
  }
  for (int e = 0; e < n_edge; ++e) {
    const T* row = edge_rows[e];
    const float we = edge_w[e];
#if defined(__SSE4_1__) && !defined(__FMA__)
    float conv[256];  // the row as floats, a block at a time, for the 4-wide fma
    for (int64_t xb = x0; xb < rw; xb += 256) {
      const int64_t n = std::min<int64_t>(256, rw - xb);
      for (int64_t x = 0; x < n; ++x) conv[x] = static_cast<float>(row[xb + x]);
      fma_row(we, conv, acc + xb, 0, n);
    }
#else
    for (int64_t x = x0; x < rw; ++x) acc[x] = fma_f(we, static_cast<float>(row[x]), acc[x]);
#endif
  }
}

// Columns per block of the strided form: a multiple of the 64-column vector
// block, so every column falls on the same side of the vector / scalar split
// as in the unit-stride form, and results are bit-identical for any layout.
constexpr int64_t kGatherCols = 256;

// Rows of any column stride: unit stride runs in place; any other stride
// (flips, Fortran order, transposed views, step slices) copies the window's
// rows kGatherCols columns at a time into contiguous blocks and runs the same
// code on each block.  Returns false (generic path) for windows the integer
// sums do not cover.
template <typename T>
bool vertical_area_gray(const T* origin, int64_t stride_h, int64_t stride_w, int64_t rw, const AxisView& ty,
                        int64_t i, float scale, float* acc, Workspace& ws) {
  const int64_t ky = ty.g.taps;
  const float* wy = &ty.w[i * ky];
  const float wfull = static_cast<float>(1.0 / ty.g.scale);
  const T* full_rows[512];
  int n_full = 0;
  const T* edge_rows[4];
  float edge_w[4];
  int n_edge = 0;
  for (int64_t t = 0; t < ky; ++t) {
    if (wy[t] == 0.0f) continue;
    const T* row = origin + (ty.start[i] + t) * stride_h;
    if (wy[t] == wfull && n_full < 512) {
      full_rows[n_full++] = row;
    } else {
      if (n_edge == 4) return false;
      edge_rows[n_edge] = row;
      edge_w[n_edge++] = wy[t] * scale;
    }
  }
  if (sizeof(T) == 1 && n_full > 257) return false;  // uint16 sums of uint8 must not overflow
  const float wf = wfull * scale;
  uint32_t* isum = ws.isum(static_cast<size_t>(rw));
  if (stride_w == 1) {
    vertical_area_rows<T>(full_rows, n_full, edge_rows, edge_w, n_edge, wf, rw, acc, isum);
    return true;
  }
  const int n_rows = n_full + n_edge;
  T* block = reinterpret_cast<T*>(
      ws.bytes(Workspace::kGather, static_cast<size_t>(n_rows * kGatherCols) * sizeof(T)));
  const T* block_full[512];
  const T* block_edge[4];
  for (int64_t xb = 0; xb < rw; xb += kGatherCols) {
    const int64_t bw = std::min(kGatherCols, rw - xb);
    for (int r = 0; r < n_rows; ++r) {
      const T* src = (r < n_full ? full_rows[r] : edge_rows[r - n_full]) + xb * stride_w;
      T* dst = block + r * kGatherCols;
      if (stride_w == -1) {  // flipped frames: a constant step the compiler vectorizes
        for (int64_t x = 0; x < bw; ++x) dst[x] = src[-x];
      } else {
        for (int64_t x = 0; x < bw; ++x) dst[x] = src[x * stride_w];
      }
      (r < n_full ? block_full[r] : block_edge[r - n_full]) = dst;
    }
    vertical_area_rows<T>(block_full, n_full, block_edge, edge_w, n_edge, wf, bw, acc + xb, isum);
  }
  return true;
}

}  // namespace

template <typename T>
void resize_frame(const T* frame, const FrameBatch& in, const PreprocessParams& p, int64_t rx, int64_t ry,
                  int64_t rw, const AxisView& ty, const AxisView& tx, const LumaCoeffs& k, Workspace& ws,
                  float* img, int64_t wp) {
  ws.reset_rows();
  // +8: the vector horizontal pass reads up to 8 floats past a row (zero
  // weights there; the values are always finite leftovers or zeros)
  float* cache[2] = {ws.floats(Workspace::kRow0, static_cast<size_t>(rw + 8)),
                     ws.floats(Workspace::kRow1, static_cast<size_t>(rw + 8))};
  float* acc = ws.floats(Workspace::kAcc, static_cast<size_t>(rw + 8));
  const T* origin = frame + ry * in.stride_h + rx * in.stride_w;

  auto get_row = [&](int64_t r) -> const float* {
    for (int s = 0; s < 2; ++s)
      if (ws.row_id[s] == r) return cache[s];
    const int s = ws.next_slot;
    ws.next_slot ^= 1;
    convert_row(origin + r * in.stride_h, rw, in.stride_w, in.stride_c, in.c, k, cache[s]);
    ws.row_id[s] = r;
    return cache[s];
  };

  const int64_t ky = ty.g.taps;
  const bool gray_area = in.c == 1 && ty.g.mode == 1;
  for (int64_t i = 0; i < p.out_h; ++i) {
    const float* wy = &ty.w[i * ky];
    const float* src_row = nullptr;
    if (gray_area && vertical_area_gray<T>(origin, in.stride_h, in.stride_w, rw, ty, i, k.gray, acc, ws)) {
      src_row = acc;
    } else if (ty.g.mode == 0 || ky == 1) {
      src_row = get_row(ty.start[i]);  // one tap of weight 1
    } else {
      bool first = true;
      for (int64_t t = 0; t < ky; ++t) {
        const float w = wy[t];
        if (w == 0.0f) continue;
        const float* row = get_row(ty.start[i] + t);
        if (first) {
          for (int64_t x = 0; x < rw; ++x) acc[x] = w * row[x];
          first = false;
        } else {
          fma_row(w, row, acc, 0, rw);
        }
      }
      if (first)
        for (int64_t x = 0; x < rw; ++x) acc[x] = 0.0f;
      src_row = acc;
    }
    float* dst = img + (i + kPad) * wp + kPad;
    if (tx.g.mode == 0) {
      std::memcpy(dst, src_row, sizeof(float) * static_cast<size_t>(p.out_w));
    } else {
      horizontal_pass(src_row, tx, dst, p.out_w);
    }
  }
}

template void resize_frame<uint8_t>(const uint8_t*, const FrameBatch&, const PreprocessParams&, int64_t, int64_t,
                                    int64_t, const AxisView&, const AxisView&, const LumaCoeffs&, Workspace&, float*,
                                    int64_t);
template void resize_frame<uint16_t>(const uint16_t*, const FrameBatch&, const PreprocessParams&, int64_t, int64_t,
                                     int64_t, const AxisView&, const AxisView&, const LumaCoeffs&, Workspace&, float*,
                                     int64_t);

}  // namespace TF_CPU_VARIANT
}  // namespace cpu
}  // namespace thyrofast
