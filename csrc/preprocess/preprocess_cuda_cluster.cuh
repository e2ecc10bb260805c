// The sm_90 path of preprocess_cuda.cu: one thread-block CLUSTER per frame.
//
// Why: one 512-thread block per frame (the fallback kernel) keeps one SM busy
// per frame, and its 224 x 224 working images do not fit one block's shared
// memory, so batch 1 costs milliseconds.  Here a cluster of S CTAs (S = 2..16,
// chosen on the host) shares a frame: CTA r owns output rows
// [r R, r R + R), R = ceil(h / S), and keeps its strip of the working images
// in its own shared memory, with halo rows above and below.  Neighbours'
// rows come over distributed shared memory (DSMEM) after one cluster barrier
// per SRAD iteration (double-buffered images, so the barrier that publishes
// an iteration's rows also retires the reads of the previous one).
// Frame-wide quantities are reduced across the cluster: min/max and sums via
// per-CTA partials read over DSMEM, and EXACT order statistics by a 4-pass
// radix select on the order-preserving uint32 key of the float, the CTAs'
// histograms of all CTAs summed by every CTA over DSMEM; up to four ranks
// are selected in the same passes (percentile: 4, SRAD's q0: 2).
//
// The per-pixel math is preprocess_math.h's, as on the CPU (the spec); the
// resize sums taps in the same order as the fallback kernel.
#pragma once

#include <cooperative_groups.h>

