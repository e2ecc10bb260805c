// CPU implementation of preprocessing spec v1 (see thyrofast/preprocess.h).
//
// One frame at a time per thread, in a per-thread workspace: the fused
// crop + luma + separable resize streams input rows through a two-row cache
// into the padded working image; denoise and normalization then run on that
// image while it is still in L2.  Frames are independent, so results do not
// depend on the thread count.
#include <algorithm>
#include <type_traits>
#include <cmath>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

#include "preprocess_math.h"
#include "thyrofast/preprocess.h"

namespace thyrofast {
namespace {

using detail::AxisGeometry;
using detail::LumaCoeffs;

constexpr int64_t kPad = 2;  // replicated border around the working image (median5 needs 2)

struct AxisTable {
  AxisGeometry g;
  std::vector<int64_t> start;
  std::vector<float> w;   // out_len x taps
  std::vector<float> w8;  // out_len x 8, zero-padded (when taps <= 8)
};

AxisTable build_axis(int64_t in_len, int64_t out_len) {
  AxisTable t;
  t.g = detail::axis_geometry(in_len, out_len);
  t.start.resize(static_cast<size_t>(out_len));
  // taps <= in_len <= kMaxFrameSide (validate), so the table stays about in_len + 2 out_len floats
  t.w.assign(static_cast<size_t>(out_len * t.g.taps), 0.0f);
  for (int64_t i = 0; i < out_len; ++i) t.start[i] = detail::axis_taps(t.g, i, &t.w[i * t.g.taps]);
  if (t.g.taps <= 8) {
    t.w8.assign(static_cast<size_t>(out_len * 8), 0.0f);
    for (int64_t i = 0; i < out_len; ++i)
      for (int64_t q = 0; q < t.g.taps; ++q) t.w8[i * 8 + q] = t.w[i * t.g.taps + q];
  }
  return t;
}

// The tables depend only on (in_len, out_len); a video stream resizes every
// frame with the same geometry, so each calling thread keeps the last table
// per axis (`slot`: 0 rows, 1 columns) and rebuilds it only when the
// geometry changes.  OpenMP workers only read it during the call.
const AxisTable& cached_axis(int slot, int64_t in_len, int64_t out_len) {
  thread_local AxisTable cache[2];
  thread_local bool valid[2] = {false, false};
  AxisTable& t = cache[slot];
  if (!valid[slot] || t.g.in_len != in_len || t.g.out_len != out_len) {
    valid[slot] = false;  // stays invalid if building throws
    t = build_axis(in_len, out_len);
    valid[slot] = true;
  }
  return t;
}

struct Workspace {
  std::vector<float> row_cache[2];
  int64_t row_id[2] = {-1, -1};
  int next_slot = 0;
  std::vector<float> acc;
  std::vector<uint32_t> isum;  // integer row sums (vertical area pass)
  std::vector<unsigned char> gather;  // strided input rows copied contiguous (vertical area pass)
  std::vector<float> img_a, img_b;  // padded working images
  std::vector<float> coef;          // SRAD coefficients: two rows
  std::vector<float> scratch;  // selection candidates
  std::vector<int32_t> hist;
  std::vector<uint8_t> bins;

