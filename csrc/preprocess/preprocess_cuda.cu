// CUDA implementation of preprocessing spec v1, all frames in ONE launch.
// Two kernels, chosen on the host per call (launch_preprocess):
//  - sm_90+: preprocess_cluster_kernel (preprocess_cuda_cluster.cuh), one
//    thread-block cluster of up to 16 CTAs per frame, the working images in
//    the CTAs' shared memory;
//  - the fallback below (older GPUs, or strips that do not fit): the whole
//    pipeline for one frame in one thread block.
// THYROFAST_CUDA_KERNEL=block|cluster forces one (tests run both), and
// THYROFAST_CUDA_CLUSTER=N the cluster size where it fits.
//
// Stage order and per-pixel math are those of preprocess_cpu.cpp (both call
// preprocess_math.h), so the CPU path is the executable spec of this file.
// Layout: the block's working images use the CPU's padded layout.  When the
// three working images fit in shared memory (outputs up to ~128 x 128 on
// sm_90) they live there; larger outputs (224 x 224: 3 x 200 KiB) use a
// per-frame global workspace that stays L2-resident for a batch's frames in
// flight - the "slower path", exercised by the tests at 224 x 224.  The
// input is read once from device memory, the output written once.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "preprocess_math.h"
#include "thyrofast/preprocess.h"