namespace thyrofast {
namespace {

namespace cg = cooperative_groups;

constexpr int kCThreads = 512;  // threads per CTA (1024 measured no faster at batch 1, slower at 64)
constexpr int kCWarps = kCThreads / 32;
constexpr int kMaxClusterSize = 16;
constexpr int kHalo = 2;        // halo rows above and below a strip (median5 needs 2)
constexpr int kMaxRanks = 4;
constexpr int kRadixBins = 256;

struct ClusterArgs {
  FrameBatch in;
  PreprocessParams p;
  AxisGeometry gy, gx;
  LumaCoeffs k;
  int64_t roi_x, roi_y;
  int64_t frame0;
  void* out;
  int h, w;        // output size (h * w < 2^24: kMaxOutputSide = 4096)
  int rows;        // R: output rows per CTA
  int ty, tx;      // resize taps per axis
  int region_c;    // floats of the coefficient / resize-table region
};

// Static shared memory of one CTA.
struct ClusterSmem {
  uint32_t hist[2][kMaxRanks][kRadixBins];  // this CTA's counts, by select-pass parity (read by every CTA)
  uint32_t tot[kMaxRanks][kRadixBins];      // the cluster's counts
  float red_f[kCWarps][2];
  double red_d[kCWarps];
  float part_f[2][2];  // this CTA's (min, max), double-buffered by reduction call
  double part_d[2];
  uint32_t sel_prefix[kMaxRanks];
  uint32_t sel_k[kMaxRanks];
  float bcast_f[2];
  double bcast_d;
};

// Dynamic shared memory in floats: two strips of R + 2 halo rows each, and
// a region for the SRAD coefficients ((R + 1) rows) that first holds the
// resize weight tables.
inline int64_t cluster_region_c(int64_t rows, int64_t w, int64_t ty, int64_t tx) {
  const int64_t coef = (rows + 1) * w;
  const int64_t tables = rows * (1 + ty) + w * (1 + tx);
  return coef > tables ? coef : tables;
}

inline size_t cluster_dyn_smem(int64_t rows, int64_t w, int64_t ty, int64_t tx) {
  const int64_t floats = 2 * (rows + 2 * kHalo) * w + cluster_region_c(rows, w, ty, tx);
  return static_cast<size_t>(floats) * sizeof(float);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900

// Order-preserving key of a float (total order; -0 sorts just below +0).
__device__ inline uint32_t float_key(float v) {
  const uint32_t u = __float_as_uint(v);
  return u ^ ((u >> 31) ? 0xffffffffu : 0x80000000u);
}

__device__ inline float key_float(uint32_t k) {
  return __uint_as_float((k >> 31) ? (k ^ 0x80000000u) : ~k);
}

// Calls fn(i, j) for every pixel of `rows` x w, i the strip row, spread over
// the CTA's threads without a division per pixel.
template <typename F>
__device__ inline void for_strip(int rows, int w, F&& fn) {
  int i = static_cast<int>(threadIdx.x) / w;
  int j = static_cast<int>(threadIdx.x) - i * w;
  const int di = kCThreads / w, dj = kCThreads - di * w;
  while (i < rows) {
    fn(i, j);
    i += di;
    j += dj;
    if (j >= w) {
      j -= w;
      ++i;
    }
  }
}

__device__ inline float warp_min(float v) {
  for (int o = 16; o > 0; o >>= 1) v = detail::min_f(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = detail::max_f(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Frame-wide min and max: each CTA publishes its partial, one cluster
// barrier, every CTA reads all partials (in rank order, so all get the same
// result).  `ctr` alternates the partial's buffer: the next call's write
// cannot overtake a slow CTA's read, which precedes that call's barrier.
__device__ void cluster_min_max(const cg::cluster_group& cl, ClusterSmem& s, int& ctr, float& mn, float& mx) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  mn = warp_min(mn);
  mx = warp_max(mx);
  if (lane == 0) {
    s.red_f[warp][0] = mn;
    s.red_f[warp][1] = mx;
  }
  __syncthreads();
  const int slot = ctr & 1;
  if (warp == 0) {
    float a = lane < kCWarps ? s.red_f[lane][0] : 3.4e38f;
    float b = lane < kCWarps ? s.red_f[lane][1] : -3.4e38f;
    a = warp_min(a);
    b = warp_max(b);
    if (lane == 0) {
      s.part_f[slot][0] = a;
      s.part_f[slot][1] = b;
    }
  }
  cl.sync();
  if (warp == 0) {
    const int nb = static_cast<int>(cl.num_blocks());
    float a = 3.4e38f, b = -3.4e38f;
    if (lane < nb) {
      const float* r = cl.map_shared_rank(&s.part_f[slot][0], lane);
      a = r[0];
      b = r[1];
    }
    a = warp_min(a);
    b = warp_max(b);
    if (lane == 0) {
      s.bcast_f[0] = a;
      s.bcast_f[1] = b;
    }
  }
  __syncthreads();
  mn = s.bcast_f[0];
  mx = s.bcast_f[1];
  ++ctr;
}

// Frame-wide sum in double, the same value in every CTA (partials summed in
// rank order by lane 0's fixed reduction tree).
__device__ double cluster_sum(const cg::cluster_group& cl, ClusterSmem& s, int& ctr, double v) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  v = warp_sum(v);
  if (lane == 0) s.red_d[warp] = v;
  __syncthreads();
  const int slot = ctr & 1;
  if (warp == 0) {
    double t = lane < kCWarps ? s.red_d[lane] : 0.0;
    t = warp_sum(t);
    if (lane == 0) s.part_d[slot] = t;
  }
  cl.sync();
  if (warp == 0) {
    const int nb = static_cast<int>(cl.num_blocks());
    double t = lane < nb ? *cl.map_shared_rank(&s.part_d[slot], lane) : 0.0;
    t = warp_sum(t);
    if (lane == 0) s.bcast_d = t;
  }
  __syncthreads();
  const double r = s.bcast_d;
  ++ctr;
  return r;
}

// The exact ranks[q]-th smallest (q < m <= 4) of the values of all CTAs'
// strips (each CTA passes its own `cnt` values).  Radix select, 8 bits per
// pass from the top: each pass counts, per distinct prefix, the next digit of
// the keys that match it into this CTA's histogram; after one cluster
// barrier every CTA sums the histograms of all CTAs (coalesced DSMEM reads:
// merging into one CTA with DSMEM atomics measured ~14 us a pass at 16 CTAs)
// and scans the sums (one warp per rank) to fix that digit.  The histograms
// alternate by pass (`sctr` parity): a CTA clears the other parity's after
// the barrier, when every reader of it (the previous pass) is done.
__device__ __forceinline__ void cluster_select(const cg::cluster_group& cl, ClusterSmem& s, int& sctr, const float* v,
                                               int cnt, const uint32_t* ranks, int m, float* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int S = static_cast<int>(cl.num_blocks());
  uint32_t prefix[kMaxRanks], want[kMaxRanks];
#pragma unroll
  for (int q = 0; q < kMaxRanks; ++q) {
    prefix[q] = 0;
    want[q] = q < m ? ranks[q] : 0;
  }
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    const uint32_t hmask = pass == 0 ? 0u : (0xffffffffu << (shift + 8));
    const int par = sctr & 1;
    uint32_t* hist = &s.hist[par][0][0];
    int lead[kMaxRanks];  // the query whose histogram counts for query q
#pragma unroll
    for (int q = 0; q < kMaxRanks; ++q) {
      lead[q] = q;
      for (int r = q - 1; r >= 0; --r)
        if (prefix[r] == prefix[q]) lead[q] = r;
    }
    // Values of a frame share their top digits, so most lanes of a warp hit
    // the same bin: one atomic per distinct (query, bin) in the warp.
    const int cnt_up = (cnt + 31) & ~31;
    for (int i = threadIdx.x; i < cnt_up; i += kCThreads) {
      const bool in = i < cnt;
      const uint32_t key = in ? float_key(v[i]) : 0u;
      const uint32_t digit = (key >> shift) & 0xffu;
#pragma unroll
      for (int q = 0; q < kMaxRanks; ++q) {
        if (q >= m || lead[q] != q) continue;  // uniform
        const bool hit = in && ((key ^ prefix[q]) & hmask) == 0u;
        const uint32_t slot_id = hit ? digit : 0x100u;  // 0x100: no bin
        const uint32_t peers = __match_any_sync(0xffffffffu, slot_id);
        if (hit && (__ffs(peers) - 1) == lane)
          atomicAdd(&hist[q * kRadixBins + digit], static_cast<uint32_t>(__popc(peers)));
      }
    }
    cl.sync();
    for (int b = threadIdx.x; b < kMaxRanks * kRadixBins; b += kCThreads) {
      const int q = b / kRadixBins;
      bool active = false;
#pragma unroll
      for (int r = 0; r < kMaxRanks; ++r)
        if (r == q) active = r < m && lead[r] == r;
      if (active) {
        uint32_t t = 0;
#pragma unroll 4
        for (int r = 0; r < S; ++r) t += cl.map_shared_rank(hist, r)[b];
        (&s.tot[0][0])[b] = t;
      }
      (&s.hist[par ^ 1][0][0])[b] = 0u;  // the previous pass's, read by all before this pass's barrier
    }
    __syncthreads();
    if (warp < m) {
      // this warp's query, picked out with constant indices (no local memory)
      uint32_t my_prefix = 0, target = 0;
      int my_lead = 0;
#pragma unroll
      for (int q = 0; q < kMaxRanks; ++q)
        if (q == warp) {
          my_prefix = prefix[q];
          target = want[q];
          my_lead = lead[q];
        }
      const uint32_t* hq = &s.tot[my_lead][lane * 8];
      uint32_t c[8];
      uint32_t tot = 0;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        c[e] = hq[e];
        tot += c[e];
      }
      uint32_t incl = tot;
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
      }
      const uint32_t excl = incl - tot;
      if (target >= excl && target < incl) {  // exactly one lane
        uint32_t run = excl, digit = 7;
        bool found = false;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          if (!found && target < run + c[e]) {
            found = true;
            digit = e;
          }
          if (!found) run += c[e];
        }
        s.sel_prefix[warp] = my_prefix | ((static_cast<uint32_t>(lane * 8) + digit) << shift);
        s.sel_k[warp] = target - run;
      }
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < kMaxRanks; ++q)
      if (q < m) {
        prefix[q] = s.sel_prefix[q];
        want[q] = s.sel_k[q];
      }
    ++sctr;
  }
#pragma unroll
  for (int q = 0; q < kMaxRanks; ++q)
    if (q < m) out[q] = key_float(prefix[q]);
}