  void reset_rows() {
    row_id[0] = row_id[1] = -1;
    next_slot = 0;
  }
};

Workspace& thread_workspace() {
  thread_local Workspace ws;
  return ws;
}

template <typename T>
inline float luma3(const LumaCoeffs& k, const T* p, int64_t sc) {
  return k.r * static_cast<float>(p[0]) + k.g * static_cast<float>(p[sc]) + k.b * static_cast<float>(p[2 * sc]);
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

// dst[j] = sum_t w[j][t] * src[start[j] + t] for one row.  With AVX and at
// most 8 taps, each output is one 8-wide multiply of the (zero-padded)
// weights with 8 consecutive inputs, and 8 outputs share one transpose-add;
// `src` must be readable (finite values) 8 floats past its end.
void horizontal_pass(const float* src, const AxisTable& tx, float* dst, int64_t out_w) {
  const int64_t kx = tx.g.taps;
  const int64_t* xs = tx.start.data();
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  if (kx <= 8) {
    const float* w8 = tx.w8.data();
    for (; j + 8 <= out_w; j += 8) {
      __m256 p[8];
      for (int q = 0; q < 8; ++q)
        p[q] = _mm256_mul_ps(_mm256_loadu_ps(src + xs[j + q]), _mm256_loadu_ps(w8 + (j + q) * 8));
      // transpose-add: lane q of the result is the sum of p[q]'s lanes
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
  }
#endif
  const float* wx = tx.w.data();
  for (; j < out_w; ++j) {
    const float* a = src + xs[j];
    const float* w = wx + j * kx;
    float s = 0.0f;
    for (int64_t t = 0; t < kx; ++t) s += w[t] * a[t];
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
// the same per column), and the vector body covers whole 64-column blocks.
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
    std::fill(acc + x0, acc + rw, 0.0f);
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
    for (int64_t x = x0; x < rw; ++x) acc[x] += we * static_cast<float>(row[x]);
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
bool vertical_area_gray(const T* origin, int64_t stride_h, int64_t stride_w, int64_t rw, const AxisTable& ty,
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
  uint32_t* isum = ws.isum.data();
  if (stride_w == 1) {
    vertical_area_rows<T>(full_rows, n_full, edge_rows, edge_w, n_edge, wf, rw, acc, isum);
    return true;
  }
  const int n_rows = n_full + n_edge;
  const size_t need = static_cast<size_t>(n_rows * kGatherCols) * sizeof(T);
  if (ws.gather.size() < need) ws.gather.resize(need);
  T* block = reinterpret_cast<T*>(ws.gather.data());
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

// Crop + luma + resize of one frame into the interior of a padded image of
// row stride `wp` (out_w + 2 * kPad).
template <typename T>
void resize_frame(const T* frame, const FrameBatch& in, const PreprocessParams& p, int64_t rx, int64_t ry,
                  int64_t rw, const AxisTable& ty, const AxisTable& tx, const LumaCoeffs& k, Workspace& ws,
                  float* img, int64_t wp) {
  ws.reset_rows();
  // +8: the vector horizontal pass reads up to 8 floats past a row (zero
  // weights there; the values are always finite leftovers or zeros)
  for (int s = 0; s < 2; ++s)
    if (ws.row_cache[s].size() < static_cast<size_t>(rw + 8)) ws.row_cache[s].resize(rw + 8);
  if (ws.acc.size() < static_cast<size_t>(rw + 8)) ws.acc.resize(rw + 8);
  if (ws.isum.size() < static_cast<size_t>(rw)) ws.isum.resize(rw);
  const T* origin = frame + ry * in.stride_h + rx * in.stride_w;

  auto get_row = [&](int64_t r) -> const float* {
    for (int s = 0; s < 2; ++s)
      if (ws.row_id[s] == r) return ws.row_cache[s].data();
    const int s = ws.next_slot;
    ws.next_slot ^= 1;
    convert_row(origin + r * in.stride_h, rw, in.stride_w, in.stride_c, in.c, k, ws.row_cache[s].data());
    ws.row_id[s] = r;
    return ws.row_cache[s].data();
  };

  const int64_t ky = ty.g.taps;
  float* acc = ws.acc.data();
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
          for (int64_t x = 0; x < rw; ++x) acc[x] += w * row[x];
        }
      }
      if (first) std::fill(acc, acc + rw, 0.0f);
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

// Replicate the outermost `pad` rings of the padded image from its interior.
void replicate_border(float* img, int64_t h, int64_t w, int64_t wp, int64_t pad) {
  for (int64_t i = 0; i < h; ++i) {
    float* row = img + (i + kPad) * wp;
    for (int64_t q = 1; q <= pad; ++q) {
      row[kPad - q] = row[kPad];
      row[kPad + w - 1 + q] = row[kPad + w - 1];
    }
  }
  for (int64_t q = 1; q <= pad; ++q) {
    std::memcpy(img + (kPad - q) * wp, img + kPad * wp, sizeof(float) * static_cast<size_t>(wp));
    std::memcpy(img + (kPad + h - 1 + q) * wp, img + (kPad + h - 1) * wp, sizeof(float) * static_cast<size_t>(wp));
  }
}

template <int R>
void median_filter(const float* src, float* dst, int64_t h, int64_t w, int64_t wp) {
  constexpr int K = (2 * R + 1) * (2 * R + 1);
  for (int64_t i = 0; i < h; ++i) {
    const float* rows[2 * R + 1];
    for (int d = -R; d <= R; ++d) rows[d + R] = src + (i + kPad + d) * wp + kPad;
    float* out = dst + (i + kPad) * wp + kPad;
    for (int64_t j = 0; j < w; ++j) {
      float v[K];
      int n = 0;
      for (int dy = 0; dy < 2 * R + 1; ++dy)
        for (int dx = -R; dx <= R; ++dx) v[n++] = rows[dy][j + dx];
      out[j] = detail::median_of<K>(v);
    }
  }
}

#if defined(__AVX2__)
// Folds the 8 lanes of running minima / maxima into a / b (lane order, so the
// result matches a scalar pass over the same values).
inline void fold_min_max8(__m256 mn, __m256 mx, float& a, float& b) {
  float lmn[8], lmx[8];
  _mm256_storeu_ps(lmn, mn);
  _mm256_storeu_ps(lmx, mx);
  for (int l = 0; l < 8; ++l) {
    a = detail::min_f(a, lmn[l]);
    b = detail::max_f(b, lmx[l]);
  }
}
#endif

// Min and max of v[0..n).
void min_max(const float* v, int64_t n, float* vmin_out, float* vmax_out) {
  float a = v[0], b = v[0];
  int64_t i = 0;
#if defined(__AVX2__)
  if (n >= 8) {
    __m256 mn = _mm256_loadu_ps(v), mx = mn;
    for (i = 8; i + 8 <= n; i += 8) {
      const __m256 x = _mm256_loadu_ps(v + i);
      mn = _mm256_min_ps(mn, x);
      mx = _mm256_max_ps(mx, x);
    }
    fold_min_max8(mn, mx, a, b);
  }
#endif
  for (; i < n; ++i) {
    a = detail::min_f(a, v[i]);
    b = detail::max_f(b, v[i]);
  }
  *vmin_out = a;
  *vmax_out = b;
}

// Index of the lowest set bit of m != 0.
inline int lowest_bit(uint32_t m) {
#if defined(_MSC_VER) && !defined(__clang__)
  unsigned long i;
  _BitScanForward(&i, m);
  return static_cast<int>(i);
#else
  return __builtin_ctz(m);
#endif
}

// Value bins of the CPU selection: 256, so a bin index is one byte and the
// SIMD passes over the bins take 32 per step (the CUDA path keeps
// detail::kSelectBins).  Any monotone binning gives the same order
// statistics; fewer bins only mean more candidates in the wanted bins.
constexpr int kCpuBins = 256;

inline int cpu_bin(float v, float vmin, float bin_scale) {
  const float t = (v - vmin) * bin_scale;
  int b = static_cast<int>(t);
  b = b < 0 ? 0 : b;
  return b > kCpuBins - 1 ? kCpuBins - 1 : b;
}

// bins[i] = cpu_bin(v[i]) for all i.
void compute_bins(const float* v, int64_t n, float vmin, float scale, uint8_t* bins) {
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256 vm = _mm256_set1_ps(vmin), sc = _mm256_set1_ps(scale);
  const __m256i top = _mm256_set1_epi32(kCpuBins - 1);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (; i + 32 <= n; i += 32) {
    __m256i b[4];
    for (int q = 0; q < 4; ++q)  // negatives (and NaN's INT_MIN) saturate to 0 in the packs below
      b[q] = _mm256_min_epi32(
          _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(v + i + 8 * q), vm), sc)), top);
    // 4 x 8 int32 -> 32 uint8; the packs interleave 4-byte groups per 128-bit lane, the permute restores order
    const __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(b[0], b[1]), _mm256_packus_epi32(b[2], b[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(bins + i), _mm256_permutevar8x32_epi32(p, order));
  }
#endif
  for (; i < n; ++i) bins[i] = static_cast<uint8_t>(cpu_bin(v[i], vmin, scale));
}

// Exact order statistics `ranks` (ascending, each in [0, n)) of v[0..n).
// One pass assigns each value a bin of a value histogram (a monotone map),
// the prefix sums name the bin holding each wanted rank, and a selection
// runs only among that bin's few values.  The result is the order statistic
// itself, so it does not depend on how it was found.  This form takes the
// min and max of v[0..n), already known; select_ranks below finds them.
void select_ranks_in(const float* v, int64_t n, float vmin, float vmax, const int64_t* ranks, int m, float* out,
                     Workspace& ws) {
  if (!(vmax > vmin)) {
    for (int q = 0; q < m; ++q) out[q] = vmin;
    return;
  }
  constexpr int kBins = kCpuBins;
  const float scale = static_cast<float>(kBins) / (vmax - vmin);
  if (ws.bins.size() < static_cast<size_t>(n)) ws.bins.resize(n);
  uint8_t* bins = ws.bins.data();
  compute_bins(v, n, vmin, scale, bins);
  // four sub-histograms cut store-to-load stalls on runs of equal bins
  ws.hist.assign(4 * (kBins + 1), 0);
  int32_t* h0 = ws.hist.data();
  int32_t* h1 = h0 + (kBins + 1);
  int32_t* h2 = h1 + (kBins + 1);
  int32_t* h3 = h2 + (kBins + 1);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    ++h0[bins[i]];
    ++h1[bins[i + 1]];
    ++h2[bins[i + 2]];
    ++h3[bins[i + 3]];
    ++h0[bins[i + 4]];
    ++h1[bins[i + 5]];
    ++h2[bins[i + 6]];
    ++h3[bins[i + 7]];
  }
  for (; i < n; ++i) ++h0[bins[i]];
  // exclusive prefix: h0[b] = count of values in bins < b
  int32_t run = 0;
  for (int b = 0; b <= kBins; ++b) {
    const int32_t c = h0[b] + h1[b] + h2[b] + h3[b];
    h0[b] = run;
    run += c;
  }
  int want[8];
  int nwant = 0;
  int bin_of[8];
  for (int q = 0; q < m; ++q) {
    const int b = static_cast<int>(std::upper_bound(h0, h0 + kBins + 1, static_cast<int32_t>(ranks[q])) - h0) - 1;
    bin_of[q] = b;
    bool seen = false;
    for (int k = 0; k < nwant; ++k) seen = seen || want[k] == b;
    if (!seen) want[nwant++] = b;
  }
  // gather each wanted bin's values into its own slice of the scratch buffer
  int64_t offset[8], fill[8], total = 0;
  for (int k = 0; k < nwant; ++k) {
    offset[k] = total;
    fill[k] = 0;
    total += h0[want[k] + 1] - h0[want[k]];
  }
  if (ws.scratch.size() < static_cast<size_t>(total)) ws.scratch.resize(total);
  float* cand = ws.scratch.data();
  auto take = [&](int64_t j) {
    const int b = bins[j];
    for (int k = 0; k < nwant; ++k)
      if (b == want[k]) cand[offset[k] + fill[k]++] = v[j];
  };
  int64_t j = 0;
#if defined(__AVX2__)
  // 32 bins per step; only blocks holding a wanted bin go to the scalar path
  __m256i wv[8];
  for (int k = 0; k < nwant; ++k) wv[k] = _mm256_set1_epi8(static_cast<char>(want[k]));
  for (; j + 32 <= n; j += 32) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bins + j));
    __m256i hit = _mm256_cmpeq_epi8(b, wv[0]);
    for (int k = 1; k < nwant; ++k) hit = _mm256_or_si256(hit, _mm256_cmpeq_epi8(b, wv[k]));
    uint32_t mask = static_cast<uint32_t>(_mm256_movemask_epi8(hit));
    while (mask != 0) {  // only the hits, in index order
      take(j + lowest_bit(mask));
      mask &= mask - 1;
    }
  }
#endif
  for (; j < n; ++j) take(j);
  for (int q = 0; q < m; ++q) {
    int k = 0;
    while (want[k] != bin_of[q]) ++k;
    float* first = cand + offset[k];
    const int64_t local = ranks[q] - h0[bin_of[q]];
    std::nth_element(first, first + local, first + fill[k]);
    out[q] = first[local];
  }
}