namespace thyrofast {
namespace {

using detail::AxisGeometry;
using detail::LumaCoeffs;

constexpr int kThreads = 512;
constexpr int64_t kPad = 2;
constexpr int kMaxTaps = 64;  // resize weights per axis kept in per-thread arrays (s <= 62)
constexpr int kCandidateCap = 2048;

[[noreturn]] void throw_cuda(cudaError_t err, const char* what, const char* file, int line) {
  std::ostringstream m;
  m << "CUDA error in " << what << " (" << file << ":" << line << "): " << cudaGetErrorName(err) << ": "
    << cudaGetErrorString(err);
  throw cuda_error(m.str());
}

#define TF_CUDA_CHECK(expr)                                              \
  do {                                                                   \
    const cudaError_t tf_err_ = (expr);                                  \
    if (tf_err_ != cudaSuccess) throw_cuda(tf_err_, #expr, __FILE__, __LINE__); \
  } while (0)

struct KernelArgs {
  FrameBatch in;
  PreprocessParams p;
  AxisGeometry gy, gx;
  LumaCoeffs k;
  int64_t roi_x, roi_y;
  int64_t frame0;         // first frame of this launch (batches beyond the grid limit take several)
  void* out;
  float* workspace;       // global workspace (nullptr when the images are in shared memory), per block
  int64_t ws_frame;       // floats per frame in the workspace
  int images_in_shared;   // 1: a, b, coef live in dynamic shared memory
};

// ------------------------------------------------------- block reductions ---
struct SharedScratch {
  float red_f[kThreads / 32 * 2];
  double red_d[kThreads / 32];
  int32_t hist[detail::kSelectBins + 1];
  int32_t wsum[kThreads / 32];
  float cand[kCandidateCap];
  int32_t cand_count;
  int32_t found_bin;
  float result;
};

__device__ inline void block_min_max(float& mn, float& mx, SharedScratch& s) {
  for (int o = 16; o > 0; o >>= 1) {
    mn = detail::min_f(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    mx = detail::max_f(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) {
    s.red_f[warp * 2] = mn;
    s.red_f[warp * 2 + 1] = mx;
  }
  __syncthreads();
  mn = s.red_f[0];
  mx = s.red_f[1];
  for (int w = 1; w < kThreads / 32; ++w) {
    mn = detail::min_f(mn, s.red_f[w * 2]);
    mx = detail::max_f(mx, s.red_f[w * 2 + 1]);
  }
  __syncthreads();
}

__device__ inline double block_sum(double v, SharedScratch& s) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) s.red_d[warp] = v;
  __syncthreads();
  double t = 0.0;
  for (int w = 0; w < kThreads / 32; ++w) t += s.red_d[w];  // same order in every thread
  __syncthreads();
  return t;
}

__device__ inline int32_t block_count(int32_t v, SharedScratch& s) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) s.wsum[warp] = v;
  __syncthreads();
  int32_t t = 0;
  for (int w = 0; w < kThreads / 32; ++w) t += s.wsum[w];
  __syncthreads();
  return t;
}

// Pixel q (0 <= q < h*w) of a padded image.
__device__ inline float& px(float* img, int64_t q, int64_t w, int64_t wp) {
  return img[(q / w + kPad) * wp + (q % w) + kPad];
}

// Min and max of the h*w interior values of `img` over the whole block.
__device__ inline void frame_min_max(float* img, int64_t n, int64_t w, int64_t wp, float& mn, float& mx,
                                     SharedScratch& s) {
  mn = 3.4e38f;
  mx = -3.4e38f;
  for (int64_t q = threadIdx.x; q < n; q += kThreads) {
    const float v = px(img, q, w, wp);
    mn = detail::min_f(mn, v);
    mx = detail::max_f(mx, v);
  }
  block_min_max(mn, mx, s);
}

// The exact r-th smallest of the h*w interior values of `img` (same result as
// the CPU's select_ranks: order statistics do not depend on the method).
// Iterative histogram refinement: the member set [lo, hi] shrinks every
// round until it holds one distinct value or few enough to rank directly.
__device__ float block_select(float* img, int64_t h, int64_t w, int64_t wp, int64_t r, SharedScratch& s) {
  const int64_t n = h * w;
  float lo, hi;
  frame_min_max(img, n, w, wp, lo, hi, s);
  int64_t below = 0;  // members' rank offset: values < lo
  for (int round = 0; round < 64; ++round) {
    if (!(hi > lo)) return lo;
    int32_t mine = 0;
    for (int64_t q = threadIdx.x; q < n; q += kThreads) {
      const float v = px(img, q, w, wp);
      mine += (v >= lo && v <= hi) ? 1 : 0;
    }
    const int32_t members = block_count(mine, s);
    if (members <= kCandidateCap) {
      if (threadIdx.x == 0) s.cand_count = 0;
      __syncthreads();
      for (int64_t q = threadIdx.x; q < n; q += kThreads) {
        const float v = px(img, q, w, wp);
        if (v >= lo && v <= hi) s.cand[atomicAdd(&s.cand_count, 1)] = v;
      }
      __syncthreads();
      const int64_t want = r - below;
      for (int i = threadIdx.x; i < members; i += kThreads) {
        const float v = s.cand[i];
        int less = 0, equal_before = 0;
        for (int j = 0; j < members; ++j) {
          less += s.cand[j] < v ? 1 : 0;
          equal_before += (s.cand[j] == v && j < i) ? 1 : 0;
        }
        if (less + equal_before == want) s.result = v;  // exactly one thread matches
      }
      __syncthreads();
      const float res = s.result;
      __syncthreads();
      return res;
    }
    const float scale = static_cast<float>(detail::kSelectBins) / (hi - lo);
    for (int b = threadIdx.x; b <= detail::kSelectBins; b += kThreads) s.hist[b] = 0;
    __syncthreads();
    for (int64_t q = threadIdx.x; q < n; q += kThreads) {
      const float v = px(img, q, w, wp);
      if (v >= lo && v <= hi) atomicAdd(&s.hist[detail::select_bin(v, lo, scale)], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // serial scan over the bins: short next to the passes over the image
      int64_t run = below;
      int found = detail::kSelectBins - 1;
      for (int b = 0; b < detail::kSelectBins; ++b) {
        const int64_t c = s.hist[b];
        if (r < run + c) {
          found = b;
          break;
        }
        run += c;
      }
      s.found_bin = found;
      s.hist[detail::kSelectBins] = static_cast<int32_t>(run - below);  // members below the bin
    }
    __syncthreads();
    const int fb = s.found_bin;
    below += s.hist[detail::kSelectBins];
    float nlo = 3.4e38f, nhi = -3.4e38f;
    for (int64_t q = threadIdx.x; q < n; q += kThreads) {
      const float v = px(img, q, w, wp);
      if (v >= lo && v <= hi && detail::select_bin(v, lo, scale) == fb) {
        nlo = detail::min_f(nlo, v);
        nhi = detail::max_f(nhi, v);
      }
    }
    block_min_max(nlo, nhi, s);
    lo = nlo;
    hi = nhi;
  }
  return lo;  // unreachable in practice: every round drops at least one distinct value
}

__device__ void replicate_border(float* img, int64_t h, int64_t w, int64_t wp, int64_t pad) {
  __syncthreads();
  for (int64_t i = threadIdx.x; i < h; i += kThreads) {
    float* row = img + (i + kPad) * wp;
    for (int64_t q = 1; q <= pad; ++q) {
      row[kPad - q] = row[kPad];
      row[kPad + w - 1 + q] = row[kPad + w - 1];
    }
  }
  __syncthreads();
  for (int64_t x = threadIdx.x; x < wp; x += kThreads)
    for (int64_t q = 1; q <= pad; ++q) {
      img[(kPad - q) * wp + x] = img[kPad * wp + x];
      img[(kPad + h - 1 + q) * wp + x] = img[(kPad + h - 1) * wp + x];
    }
  __syncthreads();
}

template <typename T>
__device__ inline float luma_at(const KernelArgs& a, const T* frame, int64_t y, int64_t x) {
  const T* p = frame + (a.roi_y + y) * a.in.stride_h + (a.roi_x + x) * a.in.stride_w;
  if (a.in.c == 1) return static_cast<float>(p[0]) * a.k.gray;
  return a.k.r * static_cast<float>(p[0]) + a.k.g * static_cast<float>(p[a.in.stride_c]) +
         a.k.b * static_cast<float>(p[2 * a.in.stride_c]);
}

// One output pixel of crop + luma + resize: the weights of both axes in
// per-thread arrays (windows up to kMaxTaps samples, downscaling <= 62x).
template <typename T>
__device__ inline float resize_pixel(const KernelArgs& a, const T* frame, int64_t i, int64_t j) {
  float wy[kMaxTaps], wx[kMaxTaps];
  const int64_t y0 = detail::axis_taps(a.gy, i, wy);
  const int64_t x0 = detail::axis_taps(a.gx, j, wx);
  float acc = 0.0f;
  for (int64_t ty = 0; ty < a.gy.taps; ++ty) {
    if (wy[ty] == 0.0f) continue;
    float row = 0.0f;
    for (int64_t tx = 0; tx < a.gx.taps; ++tx) row += wx[tx] * luma_at<T>(a, frame, y0 + ty, x0 + tx);
    acc += wy[ty] * row;
  }
  return acc;
}

// The same sum for a wider area window on either axis (only area mode can
// be wider than kMaxTaps): its weights are computed as they are used.
template <typename T>
__device__ inline float resize_pixel_wide(const KernelArgs& a, const T* frame, int64_t i, int64_t j) {
  float wy[kMaxTaps], wx[kMaxTaps];
  const bool wide_y = a.gy.taps > kMaxTaps, wide_x = a.gx.taps > kMaxTaps;
  const int64_t y0 = wide_y ? detail::area_window_start(a.gy, i) : detail::axis_taps(a.gy, i, wy);
  const int64_t x0 = wide_x ? detail::area_window_start(a.gx, j) : detail::axis_taps(a.gx, j, wx);
  float acc = 0.0f;
  for (int64_t ty = 0; ty < a.gy.taps; ++ty) {
    const float wyt = wide_y ? detail::area_weight(a.gy, i, y0 + ty) : wy[ty];
    if (wyt == 0.0f) continue;
    float row = 0.0f;
    for (int64_t tx = 0; tx < a.gx.taps; ++tx) {
      const float wxt = wide_x ? detail::area_weight(a.gx, j, x0 + tx) : wx[tx];
      row += wxt * luma_at<T>(a, frame, y0 + ty, x0 + tx);
    }
    acc += wyt * row;
  }
  return acc;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) preprocess_kernel(const KernelArgs a) {
  extern __shared__ __align__(16) unsigned char dyn_smem[];
  __shared__ SharedScratch s;
  const int64_t f = a.frame0 + blockIdx.x;
  const int64_t h = a.p.out_h, w = a.p.out_w, wp = w + 2 * kPad;
  const int64_t img_floats = (h + 2 * kPad) * wp;
  float* base = a.images_in_shared ? reinterpret_cast<float*>(dyn_smem) : a.workspace + static_cast<int64_t>(blockIdx.x) * a.ws_frame;
  float* img_a = base;
  float* img_b = base + img_floats;
  float* coef = base + 2 * img_floats;  // (h + 1) x (w + 1)
  const T* frame = static_cast<const T*>(a.in.data) + f * a.in.stride_n;
  const int64_t n = h * w;

  // 1. crop + luma + resize (direct 2-D form of the separable weights: each
  //    output pixel reads its own input box; neighbours' boxes hit in cache)
  const bool wide = a.gy.taps > kMaxTaps || a.gx.taps > kMaxTaps;
  for (int64_t q = threadIdx.x; q < n; q += kThreads) {
    const int64_t i = q / w, j = q % w;
    img_a[(i + kPad) * wp + j + kPad] = wide ? resize_pixel_wide<T>(a, frame, i, j) : resize_pixel<T>(a, frame, i, j);
  }
  __syncthreads();

  // 2. denoise
  float* img = img_a;
  if (a.p.denoise == Denoise::median3 || a.p.denoise == Denoise::median5) {
    const int R = a.p.denoise == Denoise::median3 ? 1 : 2;
    replicate_border(img_a, h, w, wp, R);
    for (int64_t q = threadIdx.x; q < n; q += kThreads) {
      const int64_t i = q / w + kPad, j = q % w + kPad;
      float v[25];
      if (R == 1) {
        int m = 0;
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) v[m++] = img_a[(i + dy) * wp + j + dx];
        img_b[i * wp + j] = detail::median_of<9>(v);
      } else {
        int m = 0;
        for (int dy = -2; dy <= 2; ++dy)
          for (int dx = -2; dx <= 2; ++dx) v[m++] = img_a[(i + dy) * wp + j + dx];
        img_b[i * wp + j] = detail::median_of<25>(v);
      }
    }
    __syncthreads();
    img = img_b;
  } else if (a.p.denoise == Denoise::srad && a.p.srad_iterations > 0) {
    float ymin, ymax;
    frame_min_max(img_a, n, w, wp, ymin, ymax, s);
    const float shift = detail::srad_log_shift(ymax);
    for (int64_t q = threadIdx.x; q < n; q += kThreads) {
      float& v = px(img_a, q, w, wp);
      v = detail::exp_f(detail::clamp_f(v, -87.0f, 88.0f) - shift);
    }
    const int64_t wc = w + 1;
    const float quarter_lambda = 0.25f * a.p.srad_lambda;
    float q0sq0 = 0.0f;
    float* cur = img_a;
    float* nxt = img_b;
    for (int it = 0; it < a.p.srad_iterations; ++it) {
      replicate_border(cur, h, w, wp, 1);
      if (it == 0) {
        // q0^2(0) = median of q^2: q^2 into nxt's interior (a padded view
        // the select helper takes), which the update overwrites afterwards
        for (int64_t q = threadIdx.x; q < n; q += kThreads) {
          const int64_t i = q / w, j = q % w;
          const float* rc = cur + (i + kPad) * wp + kPad;
          px(nxt, q, w, wp) = detail::srad_q2(rc[j], rc[j - wp], rc[j + wp], rc[j - 1], rc[j + 1]);
        }
        __syncthreads();
        const float m0 = block_select(nxt, h, w, wp, (n - 1) / 2, s);
        const float m1 = block_select(nxt, h, w, wp, n / 2, s);
        q0sq0 = (m0 + m1) * 0.5f;
      }
      const float q0sq = detail::srad_q0sq(q0sq0, it, a.p.srad_rho, a.p.srad_lambda);
      const detail::SradCoeffK k = detail::srad_coeff_k(q0sq);
      for (int64_t q = threadIdx.x; q < n; q += kThreads) {
        const int64_t i = q / w, j = q % w;
        const float* rc = cur + (i + kPad) * wp + kPad;
        coef[i * wc + j] = detail::srad_coeff(detail::srad_q2_frac(rc[j], rc[j - wp], rc[j + wp], rc[j - 1], rc[j + 1]),
                                              k);
      }
      __syncthreads();
      for (int64_t i = threadIdx.x; i < h; i += kThreads) coef[i * wc + w] = coef[i * wc + w - 1];
      __syncthreads();  // the bottom row copies the right column's last value
      for (int64_t j = threadIdx.x; j < wc; j += kThreads) coef[h * wc + j] = coef[(h - 1) * wc + j];
      __syncthreads();
      for (int64_t q = threadIdx.x; q < n; q += kThreads) {
        const int64_t i = q / w, j = q % w;
        const float* rc = cur + (i + kPad) * wp + kPad;
        const float* cc = coef + i * wc;
        nxt[(i + kPad) * wp + kPad + j] = detail::srad_update(rc[j], rc[j - wp], rc[j + wp], rc[j - 1], rc[j + 1],
                                                              cc[j], cc[j + wc], cc[j + 1], quarter_lambda);
      }
      __syncthreads();
      float* t = cur;
      cur = nxt;
      nxt = t;
    }
    for (int64_t q = threadIdx.x; q < n; q += kThreads) {
      float& v = px(cur, q, w, wp);
      v = detail::log_f(v) + shift;
    }
    __syncthreads();
    img = cur;
  }

  // 3. per-frame normalization
  detail::FrameAffine fa{0.0f, 1.0f, 0, a.p.mean, 1.0f / a.p.std};
  if (a.p.normalize == Normalize::percentile) {
    const detail::PercentilePos lo = detail::percentile_pos(n, a.p.percentile_lo);
    const detail::PercentilePos hi = detail::percentile_pos(n, a.p.percentile_hi);
    const float v0 = block_select(img, h, w, wp, lo.k, s);
    const float v1 = block_select(img, h, w, wp, lo.k + 1 < n ? lo.k + 1 : n - 1, s);
    const float v2 = block_select(img, h, w, wp, hi.k, s);
    const float v3 = block_select(img, h, w, wp, hi.k + 1 < n ? hi.k + 1 : n - 1, s);
    const float vlo = detail::lerp_numpy(v0, v1, lo.frac);
    const float vhi = detail::lerp_numpy(v2, v3, hi.frac);
    detail::set_range_affine(fa, vlo, vhi);
  } else if (a.p.normalize == Normalize::minmax) {
    float mn, mx;
    frame_min_max(img, n, w, wp, mn, mx, s);
    detail::set_range_affine(fa, mn, mx);
  } else if (a.p.normalize == Normalize::zscore) {
    double sum = 0.0;
    for (int64_t q = threadIdx.x; q < n; q += kThreads) sum += px(img, q, w, wp);
    const double mean = block_sum(sum, s) / static_cast<double>(n);
    double ss = 0.0;
    for (int64_t q = threadIdx.x; q < n; q += kThreads) {
      const double d = px(img, q, w, wp) - mean;
      ss += d * d;
    }
    detail::set_zscore_affine(fa, mean, sqrt(block_sum(ss, s) / static_cast<double>(n)));
  }

  // 4. output, NCHW, channels replicated
  const int c = a.p.channels;
  for (int64_t q = threadIdx.x; q < n; q += kThreads) {
    const float v = detail::apply_affine(px(img, q, w, wp), fa);
    if (a.p.out_type == OutputType::f32) {
      float* o = static_cast<float*>(a.out) + f * c * n + q;
      for (int ch = 0; ch < c; ++ch) o[ch * n] = v;
    } else {
      uint16_t* o = static_cast<uint16_t*>(a.out) + f * c * n + q;
      const uint16_t hv = detail::float_to_half_rne(v);
      for (int ch = 0; ch < c; ++ch) o[ch * n] = hv;
    }
  }
}

}  // namespace
}  // namespace thyrofast

