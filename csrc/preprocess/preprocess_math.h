// Per-pixel math of preprocessing spec v1, shared by preprocess_cpu.cpp and
// preprocess_cuda.cu.  Both paths call these functions, so the CPU path is
// the executable specification of the CUDA path.
#pragma once

#include <cstdint>

#include "../common/host_device.h"

namespace thyrofast {
namespace detail {

// ---------------------------------------------------------------- resize ---
// One output sample is a weighted sum of `taps` consecutive input samples
// starting at `start`.  Weights are computed in double from the exact box /
// interpolation geometry and rounded once to float.
struct AxisGeometry {
  int64_t in_len;
  int64_t out_len;
  int64_t taps;  // weights per output sample (zero-padded); 64-bit: up to in_len
  int mode;      // 0 identity, 1 area (shrink), 2 linear (grow)
  double scale;  // in / out
};

TF_HOST_DEVICE static inline AxisGeometry axis_geometry(int64_t in_len, int64_t out_len) {
  AxisGeometry g;
  g.in_len = in_len;
  g.out_len = out_len;
  g.scale = static_cast<double>(in_len) / static_cast<double>(out_len);
  if (in_len == out_len) {
    g.mode = 0;
    g.taps = 1;
  } else if (out_len < in_len) {
    g.mode = 1;
    // a box of width s overlaps at most ceil(s) + 1 input samples
    int64_t c = static_cast<int64_t>(g.scale);
    if (static_cast<double>(c) < g.scale) c += 1;
    c += 1;
    // never more taps than samples: the window is then shifted to fit
    g.taps = c < in_len ? c : in_len;
  } else {
    g.mode = 2;
    g.taps = in_len >= 2 ? 2 : 1;
  }
  return g;
}

TF_HOST_DEVICE static inline int64_t floor_to_i64(double v) {
  int64_t k = static_cast<int64_t>(v);
  if (static_cast<double>(k) > v) k -= 1;
  return k;
}

// Start index and `g.taps` weights of output sample i.  Indices start + t are
// always valid (< in_len): taps that would fall outside get weight 0 and are
// clamped onto the last sample.
// Area mode, one tap at a time (the CUDA kernel's form for windows wider
// than its per-thread weight arrays): the first input index of output sample
// i's window, shifted left so every tap index stays inside the axis (the
// extra leading taps then get zero weight) ...
TF_HOST_DEVICE static inline int64_t area_window_start(const AxisGeometry& g, int64_t i) {
  const int64_t start = floor_to_i64(static_cast<double>(i) * g.scale);
  return start > g.in_len - g.taps ? g.in_len - g.taps : start;
}

// ... and the weight of input sample k for output sample i: the overlap of
// [k, k + 1) with the box [i * s, (i + 1) * s), divided by s.
TF_HOST_DEVICE static inline float area_weight(const AxisGeometry& g, int64_t i, int64_t k) {
  const double lo = static_cast<double>(i) * g.scale;
  double hi = static_cast<double>(i + 1) * g.scale;
  if (hi > static_cast<double>(g.in_len)) hi = static_cast<double>(g.in_len);
  const double a = lo > static_cast<double>(k) ? lo : static_cast<double>(k);
  const double b = hi < static_cast<double>(k + 1) ? hi : static_cast<double>(k + 1);
  return b > a ? static_cast<float>((b - a) / g.scale) : 0.0f;
}

TF_HOST_DEVICE static inline int64_t axis_taps(const AxisGeometry& g, int64_t i, float* w) {
  if (g.mode == 0) {
    w[0] = 1.0f;
    return i;
  }
  if (g.mode == 1) {
    const int64_t start = area_window_start(g, i);
    for (int64_t t = 0; t < g.taps; ++t) w[t] = area_weight(g, i, start + t);
    return start;
  }
  // linear, half-pixel centres, clamped (OpenCV INTER_LINEAR)
  if (g.in_len == 1) {
    w[0] = 1.0f;
    return 0;
  }
  const double src = fma_d(static_cast<double>(i) + 0.5, g.scale, -0.5);
  int64_t x0 = floor_to_i64(src);
  double f = src - static_cast<double>(x0);
  if (x0 < 0) {
    x0 = 0;
    f = 0.0;
  }
  if (x0 >= g.in_len - 1) {
    // last sample: weight 1 on it (window shifted back one, first weight 0)
    w[0] = 0.0f;
    w[1] = 1.0f;
    return g.in_len - 2;
  }
  w[0] = static_cast<float>(1.0 - f);
  w[1] = static_cast<float>(f);
  return x0;
}

// ------------------------------------------------------------------ luma ---
struct LumaCoeffs {
  float r, g, b;  // multiply the channel *in memory order* 0, 1, 2
  float gray;     // 1 / max_value
};

TF_HOST_DEVICE static inline LumaCoeffs luma_coeffs(double max_value, bool bgr) {
  LumaCoeffs k;
  const double inv = 1.0 / max_value;
  const double cr = 0.299 * inv, cg = 0.587 * inv, cb = 0.114 * inv;
  k.r = static_cast<float>(bgr ? cb : cr);
  k.g = static_cast<float>(cg);
  k.b = static_cast<float>(bgr ? cr : cb);
  k.gray = static_cast<float>(inv);
  return k;
}

// ------------------------------------------------------------------ SRAD ---
// SRAD runs on J = exp(clamp(y, -87, 88) - shift) (exp_f clamps the same
// way).  q^2 and c are invariant under scaling J and the update is linear in
// J, so this only moves log J by `shift` (added back at the end).  The shift
// keeps the J^2-sized terms of srad_q2_frac finite when y is large (a
// max_value far below the data's range); for the usual y <= 40 it is 0 and
// changes nothing.
TF_HOST_DEVICE static inline float srad_log_shift(float ymax) {
  const float top = min_f(ymax, 88.0f);
  return top > 40.0f ? top - 40.0f : 0.0f;
}

// Instantaneous coefficient of variation q^2 at a pixel with value jc and its
// (replicated-border) neighbours, as a fraction num / den.  With the diffs
// d = neighbour - jc, G = sum d^2 and S = sum d, the textbook form
//   q^2 = (G / (2 jc^2) - S^2 / (16 jc^2)) / (1 + S / (4 jc))^2
// has jc^2 in every term, which cancels:
//   q^2 = (8 G - S^2) / M^2,   M = 4 jc + S (the sum of the four neighbours),
// one division instead of three (numerator and denominator are both 16x the
// natural ones; a power of two, so the quotient is unchanged).  num >= 4 G >= 0
// (Cauchy-Schwarz: S^2 <= 4 G) and den > 0 for J = exp(y) > 0.
struct SradQ2 {
  float num;
  float den;
};

TF_HOST_DEVICE static inline SradQ2 srad_q2_frac(float jc, float jn, float js, float jw, float je) {
  const float dn = jn - jc, ds = js - jc, dw = jw - jc, de = je - jc;
  const float g = fma_f(de, de, fma_f(dw, dw, fma_f(dn, dn, ds * ds)));
  const float s = dn + ds + dw + de;
  const float m = fma_f(4.0f, jc, s);  // one rounding (4 jc is exact), fused or not
  SradQ2 r;
  r.num = fma_f(8.0f, g, -(s * s));
  r.den = m * m;
  return r;
}

TF_HOST_DEVICE static inline float srad_q2(float jc, float jn, float js, float jw, float je) {
  const SradQ2 f = srad_q2_frac(jc, jn, js, jw, je);
  return f.num / f.den;
}

// q0^2 at iteration n from the first iteration's median q0^2(0).
TF_HOST_DEVICE static inline float srad_q0sq(float q0sq0, int n, float rho, float lambda) {
  const float v = q0sq0 * exp_f(-2.0f * rho * static_cast<float>(n) * lambda);
  return max_f(v, 1e-10f);
}

// Per-iteration constants of srad_coeff.
struct SradCoeffK {
  float inv_den;  // 1 / (q0^2 (1 + q0^2))
  float k;        // q0^2 / (1 + q0^2)
};

TF_HOST_DEVICE static inline SradCoeffK srad_coeff_k(float q0sq) {
  SradCoeffK r;
  r.inv_den = 1.0f / (q0sq * (1.0f + q0sq));
  r.k = q0sq / (1.0f + q0sq);
  return r;
}

// Diffusion coefficient c = 1 / (1 + (q^2 - q0^2) inv_den), clamped to [0, 1],
// from q^2 = num / den.  Multiplying through by den and using
// 1 - q0^2 inv_den = k gives
//   c = den / (num inv_den + den k),
// one division, and a denominator of two non-negative terms (the textbook
// 1 + (q^2 - q0^2) inv_den cancels towards zero for q^2 < q0^2).  So c >= 0,
// c > 1 exactly when q^2 < q0^2 (clamped to 1), and c -> 0 when num inv_den
// overflows, its limit.
TF_HOST_DEVICE static inline float srad_coeff(SradQ2 q, SradCoeffK k) {
  const float c = q.den / fma_f(q.num, k.inv_den, q.den * k.k);
  return min_f(c, 1.0f);
}

// J after one step: jc + lambda / 4 (c_c dn + c_s ds + c_c dw + c_e de), the
// two c_c terms summed first (one product fewer).
TF_HOST_DEVICE static inline float srad_update(float jc, float jn, float js, float jw, float je, float c_c,
                                        float c_s, float c_e, float quarter_lambda) {
  const float dn = jn - jc, ds = js - jc, dw = jw - jc, de = je - jc;
  return fma_f(quarter_lambda, fma_f(c_e, de, fma_f(c_c, dn + dw, c_s * ds)), jc);
}

// ------------------------------------------------------------ median k x k ---
// Selection networks for the median of 9 and 25 values: Batcher's odd-even
// merge sort (16 / 32 inputs, padded with +inf so comparators touching the
// padding are no-ops), pruned backwards to the comparators that can reach
// the middle output.  Checked exhaustively by the 0-1 principle in
// tests/test_preprocess_networks.py.
constexpr int kMedian9Pairs = 24;
constexpr int kMedian25Pairs = 113;

// Apply a pruned network; v[K/2] is the median afterwards.
template <int K>
TF_HOST_DEVICE static inline float median_of(float* v);

template <>
TF_HOST_DEVICE inline float median_of<9>(float* v) {
  // tables live inside the functions so host and device code both see them
  constexpr unsigned char kMedian9[kMedian9Pairs][2] = {
    {0, 1}, {2, 3}, {4, 5}, {6, 7}, {0, 2}, {1, 3}, {4, 6}, {5, 7}, {1, 2}, {5, 6},
    {0, 4}, {1, 5}, {2, 6}, {3, 7}, {2, 4}, {3, 5}, {1, 2}, {3, 4}, {5, 6}, {0, 8},
    {4, 8}, {2, 4}, {3, 5}, {3, 4}
  };
TF_UNROLL
  for (int i = 0; i < kMedian9Pairs; ++i) {
    const int a = kMedian9[i][0], b = kMedian9[i][1];
    const float lo = min_f(v[a], v[b]), hi = max_f(v[a], v[b]);
    v[a] = lo;
    v[b] = hi;
  }
  return v[4];
}

template <>
TF_HOST_DEVICE inline float median_of<25>(float* v) {
  constexpr unsigned char kMedian25[kMedian25Pairs][2] = {
    {0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}, {12, 13}, {14, 15}, {16, 17}, {18, 19},
    {20, 21}, {22, 23}, {0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}, {12, 14}, {13, 15},
    {16, 18}, {17, 19}, {20, 22}, {21, 23}, {1, 2}, {5, 6}, {9, 10}, {13, 14}, {17, 18}, {21, 22},
    {0, 4}, {1, 5}, {2, 6}, {3, 7}, {8, 12}, {9, 13}, {10, 14}, {11, 15}, {16, 20}, {17, 21},
    {18, 22}, {19, 23}, {2, 4}, {3, 5}, {10, 12}, {11, 13}, {18, 20}, {19, 21}, {1, 2}, {3, 4},
    {5, 6}, {9, 10}, {11, 12}, {13, 14}, {17, 18}, {19, 20}, {21, 22}, {0, 8}, {1, 9}, {2, 10},
    {3, 11}, {4, 12}, {5, 13}, {6, 14}, {7, 15}, {16, 24}, {4, 8}, {5, 9}, {6, 10}, {7, 11},
    {20, 24}, {2, 4}, {3, 5}, {6, 8}, {7, 9}, {10, 12}, {11, 13}, {18, 20}, {19, 21}, {22, 24},
    {1, 2}, {3, 4}, {5, 6}, {7, 8}, {9, 10}, {11, 12}, {13, 14}, {17, 18}, {19, 20}, {21, 22},
    {23, 24}, {0, 16}, {1, 17}, {2, 18}, {3, 19}, {4, 20}, {5, 21}, {6, 22}, {7, 23}, {8, 24},
    {8, 16}, {9, 17}, {10, 18}, {11, 19}, {12, 20}, {13, 21}, {6, 10}, {7, 11}, {12, 16}, {13, 17},
    {10, 12}, {11, 13}, {11, 12}
  };
TF_UNROLL
  for (int i = 0; i < kMedian25Pairs; ++i) {
    const int a = kMedian25[i][0], b = kMedian25[i][1];
    const float lo = min_f(v[a], v[b]), hi = max_f(v[a], v[b]);
    v[a] = lo;
    v[b] = hi;
  }
  return v[12];
}

// ------------------------------------------------------------ percentiles ---
// NumPy's default ('linear') percentile: position (n - 1) p / 100 between the
// order statistics k = floor(pos) and k + 1.
struct PercentilePos {
  int64_t k;
  double frac;
};

TF_HOST_DEVICE static inline PercentilePos percentile_pos(int64_t n, double p) {
  const double pos = static_cast<double>(n - 1) * (p / 100.0);
  int64_t k = floor_to_i64(pos);
  if (k < 0) k = 0;
  if (k > n - 1) k = n - 1;
  PercentilePos r;
  r.k = k;
  r.frac = pos - static_cast<double>(k);
  if (k == n - 1) r.frac = 0.0;
  return r;
}

// NumPy's _lerp: a + t (b - a), evaluated from b's side when t >= 0.5 so that
// t = 1 gives b exactly.
TF_HOST_DEVICE static inline float lerp_numpy(float a, float b, double t) {
  const double d = static_cast<double>(b) - static_cast<double>(a);
  const double v = t >= 0.5 ? fma_d(-d, 1.0 - t, static_cast<double>(b)) : fma_d(d, t, static_cast<double>(a));
  return static_cast<float>(v);
}

// Value-range bins (fewer than 2^15: they are stored as uint16) for two-pass exact order-statistic selection: the bin of v
// is a monotone function of v, so the r-th smallest value lies in the bin
// where the histogram's running count passes r.
constexpr int kSelectBins = 2048;

TF_HOST_DEVICE static inline int select_bin(float v, float vmin, float bin_scale) {
  const float t = (v - vmin) * bin_scale;
  int b = static_cast<int>(t);
  b = b < 0 ? 0 : b;
  return b > kSelectBins - 1 ? kSelectBins - 1 : b;
}

// ------------------------------------------------------------- normalize ---
// Final per-frame affine: value -> clamp?((v - lo) * a) -> (t - mean) / std.
struct FrameAffine {
  float lo;
  float a;     // 1 / (hi - lo), or 0 for a degenerate frame (all zeros)
  int clip;    // clip to [0, 1] (percentile, minmax)
  float mean;
  float inv_std;
};

// The clipped affine mapping [lo, hi] onto [0, 1] (percentile, minmax); a
// range narrower than 1e-6 maps the whole frame to 0.
TF_HOST_DEVICE static inline void set_range_affine(FrameAffine& f, float lo, float hi) {
  f.clip = 1;
  f.lo = lo;
  f.a = (hi - lo) < 1e-6f ? 0.0f : 1.0f / (hi - lo);
  if (f.a == 0.0f) f.lo = 0.0f;
}

// The unclipped z-score affine; a frame with sd < 1e-6 maps to 0.
TF_HOST_DEVICE static inline void set_zscore_affine(FrameAffine& f, double mean, double sd) {
  f.clip = 0;
  if (sd < 1e-6) {
    f.lo = 0.0f;
    f.a = 0.0f;
  } else {
    f.lo = static_cast<float>(mean);
    f.a = static_cast<float>(1.0 / sd);
  }
}

TF_HOST_DEVICE static inline float apply_affine(float v, const FrameAffine& f) {
  float t = (v - f.lo) * f.a;
  if (f.clip) t = clamp_f(t, 0.0f, 1.0f);
  return (t - f.mean) * f.inv_std;
}

}  // namespace detail
}  // namespace thyrofast