void select_ranks(const float* v, int64_t n, const int64_t* ranks, int m, float* out, Workspace& ws) {
  float vmin, vmax;
  min_max(v, n, &vmin, &vmax);
  select_ranks_in(v, n, vmin, vmax, ranks, m, out, ws);
}

// Copy the interior of the padded image (h x w, row stride wp) into dst,
// unpadded, taking its min and max on the way (one pass instead of two).
void copy_min_max(const float* img, int64_t h, int64_t w, int64_t wp, float* dst, float* vmin_out, float* vmax_out) {
  float a = img[kPad * wp + kPad], b = a;
#if defined(__AVX2__)
  __m256 mn = _mm256_set1_ps(a), mx = mn;
#endif
  for (int64_t i = 0; i < h; ++i) {
    const float* row = img + (i + kPad) * wp + kPad;
    float* d = dst + i * w;
    int64_t j = 0;
#if defined(__AVX2__)
    for (; j + 8 <= w; j += 8) {
      const __m256 x = _mm256_loadu_ps(row + j);
      _mm256_storeu_ps(d + j, x);
      mn = _mm256_min_ps(mn, x);
      mx = _mm256_max_ps(mx, x);
    }
#endif
    for (; j < w; ++j) {
      d[j] = row[j];
      a = detail::min_f(a, row[j]);
      b = detail::max_f(b, row[j]);
    }
  }
#if defined(__AVX2__)
  fold_min_max8(mn, mx, a, b);
#endif
  *vmin_out = a;
  *vmax_out = b;
}