#include "preprocess_cuda_cluster.cuh"

namespace thyrofast {
namespace {

// Makes `device` current for the scope of a call and restores the caller's.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    TF_CUDA_CHECK(cudaGetDevice(&prev_));
    if (device != prev_) TF_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }

 private:
  int prev_ = 0;
};

int device_of(const void* ptr) {
  cudaPointerAttributes attr{};
  TF_CUDA_CHECK(cudaPointerGetAttributes(&attr, ptr));
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw std::invalid_argument("preprocess_cuda: input is not device memory (use preprocess_cuda_host for host arrays)");
  return attr.device;
}

// Per-device facts and one-time kernel attributes, cached: querying them
// on every call cost microseconds of a batch-1 call's budget.
struct DeviceInfo {
  bool ready = false;
  int optin = 0;          // max dynamic + static shared memory per block (opt-in)
  int sms = 0;
  bool cluster = false;   // the cluster kernel can run here (sm_90+ code, cc >= 9)
  int max_cluster = 8;    // 16 where non-portable cluster sizes are allowed
  size_t cluster_static = 0;  // static shared memory of the cluster kernel
  std::map<std::tuple<int, size_t, int>, int> active;  // (S, smem, type) -> max active clusters
};

std::mutex g_dev_mu;
DeviceInfo g_dev[64];
std::atomic<int> g_last_kernel{-1};  // -1 none yet, 0 block kernel, S: cluster of S CTAs