// Fills the strip's halo rows (strip rows -2, -1 and those from the CTA's
// last valid row + 1 on) from the CTAs that own them, replicating the
// frame's first / last row at its borders.  After a cluster barrier.
__device__ void pull_halo(const cg::cluster_group& cl, float* buf, int r0, int valid, int R, int h, int w,
                          int my_rank) {
  const int halo_rows = kHalo + (R + kHalo - valid);
  const int total = halo_rows * w;
  for (int idx = threadIdx.x; idx < total; idx += kCThreads) {
    const int hr = idx / w;  // a few rows: one division per element is cheap here
    const int j = idx - hr * w;
    const int l = hr < kHalo ? hr : valid + hr;  // local row (valid + kHalo onwards)
    int g = r0 - kHalo + l;
    g = g < 0 ? 0 : (g > h - 1 ? h - 1 : g);
    const int owner = g / R;
    const int sl = g - owner * R + kHalo;
    const float* src = owner == my_rank ? buf : cl.map_shared_rank(buf, owner);
    buf[l * w + j] = src[sl * w + j];
  }
}

// k x k median (k = 2 rad + 1) at strip row l, column j: rows from the
// halo, columns clamped (replicated borders); constant indices throughout.
template <int rad>
__device__ inline float strip_median(const float* img, int l, int j, int w) {
  float v[(2 * rad + 1) * (2 * rad + 1)];
#pragma unroll
  for (int dy = -rad; dy <= rad; ++dy)
#pragma unroll
    for (int dx = -rad; dx <= rad; ++dx) {
      int jj = j + dx;
      jj = jj < 0 ? 0 : (jj > w - 1 ? w - 1 : jj);
      v[(dy + rad) * (2 * rad + 1) + dx + rad] = img[(l + dy) * w + jj];
    }
  return detail::median_of<(2 * rad + 1) * (2 * rad + 1)>(v);
}