// ------------------------------------------------------------------ SRAD ---
// Row kernels over interior rows of a padded image whose 1-ring border is
// valid.  The scalar loops evaluate the preprocess_math.h functions (the
// spec the CUDA kernel shares); with AVX2 + FMA the body of each row runs 8
// pixels per step with the same operations (FMA contraction aside), and the
// scalar loop finishes the row.

#if defined(__AVX2__) && defined(__FMA__)
struct SradQ2x8 {
  __m256 num, den;
};

// detail::srad_q2_frac for 8 pixels given as values; *dn_out gets jn - jc
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

// detail::srad_coeff for 8 pixels (min_ps(1, c) is min_f(c, 1), NaN included)
inline __m256 srad_coeff8(SradQ2x8 q, __m256 inv_den, __m256 k) {
  const __m256 c = _mm256_div_ps(q.den, _mm256_fmadd_ps(q.num, inv_den, _mm256_mul_ps(q.den, k)));
  return _mm256_min_ps(_mm256_set1_ps(1.0f), c);
}
#endif

// q2[j] = q^2 at (row rc, column j)
void srad_q2_row(const float* rc, const float* rn, const float* rs, int64_t w, float* q2) {
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; j + 8 <= w; j += 8) {
    const SradQ2x8 q = srad_q2_frac8(rc, rn, rs, j);
    _mm256_storeu_ps(q2 + j, _mm256_div_ps(q.num, q.den));
  }