DeviceInfo& device_info(int dev) {
  if (dev < 0 || dev >= 64) throw cuda_error("preprocess_cuda: device ordinal out of range");
  DeviceInfo& d = g_dev[dev];
  if (d.ready) return d;
  int major = 0;
  TF_CUDA_CHECK(cudaDeviceGetAttribute(&d.optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  TF_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  TF_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  // the fallback kernel may use all of the opt-in shared memory: set once
  for (auto k : {preprocess_kernel<uint8_t>, preprocess_kernel<uint16_t>})
    TF_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       d.optin - static_cast<int>(sizeof(SharedScratch))));
  if (major >= 9) {
    cudaFuncAttributes fa{};
    TF_CUDA_CHECK(cudaFuncGetAttributes(&fa, preprocess_cluster_kernel<uint8_t>));
    // the binary the device runs holds the real kernel only when built for >= sm_90
    d.cluster = fa.binaryVersion >= 90 && fa.ptxVersion >= 90;
    if (d.cluster) {
      const size_t st = fa.sharedSizeBytes;  // the same for both pixel types
      d.cluster_static = st;
      for (auto k : {preprocess_cluster_kernel<uint8_t>, preprocess_cluster_kernel<uint16_t>}) {
        TF_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           d.optin - static_cast<int>(st)));
        if (cudaFuncSetAttribute(k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
          cudaGetLastError();
          d.max_cluster = 8;
        } else {
          d.max_cluster = kMaxClusterSize;
        }
      }
    }
  }
  d.ready = true;
  return d;
}