template <typename T>
__device__ inline float cluster_luma(const LumaCoeffs& k, const T* p, int c, int64_t sc) {
  if (c == 1) return static_cast<float>(p[0]) * k.gray;
  return k.r * static_cast<float>(p[0]) + k.g * static_cast<float>(p[sc]) + k.b * static_cast<float>(p[2 * sc]);
}

// One output pixel of crop + luma + resize from its input window at `base`:
// sum over rows t of wr[t] * (sum over taps u of wc[u] * luma), in tap order
// (the fallback kernel's order).  Up to 8 taps at a time: all loads first,
// then the sum (independent loads: one memory round trip instead of eight).
template <typename T, bool kGrayUnit>
__device__ inline float strip_resize_px(const T* base, const float* wr, const float* wc, int ty, int tx, int64_t sh,
                                        int64_t sw, int c, int64_t sc, const LumaCoeffs& k) {
  float acc = 0.0f;
  for (int t = 0; t < ty; ++t) {
    const float wv = wr[t];
    if (wv == 0.0f) continue;
    const T* p = base + t * sh;
    float row = 0.0f;
    for (int u = 0; u < tx; u += 8) {
      float lv[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        if (kGrayUnit)
          lv[e] = u + e < tx ? static_cast<float>(p[u + e]) * k.gray : 0.0f;
        else
          lv[e] = u + e < tx ? cluster_luma<T>(k, p + (u + e) * sw, c, sc) : 0.0f;
      }
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (u + e < tx) row += wc[u + e] * lv[e];
    }
    acc += wv * row;
  }
  return acc;
}

#endif  // __CUDA_ARCH__ >= 900