#endif
  for (; j < w; ++j) q2[j] = detail::srad_q2(rc[j], rn[j], rs[j], rc[j - 1], rc[j + 1]);
}

// c[j] = diffusion coefficient at (row rc, column j); c[w] = c[w - 1]
// (replicated edge)
void srad_coeff_row(const float* rc, const float* rn, const float* rs, int64_t w, detail::SradCoeffK k, float* c) {
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 vinv = _mm256_set1_ps(k.inv_den), vk = _mm256_set1_ps(k.k);
  for (; j + 8 <= w; j += 8) _mm256_storeu_ps(c + j, srad_coeff8(srad_q2_frac8(rc, rn, rs, j), vinv, vk));
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

#if defined(__AVX2__) && defined(__FMA__)
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
  // update of row i: srad_update's c_c (dn + dw) + c_s ds + c_e de, in that
  // order; row i's south diff b - up is exactly -dn
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
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 vinv = _mm256_set1_ps(k.inv_den), vk = _mm256_set1_ps(k.k), ql = _mm256_set1_ps(quarter_lambda);
  for (; j + 16 <= w; j += 16) srad_step_blocks<2>(r0, r1, r2, r3, cc, cn, j, vinv, vk, ql, out);
  for (; j + 8 <= w; j += 8) srad_step_blocks<1>(r0, r1, r2, r3, cc, cn, j, vinv, vk, ql, out);
#endif
  for (; j < w; ++j) {
    cn[j] = detail::srad_coeff(detail::srad_q2_frac(r2[j], r1[j], r3[j], r2[j - 1], r2[j + 1]), k);
    out[j] = detail::srad_update(r1[j], r0[j], r2[j], r1[j - 1], r1[j + 1], cc[j], cn[j], cc[j + 1], quarter_lambda);
  }
  cn[w] = cn[w - 1];
}