// Launch configuration of `frames` clusters of S CTAs; the cluster attribute
// lives beside the config that points at it, so the pair is never copied.
struct ClusterLaunch {
  cudaLaunchConfig_t cfg{};
  cudaLaunchAttribute attr[1];
  ClusterLaunch(int64_t frames, int S, size_t smem, cudaStream_t stream) {
    cfg.gridDim = dim3(static_cast<unsigned>(frames * S), 1, 1);
    cfg.blockDim = dim3(kCThreads, 1, 1);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(S);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  ClusterLaunch(const ClusterLaunch&) = delete;
  ClusterLaunch& operator=(const ClusterLaunch&) = delete;
};

// Most clusters of S CTAs with `smem` dynamic bytes resident at once (0: none fits).
template <typename T>
int max_active_clusters(DeviceInfo& d, int S, size_t smem, cudaStream_t stream) {
  const auto key = std::make_tuple(S, smem, static_cast<int>(sizeof(T)));
  const auto it = d.active.find(key);
  if (it != d.active.end()) return it->second;
  const ClusterLaunch one(1, S, smem, stream);
  int nc = 0;
  if (cudaOccupancyMaxActiveClusters(&nc, preprocess_cluster_kernel<T>, &one.cfg) != cudaSuccess) {
    cudaGetLastError();
    nc = 0;
  }
  d.active[key] = nc;
  return nc;
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return fallback;
  return std::atoi(v);
}

// The cluster size for this call (0: take the fallback kernel).  Estimated
// time ~ waves x (rows per CTA + a fixed cost for the barriers, in rows):
// batch 1 gets the largest cluster, a big batch smaller ones.
template <typename T>
int choose_cluster(DeviceInfo& d, const ClusterArgs& ca, int64_t n, cudaStream_t stream, size_t* smem_out,
                   int* rows_out) {
  const char* mode = std::getenv("THYROFAST_CUDA_KERNEL");
  if (mode != nullptr && std::strcmp(mode, "block") == 0) return 0;
  if (!d.cluster) return 0;
  if (ca.ty > 4096 || ca.tx > 4096) return 0;  // huge area windows: tables would not fit anyway
  const int forced = env_int("THYROFAST_CUDA_CLUSTER", 0);
  const size_t st = d.cluster_static;
  const size_t avail = static_cast<size_t>(d.optin) > st ? static_cast<size_t>(d.optin) - st : 0;
  int best = 0, best_rows = 0;
  size_t best_smem = 0;
  double best_est = 0.0;
  for (int S = kMaxClusterSize; S >= 1; S /= 2) {
    if (S > d.max_cluster) continue;
    if (forced > 0 && S != forced) continue;
    const int R = (ca.h + S - 1) / S;
    if (S > 1 && R * (S - 1) >= ca.h && forced == 0) continue;  // a CTA without rows
    const size_t smem = cluster_dyn_smem(R, ca.w, ca.ty, ca.tx);
    if (smem > avail) continue;
    const int nc = max_active_clusters<T>(d, S, smem, stream);
    if (nc <= 0) continue;
    const double waves = static_cast<double>((n + nc - 1) / nc);
    const double est = waves * (R + 16.0);
    if (best == 0 || est < best_est) {
      best = S;
      best_est = est;
      best_rows = R;
      best_smem = smem;
    }
  }
  *smem_out = best_smem;
  *rows_out = best_rows;
  return best;
}

template <typename T>
bool launch_cluster(const KernelArgs& a, void* out, cudaStream_t stream, DeviceInfo& d) {
  ClusterArgs ca;
  ca.in = a.in;
  ca.p = a.p;
  ca.gy = a.gy;
  ca.gx = a.gx;
  ca.k = a.k;
  ca.roi_x = a.roi_x;
  ca.roi_y = a.roi_y;
  ca.out = out;
  ca.h = static_cast<int>(a.p.out_h);
  ca.w = static_cast<int>(a.p.out_w);
  ca.ty = static_cast<int>(a.gy.taps);
  ca.tx = static_cast<int>(a.gx.taps);
  if (a.gy.taps > 4096 || a.gx.taps > 4096) return false;
  size_t smem = 0;
  int rows = 0;
  int S = 0;
  {
    std::lock_guard<std::mutex> lock(g_dev_mu);
    S = choose_cluster<T>(d, ca, a.in.n, stream, &smem, &rows);
  }
  if (S == 0) return false;
  ca.rows = rows;
  ca.region_c = static_cast<int>(cluster_region_c(rows, ca.w, ca.ty, ca.tx));
  const int64_t grid_max = (int64_t{1} << 31) - 1;
  const int64_t per_launch = grid_max / S;
  for (int64_t f0 = 0; f0 < a.in.n; f0 += per_launch) {
    ca.frame0 = f0;
    const int64_t frames = a.in.n - f0 < per_launch ? a.in.n - f0 : per_launch;
    const ClusterLaunch launch(frames, S, smem, stream);
    const cudaError_t err = cudaLaunchKernelEx(&launch.cfg, preprocess_cluster_kernel<T>, ca);
    if (err != cudaSuccess) throw_cuda(err, "preprocess_cluster_kernel launch", __FILE__, __LINE__);
  }
  g_last_kernel.store(S);
  return true;
}

void launch_preprocess(const FrameBatch& in, const PreprocessParams& p, void* out, cudaStream_t stream) {
  KernelArgs a;
  a.in = in;
  a.p = p;
  const int64_t rh = p.has_roi ? p.roi_h : in.h, rw = p.has_roi ? p.roi_w : in.w;
  a.roi_x = p.has_roi ? p.roi_x : 0;
  a.roi_y = p.has_roi ? p.roi_y : 0;
  a.gy = detail::axis_geometry(rh, p.out_h);
  a.gx = detail::axis_geometry(rw, p.out_w);
  const double max_value = p.max_value > 0.0 ? p.max_value : (in.type == PixelType::u8 ? 255.0 : 65535.0);
  a.k = detail::luma_coeffs(max_value, p.channel_order == ChannelOrder::bgr);
  a.out = out;

  int dev = 0;
  TF_CUDA_CHECK(cudaGetDevice(&dev));
  DeviceInfo* d = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_dev_mu);
    d = &device_info(dev);
  }
  if (in.type == PixelType::u8 ? launch_cluster<uint8_t>(a, out, stream, *d)
                               : launch_cluster<uint16_t>(a, out, stream, *d))
    return;

  const int64_t wp = p.out_w + 2 * kPad;
  const int64_t frame_floats = 2 * (p.out_h + 2 * kPad) * wp + (p.out_h + 1) * (p.out_w + 1);
  const size_t frame_bytes = static_cast<size_t>(frame_floats) * sizeof(float);
  const size_t static_smem = sizeof(SharedScratch);
  a.images_in_shared = frame_bytes + static_smem <= static_cast<size_t>(d->optin) ? 1 : 0;
  a.ws_frame = frame_floats;
  a.workspace = nullptr;
  // one block per frame; gridDim.x is at most 2^31 - 1, so a larger batch
  // (possible: N is int64) goes in several launches on the same stream
  const int64_t grid_max = (int64_t{1} << 31) - 1;
  const int64_t per_launch = in.n < grid_max ? in.n : grid_max;
  size_t dyn_smem = 0;
  if (a.images_in_shared) {
    dyn_smem = frame_bytes;
  } else {
    void* ws = nullptr;  // reused by each launch (stream-ordered)
    TF_CUDA_CHECK(cudaMallocAsync(&ws, frame_bytes * static_cast<size_t>(per_launch), stream));
    a.workspace = static_cast<float*>(ws);
  }
  auto kernel = in.type == PixelType::u8 ? preprocess_kernel<uint8_t> : preprocess_kernel<uint16_t>;
  // (the kernel's dynamic shared memory limit was raised once, in device_info)
  cudaError_t launch_err = cudaSuccess;
  for (int64_t f0 = 0; f0 < in.n && launch_err == cudaSuccess; f0 += per_launch) {
    a.frame0 = f0;
    const int64_t blocks = in.n - f0 < per_launch ? in.n - f0 : per_launch;
    kernel<<<static_cast<unsigned>(blocks), kThreads, dyn_smem, stream>>>(a);
    launch_err = cudaGetLastError();
  }
  if (a.workspace != nullptr) {
    const cudaError_t free_err = cudaFreeAsync(a.workspace, stream);
    if (launch_err == cudaSuccess) TF_CUDA_CHECK(free_err);
  }
  if (launch_err != cudaSuccess) throw_cuda(launch_err, "preprocess_kernel launch", __FILE__, __LINE__);
  g_last_kernel.store(0);
}

