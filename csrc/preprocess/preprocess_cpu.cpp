// CPU implementation of preprocessing spec v1 (see thyrofast/preprocess.h).
//
// One frame at a time per thread, in a per-thread workspace: the fused
// crop + luma + separable resize streams input rows through a two-row cache
// into the padded working image; denoise and normalization then run on that
// image while it is still in L2.  Frames are independent, so results do not
// depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
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
  t.w.assign(static_cast<size_t>(out_len * t.g.taps), 0.0f);
  for (int64_t i = 0; i < out_len; ++i) t.start[i] = detail::axis_taps(t.g, i, &t.w[i * t.g.taps]);
  if (t.g.taps <= 8) {
    t.w8.assign(static_cast<size_t>(out_len * 8), 0.0f);
    for (int64_t i = 0; i < out_len; ++i)
      for (int q = 0; q < t.g.taps; ++q) t.w8[i * 8 + q] = t.w[i * t.g.taps + q];
  }
  return t;
}

struct Workspace {
  std::vector<float> row_cache[2];
  int64_t row_id[2] = {-1, -1};
  int next_slot = 0;
  std::vector<float> acc;
  std::vector<float> img_a, img_b;  // padded working images
  std::vector<float> coef;          // SRAD coefficients, (H + 1) x (W + 1)
  std::vector<float> flat;     // one frame, unpadded, for order statistics
  std::vector<float> scratch;  // selection candidates
  std::vector<int32_t> hist;
  std::vector<uint16_t> bins;

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
  if (sw == 3 && sc == 1) {
    for (int64_t x = 0; x < w; ++x) {
      const T* p = src + 3 * x;
      dst[x] = k.r * static_cast<float>(p[0]) + k.g * static_cast<float>(p[1]) + k.b * static_cast<float>(p[2]);
    }
    return;
  }
  for (int64_t x = 0; x < w; ++x) {
    const T* p = src + x * sw;
    dst[x] = k.r * static_cast<float>(p[0]) + k.g * static_cast<float>(p[sc]) + k.b * static_cast<float>(p[2 * sc]);
  }
}