#if defined(__AVX2__) && defined(__FMA__)
// detail::exp_f and detail::log_f for 8 floats, operation for operation:
// bit-identical to GCC's auto-vectorized loops over them for every non-NaN
// input (checked over all 2^32 bit patterns), in about half the instructions
// (GCC's if-conversion of their clamps and selects duplicated work)
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

void exp_row(float* r, int64_t w) {
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; j + 8 <= w; j += 8) _mm256_storeu_ps(r + j, exp8(_mm256_loadu_ps(r + j)));
#endif
  for (; j < w; ++j) r[j] = detail::exp_f(r[j]);
}

void log_row(float* r, int64_t w) {
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; j + 8 <= w; j += 8) _mm256_storeu_ps(r + j, log8(_mm256_loadu_ps(r + j)));
#endif
  for (; j < w; ++j) r[j] = detail::log_f(r[j]);
}

// SRAD on the interior of `a` (h x w, row stride wp); the result ends in
// `a` for an even iteration count, else in `b`.  Each iteration is one
// streaming pass: the coefficient row below is computed just before the row
// is updated, so coefficients live in two L1-sized rows, and the borders of
// each output row are replicated as it is written.  exp is fused into the
// q^2 pass that sets the speckle scale and log into the last update.
void srad(float* a, float* b, Workspace& ws, int64_t h, int64_t w, int64_t wp, const PreprocessParams& p) {
  const int64_t wc = (w + 1 + 15) & ~int64_t{15};  // coefficient row stride (w + 1 used)
  if (ws.coef.size() < static_cast<size_t>(2 * wc)) ws.coef.resize(2 * wc);
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
    float* c0 = ws.coef.data();
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
      f.clip = 1;
      f.lo = vlo;
      f.a = (vhi - vlo) < 1e-6f ? 0.0f : 1.0f / (vhi - vlo);
      if (f.a == 0.0f) f.lo = 0.0f;
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
      f.clip = 1;
      f.lo = vmin;
      f.a = (vmax - vmin) < 1e-6f ? 0.0f : 1.0f / (vmax - vmin);
      if (f.a == 0.0f) f.lo = 0.0f;
      return f;
    }
    case Normalize::zscore: {
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
      const double sd = std::sqrt(ss / static_cast<double>(n));
      f.clip = 0;
      if (sd < 1e-6) {
        f.lo = 0.0f;
        f.a = 0.0f;
      } else {
        f.lo = static_cast<float>(mean);
        f.a = static_cast<float>(1.0 / sd);
      }
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

template <typename T>
void process_frame(const FrameBatch& in, const PreprocessParams& p, const AxisTable& ty, const AxisTable& tx,
                   const LumaCoeffs& k, void* out, int64_t f) {
  Workspace& ws = thread_workspace();
  const int64_t h = p.out_h, w = p.out_w, wp = w + 2 * kPad;
  const size_t img_size = static_cast<size_t>((h + 2 * kPad) * wp);
  if (ws.img_a.size() < img_size) ws.img_a.resize(img_size);
  if (ws.img_b.size() < img_size) ws.img_b.resize(img_size);
  float* a = ws.img_a.data();
  float* b = ws.img_b.data();
  const int64_t rx = p.has_roi ? p.roi_x : 0, ry = p.has_roi ? p.roi_y : 0;
  const int64_t rw = p.has_roi ? p.roi_w : in.w;
  const T* frame = static_cast<const T*>(in.data) + f * in.stride_n;
  resize_frame<T>(frame, in, p, rx, ry, rw, ty, tx, k, ws, a, wp);
  float* img = a;
  switch (p.denoise) {
    case Denoise::none:
      break;
    case Denoise::median3:
      replicate_border(a, h, w, wp, 1);
      median_filter<1>(a, b, h, w, wp);
      img = b;
      break;
    case Denoise::median5:
      replicate_border(a, h, w, wp, 2);
      median_filter<2>(a, b, h, w, wp);
      img = b;
      break;
    case Denoise::srad:
      if (p.srad_iterations > 0) {
        srad(a, b, ws, h, w, wp, p);
        img = (p.srad_iterations % 2 == 0) ? a : b;
      }
      break;
  }
  const detail::FrameAffine fa = frame_affine(img, img == a ? b : a, h, w, wp, p, ws);
  write_output(img, h, w, wp, fa, p, out, f);
}

template <typename T>
void run_cpu(const FrameBatch& in, const PreprocessParams& p, void* out, int threads) {
  const int64_t rh = p.has_roi ? p.roi_h : in.h, rw = p.has_roi ? p.roi_w : in.w;
  const AxisTable& ty = cached_axis(0, rh, p.out_h);
  const AxisTable& tx = cached_axis(1, rw, p.out_w);
  const double max_value = p.max_value > 0.0 ? p.max_value : (in.type == PixelType::u8 ? 255.0 : 65535.0);
  const LumaCoeffs k = detail::luma_coeffs(max_value, p.channel_order == ChannelOrder::bgr);
#ifdef _OPENMP
  int nt = threads > 0 ? threads : omp_get_num_procs();
  if (nt > in.n) nt = static_cast<int>(in.n);
  if (nt > 1) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t f = 0; f < in.n; ++f) process_frame<T>(in, p, ty, tx, k, out, f);
    return;
  }
#else
  (void)threads;
#endif
  for (int64_t f = 0; f < in.n; ++f) process_frame<T>(in, p, ty, tx, k, out, f);
}

}  // namespace

void preprocess_cpu(const FrameBatch& in, const PreprocessParams& p, void* out, int threads) {
  validate(in, p);
  if (out == nullptr) throw std::invalid_argument("output pointer is null");
  // one dispatch switch over the input pixel type
  switch (in.type) {
    case PixelType::u8:
      run_cpu<uint8_t>(in, p, out, threads);
      break;
    case PixelType::u16:
      run_cpu<uint16_t>(in, p, out, threads);
      break;
  }
}

}  // namespace thyrofast