// Pinned staging buffers for host input/output, grown on demand, one set per
// process (calls through preprocess_cuda_host are serialized).
struct Staging {
  std::mutex mu;
  void* host_in = nullptr;
  size_t host_in_bytes = 0;
  void* host_out = nullptr;
  size_t host_out_bytes = 0;
};

Staging& staging() {
  static Staging s;
  return s;
}

void ensure_pinned(void** ptr, size_t* have, size_t need) {
  if (*have >= need) return;
  if (*ptr) TF_CUDA_CHECK(cudaFreeHost(*ptr));
  *ptr = nullptr;
  *have = 0;
  TF_CUDA_CHECK(cudaMallocHost(ptr, need));
  *have = need;
}

// Compact (N, rh, rw, C) copy of the roi crop: one memcpy per row where a
// row's pixels and channels are contiguous (the usual frame: a 1024 x 768
// frame is 768 calls, not 786k), else an element loop.
template <typename T>
void stage_roi(const T* src, const FrameBatch& in, int64_t rx, int64_t ry, int64_t rh, int64_t rw, T* dst) {
  const bool rows_contiguous = in.stride_w == in.c && (in.c == 1 || in.stride_c == 1);
  const int64_t row_elems = rw * in.c;
  for (int64_t f = 0; f < in.n; ++f)
    for (int64_t y = ry; y < ry + rh; ++y) {
      const T* row = src + f * in.stride_n + y * in.stride_h + rx * in.stride_w;
      if (rows_contiguous) {
        std::memcpy(dst, row, static_cast<size_t>(row_elems) * sizeof(T));
        dst += row_elems;
        continue;
      }
      for (int64_t x = 0; x < rw; ++x)
        for (int64_t c = 0; c < in.c; ++c) *dst++ = row[x * in.stride_w + c * in.stride_c];
    }
}

}  // namespace