// dst[j] = sum_t w[j][t] * src[start[j] + t] for one row.  With AVX and at
// most 8 taps, each output is one 8-wide multiply of the (zero-padded)
// weights with 8 consecutive inputs, and 8 outputs share one transpose-add;
// `src` must be readable (finite values) 8 floats past its end.
void horizontal_pass(const float* src, const AxisTable& tx, float* dst, int64_t out_w) {
  const int kx = tx.g.taps;
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
    for (int t = 0; t < kx; ++t) s += w[t] * a[t];
    dst[j] = s;
  }
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

  const int ky = ty.g.taps, kx = tx.g.taps;
  float* acc = ws.acc.data();
  for (int64_t i = 0; i < p.out_h; ++i) {
    const float* wy = &ty.w[i * ky];
    const float* src_row = nullptr;
    if (ty.g.mode == 0 || ky == 1) {
      src_row = get_row(ty.start[i]);  // one tap of weight 1
    } else {
      bool first = true;
      for (int t = 0; t < ky; ++t) {
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

// Min and max of v[0..n) with 8 independent lanes (vectorizes without
// -ffast-math, which a plain std::min reduction would need).
void min_max(const float* v, int64_t n, float* vmin_out, float* vmax_out) {
  float mn[8], mx[8];
  for (int l = 0; l < 8; ++l) mn[l] = mx[l] = v[0];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      mn[l] = detail::min_f(mn[l], v[i + l]);
      mx[l] = detail::max_f(mx[l], v[i + l]);
    }
  for (; i < n; ++i) {
    mn[0] = detail::min_f(mn[0], v[i]);
    mx[0] = detail::max_f(mx[0], v[i]);
  }
  float a = mn[0], b = mx[0];
  for (int l = 1; l < 8; ++l) {
    a = detail::min_f(a, mn[l]);
    b = detail::max_f(b, mx[l]);
  }
  *vmin_out = a;
  *vmax_out = b;
}

// Exact order statistics `ranks` (ascending, each in [0, n)) of v[0..n).
// One pass assigns each value a bin of a 4096-bin value histogram (a
// monotone map), the prefix sums name the bin holding each wanted rank, and
// a selection runs only among that bin's few values.  The result is the
// order statistic itself, so it does not depend on how it was found.
void select_ranks(const float* v, int64_t n, const int64_t* ranks, int m, float* out, Workspace& ws) {
  float vmin, vmax;
  min_max(v, n, &vmin, &vmax);
  if (!(vmax > vmin)) {
    for (int q = 0; q < m; ++q) out[q] = vmin;
    return;
  }
  const float scale = static_cast<float>(detail::kSelectBins) / (vmax - vmin);
  if (ws.bins.size() < static_cast<size_t>(n)) ws.bins.resize(n);
  uint16_t* bins = ws.bins.data();
  for (int64_t i = 0; i < n; ++i) bins[i] = static_cast<uint16_t>(detail::select_bin(v[i], vmin, scale));
  // four sub-histograms avoid store-to-load stalls on runs of equal bins
  ws.hist.assign(4 * (detail::kSelectBins + 1), 0);
  int32_t* h0 = ws.hist.data();
  int32_t* h1 = h0 + (detail::kSelectBins + 1);
  int32_t* h2 = h1 + (detail::kSelectBins + 1);
  int32_t* h3 = h2 + (detail::kSelectBins + 1);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++h0[bins[i]];
    ++h1[bins[i + 1]];
    ++h2[bins[i + 2]];
    ++h3[bins[i + 3]];
  }
  for (; i < n; ++i) ++h0[bins[i]];
  // exclusive prefix: h0[b] = count of values in bins < b
  int32_t run = 0;
  for (int b = 0; b <= detail::kSelectBins; ++b) {
    const int32_t c = h0[b] + h1[b] + h2[b] + h3[b];
    h0[b] = run;
    run += c;
  }
  int want[8];
  int nwant = 0;
  int bin_of[8];
  for (int q = 0; q < m; ++q) {
    const int b = static_cast<int>(std::upper_bound(h0, h0 + detail::kSelectBins + 1,
                                                    static_cast<int32_t>(ranks[q])) - h0) - 1;
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
  for (int64_t j = 0; j < n; ++j) {
    const int b = bins[j];
    for (int k = 0; k < nwant; ++k)
      if (b == want[k]) cand[offset[k] + fill[k]++] = v[j];
  }
  for (int q = 0; q < m; ++q) {
    int k = 0;
    while (want[k] != bin_of[q]) ++k;
    float* first = cand + offset[k];
    const int64_t local = ranks[q] - h0[bin_of[q]];
    std::nth_element(first, first + local, first + fill[k]);
    out[q] = first[local];
  }
}

void srad(float* a, float* b, Workspace& ws, int64_t h, int64_t w, int64_t wp, const PreprocessParams& p) {
  // J = exp(y)
  for (int64_t i = 0; i < h; ++i) {
    float* row = a + (i + kPad) * wp + kPad;
    for (int64_t j = 0; j < w; ++j) row[j] = detail::exp_f(row[j]);
  }
  const int64_t wc = w + 1;
  if (ws.coef.size() < static_cast<size_t>((h + 1) * wc)) ws.coef.resize((h + 1) * wc);
  float* coef = ws.coef.data();
  const float quarter_lambda = 0.25f * p.srad_lambda;
  float q0sq0 = 0.0f;
  for (int n = 0; n < p.srad_iterations; ++n) {
    replicate_border(a, h, w, wp, 1);
    for (int64_t i = 0; i < h; ++i) {
      const float* rc = a + (i + kPad) * wp + kPad;
      const float* rn = rc - wp;
      const float* rs = rc + wp;
      float* cr = coef + i * wc;
      for (int64_t j = 0; j < w; ++j) cr[j] = detail::srad_q2(rc[j], rn[j], rs[j], rc[j - 1], rc[j + 1]);
    }
    if (n == 0) {
      // median of q^2 over the frame (NumPy: mean of the two middle values)
      if (ws.flat.size() < static_cast<size_t>(h * w)) ws.flat.resize(h * w);
      float* q2 = ws.flat.data();
      for (int64_t i = 0; i < h; ++i) std::memcpy(q2 + i * w, coef + i * wc, sizeof(float) * static_cast<size_t>(w));
      const int64_t cnt = h * w;
      int64_t ranks[2] = {(cnt - 1) / 2, cnt / 2};
      float vals[2];
      select_ranks(q2, cnt, ranks, 2, vals, ws);
      q0sq0 = (vals[0] + vals[1]) * 0.5f;
    }
    const float q0sq = detail::srad_q0sq(q0sq0, n, p.srad_rho, p.srad_lambda);
    const float inv_den = detail::srad_inv_den(q0sq);
    for (int64_t i = 0; i < h; ++i) {
      float* cr = coef + i * wc;
      for (int64_t j = 0; j < w; ++j) cr[j] = detail::srad_coeff(cr[j], q0sq, inv_den);
      cr[w] = cr[w - 1];
    }
    std::memcpy(coef + h * wc, coef + (h - 1) * wc, sizeof(float) * static_cast<size_t>(wc));
    for (int64_t i = 0; i < h; ++i) {
      const float* rc = a + (i + kPad) * wp + kPad;
      const float* rn = rc - wp;
      const float* rs = rc + wp;
      const float* cc = coef + i * wc;
      const float* cs = cc + wc;
      float* out = b + (i + kPad) * wp + kPad;
      for (int64_t j = 0; j < w; ++j)
        out[j] = detail::srad_update(rc[j], rn[j], rs[j], rc[j - 1], rc[j + 1], cc[j], cs[j], cc[j + 1], quarter_lambda);
    }
    std::swap(a, b);
  }
  // after the swaps `a` holds the latest J; log(J) in place
  for (int64_t i = 0; i < h; ++i) {
    float* row = a + (i + kPad) * wp + kPad;
    for (int64_t j = 0; j < w; ++j) row[j] = detail::log_f(row[j]);
  }
}

detail::FrameAffine frame_affine(const float* img, int64_t h, int64_t w, int64_t wp, const PreprocessParams& p,
                                 Workspace& ws) {
  detail::FrameAffine f{0.0f, 1.0f, 0, p.mean, 1.0f / p.std};
  const int64_t n = h * w;
  switch (p.normalize) {
    case Normalize::none:
      return f;
    case Normalize::percentile: {
      std::vector<float>& flat = ws.flat;
      if (flat.size() < static_cast<size_t>(n)) flat.resize(n);
      for (int64_t i = 0; i < h; ++i) std::memcpy(&flat[i * w], img + (i + kPad) * wp + kPad, sizeof(float) * w);
      const detail::PercentilePos lo = detail::percentile_pos(n, p.percentile_lo);
      const detail::PercentilePos hi = detail::percentile_pos(n, p.percentile_hi);
      int64_t ranks[4] = {lo.k, std::min(lo.k + 1, n - 1), hi.k, std::min(hi.k + 1, n - 1)};
      float vals[4];
      select_ranks(flat.data(), n, ranks, 4, vals, ws);
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
      for (int64_t j = 0; j < w; ++j) dst[j] = detail::apply_affine(row[j], f);
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
  const detail::FrameAffine fa = frame_affine(img, h, w, wp, p, ws);
  write_output(img, h, w, wp, fa, p, out, f);
}

template <typename T>
void run_cpu(const FrameBatch& in, const PreprocessParams& p, void* out, int threads) {
  const int64_t rh = p.has_roi ? p.roi_h : in.h, rw = p.has_roi ? p.roi_w : in.w;
  const AxisTable ty = build_axis(rh, p.out_h);
  const AxisTable tx = build_axis(rw, p.out_w);
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
