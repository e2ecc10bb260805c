// Min / max and exact order statistics (SRAD's median of q^2, the
// percentile normalization).  Compiled once per CPU variant
// (cpu_internal.h).  Min and max are taken in 8 running lanes folded in lane
// order on every variant (AVX2 registers, or arrays of 8 the baseline
// compiler vectorizes), so even the sign of a zero comes out the same.
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

#include "cpu_internal.h"

namespace thyrofast {
namespace cpu {
namespace TF_CPU_VARIANT {
namespace {

using detail::max_f;
using detail::min_f;

// 8 running minima / maxima; lane l sees the values at indices = l mod 8 of
// the blocks fed to it.  min / max here are MINPS / MAXPS: min(acc, x) keeps
// acc only when acc < x (min_f(x, acc)).
struct MinMax8 {
#if defined(__AVX2__)
  __m256 mn, mx;
  explicit MinMax8(float a) : mn(_mm256_set1_ps(a)), mx(mn) {}
  void load_first(const float* v) {
    mn = _mm256_loadu_ps(v);
    mx = mn;
  }
  void add(const float* v) {
    const __m256 x = _mm256_loadu_ps(v);
    mn = _mm256_min_ps(mn, x);
    mx = _mm256_max_ps(mx, x);
  }
  // folds the lanes into a / b, in lane order (as a scalar pass over them)
  void fold(float& a, float& b) const {
    float lmn[8], lmx[8];
    _mm256_storeu_ps(lmn, mn);
    _mm256_storeu_ps(lmx, mx);
    for (int l = 0; l < 8; ++l) {
      a = min_f(a, lmn[l]);
      b = max_f(b, lmx[l]);
    }
  }
#else
  float mn[8], mx[8];
  explicit MinMax8(float a) {
    for (int l = 0; l < 8; ++l) mn[l] = mx[l] = a;
  }
  void load_first(const float* v) {
    for (int l = 0; l < 8; ++l) mn[l] = mx[l] = v[l];
  }
  void add(const float* v) {
    for (int l = 0; l < 8; ++l) {
      mn[l] = min_f(v[l], mn[l]);
      mx[l] = max_f(v[l], mx[l]);
    }
  }
  void fold(float& a, float& b) const {
    for (int l = 0; l < 8; ++l) {
      a = min_f(a, mn[l]);
      b = max_f(b, mx[l]);
    }
  }
#endif
};

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

}  // namespace

// Min and max of v[0..n).
void min_max(const float* v, int64_t n, float* vmin_out, float* vmax_out) {
  float a = v[0], b = v[0];
  int64_t i = 0;
  if (n >= 8) {
    MinMax8 m(a);
    m.load_first(v);
    for (i = 8; i + 8 <= n; i += 8) m.add(v + i);
    m.fold(a, b);
  }
  for (; i < n; ++i) {
    a = min_f(a, v[i]);
    b = max_f(b, v[i]);
  }
  *vmin_out = a;
  *vmax_out = b;
}

// Copy the interior of the padded image (h x w, row stride wp) into dst,
// unpadded, taking its min and max on the way (one pass instead of two).
void copy_min_max(const float* img, int64_t h, int64_t w, int64_t wp, float* dst, float* vmin_out, float* vmax_out) {
  float a = img[kPad * wp + kPad], b = a;
  MinMax8 m(a);
  for (int64_t i = 0; i < h; ++i) {
    const float* row = img + (i + kPad) * wp + kPad;
    float* d = dst + i * w;
    int64_t j = 0;
    for (; j + 8 <= w; j += 8) {
      std::memcpy(d + j, row + j, 8 * sizeof(float));
      m.add(row + j);
    }
    for (; j < w; ++j) {
      d[j] = row[j];
      a = min_f(a, row[j]);
      b = max_f(b, row[j]);
    }
  }
  m.fold(a, b);
  *vmin_out = a;
  *vmax_out = b;
}

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
  uint8_t* bins = ws.bytes(Workspace::kBins, static_cast<size_t>(n));
  compute_bins(v, n, vmin, scale, bins);
  // four sub-histograms cut store-to-load stalls on runs of equal bins
  int32_t* h0 = ws.hist(4 * (kBins + 1));
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
    // the last bin b with h0[b] <= rank (h0 ascends, h0[0] = 0)
    int b = 0;
    while (b < kBins && h0[b + 1] <= ranks[q]) ++b;
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
  float* cand = ws.floats(Workspace::kScratch, static_cast<size_t>(total));
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
    nth_element_f(first, first + local, first + fill[k]);
    out[q] = first[local];
  }
}

void select_ranks(const float* v, int64_t n, const int64_t* ranks, int m, float* out, Workspace& ws) {
  float vmin, vmax;
  min_max(v, n, &vmin, &vmax);
  select_ranks_in(v, n, vmin, vmax, ranks, m, out, ws);
}

}  // namespace TF_CPU_VARIANT
}  // namespace cpu
}  // namespace thyrofast