std::string cuda_last_kernel() {
  const int k = g_last_kernel.load();
  if (k < 0) return "";
  if (k == 0) return "block";
  return "cluster:" + std::to_string(k);
}

void preprocess_cuda(const FrameBatch& in, const PreprocessParams& p, void* out, void* stream) {
  validate(in, p);
  if (out == nullptr) throw std::invalid_argument("output pointer is null");
  DeviceGuard guard(device_of(in.data));
  launch_preprocess(in, p, out, static_cast<cudaStream_t>(stream));
}

void preprocess_cuda_host(const FrameBatch& in, const PreprocessParams& p, void* out_host, void* stream_ptr) {
  validate(in, p);
  if (out_host == nullptr) throw std::invalid_argument("output pointer is null");
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const size_t elem = in.type == PixelType::u8 ? 1 : 2;
  // compact (N, rh, rw, C) copy of the roi crop of the strided host input
  // into pinned memory: only what the kernel reads (a small roi of a huge or
  // stride-0 frame must not stage the whole frame)
  const int64_t rx = p.has_roi ? p.roi_x : 0, ry = p.has_roi ? p.roi_y : 0;
  const int64_t rh = p.has_roi ? p.roi_h : in.h, rw = p.has_roi ? p.roi_w : in.w;
  const size_t in_bytes = static_cast<size_t>(in.n * rh * rw * in.c) * elem;
  const size_t out_bytes = output_bytes(in, p);
  Staging& st = staging();
  std::lock_guard<std::mutex> lock(st.mu);
  ensure_pinned(&st.host_in, &st.host_in_bytes, in_bytes);
  ensure_pinned(&st.host_out, &st.host_out_bytes, out_bytes);
  if (in.type == PixelType::u8)
    stage_roi(static_cast<const uint8_t*>(in.data), in, rx, ry, rh, rw, static_cast<uint8_t*>(st.host_in));
  else
    stage_roi(static_cast<const uint16_t*>(in.data), in, rx, ry, rh, rw, static_cast<uint16_t*>(st.host_in));
  void* d_in = nullptr;
  void* d_out = nullptr;
  TF_CUDA_CHECK(cudaMallocAsync(&d_in, in_bytes, stream));
  try {
    TF_CUDA_CHECK(cudaMallocAsync(&d_out, out_bytes, stream));
    TF_CUDA_CHECK(cudaMemcpyAsync(d_in, st.host_in, in_bytes, cudaMemcpyHostToDevice, stream));
    FrameBatch dev = in;
    dev.data = d_in;
    dev.h = rh;
    dev.w = rw;
    dev.stride_c = 1;
    dev.stride_w = in.c;
    dev.stride_h = rw * in.c;
    dev.stride_n = rh * rw * in.c;
    PreprocessParams dp = p;  // the staged frame is the crop: its roi is all of it
    dp.roi_x = 0;
    dp.roi_y = 0;
    launch_preprocess(dev, dp, d_out, stream);
    TF_CUDA_CHECK(cudaMemcpyAsync(st.host_out, d_out, out_bytes, cudaMemcpyDeviceToHost, stream));
    TF_CUDA_CHECK(cudaFreeAsync(d_in, stream));
    d_in = nullptr;
    TF_CUDA_CHECK(cudaFreeAsync(d_out, stream));
    d_out = nullptr;
    TF_CUDA_CHECK(cudaStreamSynchronize(stream));
  } catch (...) {
    if (d_in) cudaFreeAsync(d_in, stream);
    if (d_out) cudaFreeAsync(d_out, stream);
    throw;
  }
  std::memcpy(out_host, st.host_out, out_bytes);
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the non-sticky "no device / no driver" error
    return 0;
  }
  return n;
}

}  // namespace thyrofast