template <typename T>
__global__ void __launch_bounds__(kCThreads, 2) preprocess_cluster_kernel(const ClusterArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(16) float dsm[];
  __shared__ ClusterSmem s;
  const cg::cluster_group cl = cg::this_cluster();
  const int rank = static_cast<int>(cl.block_rank());
  const int S = static_cast<int>(cl.num_blocks());
  const int64_t f = a.frame0 + blockIdx.x / S;
  const int h = a.h, w = a.w, R = a.rows;
  const int r0 = rank * R;
  const int valid = h - r0 < 0 ? 0 : (h - r0 < R ? h - r0 : R);  // rows this CTA owns
  const int strip = (R + 2 * kHalo) * w;
  float* img_a = dsm;
  float* img_b = dsm + strip;
  float* region = dsm + 2 * strip;

  for (int b = threadIdx.x; b < 2 * kMaxRanks * kRadixBins; b += kCThreads) (&s.hist[0][0][0])[b] = 0u;
  // no DSMEM access before every CTA of the cluster runs (and has cleared
  // its histograms): arrive now, wait after the resize
  cl.barrier_arrive();

  // 1. crop + luma + resize of the strip's rows straight from the input,
  //    the weights of both axes tabulated once in shared memory
  {
    int* ys = reinterpret_cast<int*>(region);
    float* wy = region + R;
    int* xs = reinterpret_cast<int*>(wy + R * a.ty);
    float* wx = reinterpret_cast<float*>(xs + w);
    for (int i = threadIdx.x; i < valid; i += kCThreads)
      ys[i] = static_cast<int>(detail::axis_taps(a.gy, r0 + i, wy + i * a.ty));
    for (int j = threadIdx.x; j < w; j += kCThreads)
      xs[j] = static_cast<int>(detail::axis_taps(a.gx, j, wx + j * a.tx));
    __syncthreads();
    const T* frame = static_cast<const T*>(a.in.data) + f * a.in.stride_n;
    const int64_t sh = a.in.stride_h, sw = a.in.stride_w, sc = a.in.stride_c;
    const int c = static_cast<int>(a.in.c);
    const int ty = a.ty, tx = a.tx;
    // gray frames with contiguous rows (the usual case) index p[u] directly:
    // int64 address arithmetic per tap cost a third of the resize
    if (c == 1 && sw == 1)
      for_strip(valid, w, [&](int i, int j) {
        const T* base = frame + (a.roi_y + ys[i]) * sh + (a.roi_x + xs[j]);
        img_a[(i + kHalo) * w + j] = strip_resize_px<T, true>(base, wy + i * ty, wx + j * tx, ty, tx, sh, 1, 1, 0, a.k);
      });
    else
      for_strip(valid, w, [&](int i, int j) {
        const T* base = frame + (a.roi_y + ys[i]) * sh + (a.roi_x + xs[j]) * sw;
        img_a[(i + kHalo) * w + j] = strip_resize_px<T, false>(base, wy + i * ty, wx + j * tx, ty, tx, sh, sw, c, sc, a.k);
      });
  }
  cl.barrier_wait();
  __syncthreads();  // (the tables' region is reused below)

  int rctr = 0, sctr = 0;
  const int own = kHalo * w;  // offset of the strip's first own row
  const int cnt = valid * w;
  const int64_t n = static_cast<int64_t>(h) * w;
  float* img = img_a;

  // 2. denoise
  if (a.p.denoise == Denoise::median3 || a.p.denoise == Denoise::median5) {
    cl.sync();  // every strip's resized rows are visible
    if (valid > 0) pull_halo(cl, img_a, r0, valid, R, h, w, rank);
    __syncthreads();
    if (a.p.denoise == Denoise::median3)
      for_strip(valid, w, [&](int i, int j) { img_b[(i + kHalo) * w + j] = strip_median<1>(img_a, i + kHalo, j, w); });
    else
      for_strip(valid, w, [&](int i, int j) { img_b[(i + kHalo) * w + j] = strip_median<2>(img_a, i + kHalo, j, w); });
    __syncthreads();
    img = img_b;
  } else if (a.p.denoise == Denoise::srad && a.p.srad_iterations > 0) {
    float ymin = 3.4e38f, ymax = -3.4e38f;
    for (int i = threadIdx.x; i < cnt; i += kCThreads) {
      const float v = img_a[own + i];
      ymin = detail::min_f(ymin, v);
      ymax = detail::max_f(ymax, v);
    }
    cluster_min_max(cl, s, rctr, ymin, ymax);
    const float shift = detail::srad_log_shift(ymax);
    for (int i = threadIdx.x; i < cnt; i += kCThreads) {
      float& v = img_a[own + i];
      v = detail::exp_f(detail::clamp_f(v, -87.0f, 88.0f) - shift);
    }
    const float quarter_lambda = 0.25f * a.p.srad_lambda;
    float q0sq0 = 0.0f;
    float* cur = img_a;
    float* nxt = img_b;
    float* coef = region;  // (R + 1) rows: the strip's and the next one's first
    const int coef_rows = valid == 0 ? 0 : (r0 + valid < h ? valid + 1 : valid);
    for (int it = 0; it < a.p.srad_iterations; ++it) {
      cl.sync();  // the previous step's rows are visible, and its halo reads done
      if (valid > 0) pull_halo(cl, cur, r0, valid, R, h, w, rank);
      __syncthreads();
      if (it == 0) {
        // q0^2(0) = median of q^2 over the frame (q^2 into nxt's own rows)
        for_strip(valid, w, [&](int i, int j) {
          const float* rc = cur + (i + kHalo) * w;
          const float wv = rc[j > 0 ? j - 1 : j], ev = rc[j < w - 1 ? j + 1 : j];
          nxt[own + i * w + j] = detail::srad_q2(rc[j], rc[j - w], rc[j + w], wv, ev);
        });
        __syncthreads();
        const uint32_t rk[2] = {static_cast<uint32_t>((n - 1) / 2), static_cast<uint32_t>(n / 2)};
        float m2[2];
        cluster_select(cl, s, sctr, nxt + own, cnt, rk, 2, m2);
        q0sq0 = (m2[0] + m2[1]) * 0.5f;
      }
      const float q0sq = detail::srad_q0sq(q0sq0, it, a.p.srad_rho, a.p.srad_lambda);
      const detail::SradCoeffK kk = detail::srad_coeff_k(q0sq);
      for_strip(coef_rows, w, [&](int i, int j) {
        const float* rc = cur + (i + kHalo) * w;
        const float wv = rc[j > 0 ? j - 1 : j], ev = rc[j < w - 1 ? j + 1 : j];
        coef[i * w + j] = detail::srad_coeff(detail::srad_q2_frac(rc[j], rc[j - w], rc[j + w], wv, ev), kk);
      });
      __syncthreads();
      for_strip(valid, w, [&](int i, int j) {
        const float* rc = cur + (i + kHalo) * w;
        const float* cc = coef + i * w;
        const float wv = rc[j > 0 ? j - 1 : j], ev = rc[j < w - 1 ? j + 1 : j];
        const float cs = r0 + i + 1 < h ? cc[j + w] : cc[j];  // coef row h = row h - 1
        const float ce = j < w - 1 ? cc[j + 1] : cc[j];      // coef column w = column w - 1
        nxt[own + i * w + j] = detail::srad_update(rc[j], rc[j - w], rc[j + w], wv, ev, cc[j], cs, ce, quarter_lambda);
      });
      // (the next iteration's cluster barrier orders these writes before any read)
      float* t = cur;
      cur = nxt;
      nxt = t;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < cnt; i += kCThreads) {
      float& v = cur[own + i];
      v = detail::log_f(v) + shift;
    }
    __syncthreads();
    img = cur;
  }

  // 3. per-frame normalization
  const float* mine = img + own;
  detail::FrameAffine fa{0.0f, 1.0f, 0, a.p.mean, 1.0f / a.p.std};
  if (a.p.normalize == Normalize::percentile) {
    const detail::PercentilePos lo = detail::percentile_pos(n, a.p.percentile_lo);
    const detail::PercentilePos hi = detail::percentile_pos(n, a.p.percentile_hi);
    const uint32_t rk[4] = {static_cast<uint32_t>(lo.k), static_cast<uint32_t>(lo.k + 1 < n ? lo.k + 1 : n - 1),
                            static_cast<uint32_t>(hi.k), static_cast<uint32_t>(hi.k + 1 < n ? hi.k + 1 : n - 1)};
    float v[4];
    cluster_select(cl, s, sctr, mine, cnt, rk, 4, v);
    const float vlo = detail::lerp_numpy(v[0], v[1], lo.frac);
    const float vhi = detail::lerp_numpy(v[2], v[3], hi.frac);
    detail::set_range_affine(fa, vlo, vhi);
  } else if (a.p.normalize == Normalize::minmax) {
    float mn = 3.4e38f, mx = -3.4e38f;
    for (int i = threadIdx.x; i < cnt; i += kCThreads) {
      mn = detail::min_f(mn, mine[i]);
      mx = detail::max_f(mx, mine[i]);
    }
    cluster_min_max(cl, s, rctr, mn, mx);
    detail::set_range_affine(fa, mn, mx);
  } else if (a.p.normalize == Normalize::zscore) {
    double sum = 0.0;
    for (int i = threadIdx.x; i < cnt; i += kCThreads) sum += mine[i];
    const double mean = cluster_sum(cl, s, rctr, sum) / static_cast<double>(n);
    double ss = 0.0;
    for (int i = threadIdx.x; i < cnt; i += kCThreads) {
      const double d = mine[i] - mean;
      ss += d * d;
    }
    detail::set_zscore_affine(fa, mean, sqrt(cluster_sum(cl, s, rctr, ss) / static_cast<double>(n)));
  }

  // 4. output, NCHW, channels replicated: the strip's rows
  const int ch = a.p.channels;
  const int64_t q0 = static_cast<int64_t>(r0) * w;
  for (int i = threadIdx.x; i < cnt; i += kCThreads) {
    const float v = detail::apply_affine(mine[i], fa);
    if (a.p.out_type == OutputType::f32) {
      float* o = static_cast<float*>(a.out) + f * ch * n + q0 + i;
      for (int c = 0; c < ch; ++c) o[c * n] = v;
    } else {
      uint16_t* o = static_cast<uint16_t*>(a.out) + f * ch * n + q0 + i;
      const uint16_t hv = detail::float_to_half_rne(v);
      for (int c = 0; c < ch; ++c) o[c * n] = hv;
    }
  }
  cl.sync();  // no CTA leaves while another may still read its shared memory
#else
  __trap();  // never launched: the host takes this path only on sm_90+ code
#endif
}

}  // namespace
}  // namespace thyrofast
