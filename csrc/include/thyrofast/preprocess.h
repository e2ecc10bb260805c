// thyrofast preprocessing core: raw ultrasound frames -> network input.
//
// Public C++ API for device software that embeds thyrofast without Python.
// Link the CMake target `thyrofast::core`.  Spec v1 (the contract, identical
// on CPU and CUDA):
//
//  Input: N frames of H x W pixels with C = 1 (gray) or 3 (colour) samples,
//  uint8 or uint16, addressed through element strides (any sign), so crops,
//  flips and planar/interleaved layouts need no copy.  The result depends on
//  the pixel values only, never on the memory layout: any strides give
//  bit-identical output.  Size limits: the frame after the roi crop holds at
//  most kMaxFramePixels pixels (2^28, a 16384 x 16384 frame, over 8x an 8K
//  video frame) and at most kMaxFrameSide (2^20) per side; validate() refuses
//  larger crops before any work (one frame's work stays around a second, and
//  every size and index of the work fits comfortably in int64).  Per frame:
//   1. crop to roi (x, y, w, h), which must lie inside the frame;
//   2. luma: y = (0.299 R + 0.587 G + 0.114 B) / max_value (channel order
//      rgb or bgr), gray: y = v / max_value; max_value defaults to 255 / 65535;
//   3. resize to (out_h, out_w), separable per axis: exact area averaging when
//      the axis shrinks (box [i*s, (i+1)*s), s = in/out; = OpenCV INTER_AREA),
//      linear interpolation with half-pixel centres clamped at the borders
//      when it grows (= OpenCV INTER_LINEAR);
//   4. denoise at the output resolution: none, median3, median5 (k x k median,
//      replicated borders) or srad (Yu & Acton 2002, Rodinia discretisation,
//      on J = exp(y), result log(J); q0^2(0) = median of q^2 over the frame at
//      the first iteration; q0^2(n) = max(q0^2(0) exp(-2 rho n lambda), 1e-10));
//   5. normalize per frame: percentile (lo, hi = NumPy 'linear' percentiles,
//      clip((z - lo) / (hi - lo), 0, 1)), minmax, zscore (population std) or
//      none; a degenerate frame (hi - lo or std < 1e-6) becomes all zeros;
//      then (z - mean) / std;
//   6. output N x channels x out_h x out_w float32 or float16 (round to
//      nearest even), C-contiguous, channels 1 or 3 (replicated).
//
//  Numerics: float32 throughout, with exp/log evaluated by the same
//  polynomials on CPU and GPU; exp arguments are clamped to [-87, 88].
//
//  Threads: every function is reentrant and may be called from several
//  threads at once (no global state; scratch memory is per thread).  Calls
//  must not share an output buffer.
//
//  Errors: invalid arguments throw std::invalid_argument; CUDA failures throw
//  thyrofast::cuda_error (a std::runtime_error carrying the CUDA error string).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace thyrofast {

enum class PixelType : int { u8 = 0, u16 = 1 };
enum class OutputType : int { f32 = 0, f16 = 1 };
enum class ChannelOrder : int { rgb = 0, bgr = 1 };
enum class Denoise : int { none = 0, median3 = 1, median5 = 2, srad = 3 };
enum class Normalize : int { percentile = 0, minmax = 1, zscore = 2, none = 3 };

constexpr int64_t kMaxOutputSide = 4096;
// Largest frame the core resizes, after the roi crop (see the spec above):
// roi_h * roi_w <= kMaxFramePixels and roi_h, roi_w <= kMaxFrameSide.  The
// side bound also bounds the resize taps per axis (<= kMaxFrameSide) and so
// the per-axis weight tables (about in_len + 2 * out_len floats).
constexpr int64_t kMaxFramePixels = int64_t{1} << 28;
constexpr int64_t kMaxFrameSide = int64_t{1} << 20;

struct PreprocessParams {
  bool has_roi = false;
  int64_t roi_x = 0, roi_y = 0, roi_w = 0, roi_h = 0;
  ChannelOrder channel_order = ChannelOrder::rgb;
  double max_value = 0.0;  // 0: 255 for u8, 65535 for u16
  int64_t out_h = 224, out_w = 224;
  Denoise denoise = Denoise::srad;
  int srad_iterations = 10;
  float srad_lambda = 0.5f;
  float srad_rho = 1.0f / 6.0f;
  Normalize normalize = Normalize::percentile;
  float percentile_lo = 1.0f, percentile_hi = 99.0f;
  float mean = 0.0f, std = 1.0f;
  int channels = 1;
  OutputType out_type = OutputType::f32;
};

// A strided view of N frames of H x W x C pixels.  Strides are in elements
// (not bytes) and may be negative; `data` points at element [0, 0, 0, 0].
struct FrameBatch {
  const void* data = nullptr;
  PixelType type = PixelType::u8;
  int64_t n = 0, h = 0, w = 0, c = 1;
  int64_t stride_n = 0, stride_h = 0, stride_w = 0, stride_c = 0;
};

class cuda_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws std::invalid_argument with a precise message if the batch or the
// parameters break the spec.  Every entry point calls it.
void validate(const FrameBatch& in, const PreprocessParams& p);

// Elements (not bytes) of the output for this batch: n * channels * out_h * out_w.
// Needs only in.n and the output parameters (in.data may still be null);
// throws std::invalid_argument when they are out of range, so the result is
// always a positive size that fits.
int64_t output_elements(const FrameBatch& in, const PreprocessParams& p);
size_t output_bytes(const FrameBatch& in, const PreprocessParams& p);

// CPU implementation.  `out` must hold output_bytes() bytes, C-contiguous
// NCHW.  Frames are processed in parallel on `threads` threads (<= 0: all
// cores); results are bit-identical for any thread count.
void preprocess_cpu(const FrameBatch& in, const PreprocessParams& p, void* out, int threads = 0);

// CUDA implementation (throws cuda_error "built without CUDA" when the
// library was built without it).  `in.data` and `out` are device pointers;
// work is enqueued on `stream` (a cudaStream_t, nullptr = legacy default) and
// the call returns without synchronizing.
void preprocess_cuda(const FrameBatch& in, const PreprocessParams& p, void* out, void* stream);

// Same, for host input/output: copies through pinned staging buffers on
// `stream`, and synchronizes that stream before returning.
void preprocess_cuda_host(const FrameBatch& in, const PreprocessParams& p, void* out_host, void* stream);

// Build facts.
bool built_with_cuda();
bool built_with_openmp();
std::string cuda_architectures();  // e.g. "80-real;86-real;89-real;90", "" without CUDA
int cuda_device_count();           // 0 without CUDA or without a usable driver/device
// Which CUDA kernel the last preprocess_cuda* call in this process launched:
// "cluster:S" (sm_90+: a cluster of S CTAs per frame), "block" (one thread
// block per frame: older GPUs, or working strips too large for the cluster's
// shared memory), "" before any call or without CUDA.
std::string cuda_last_kernel();
std::string version();
std::string compiler();

// CPU code variants.  The CPU stages are compiled for several instruction
// sets and one is chosen at the first call from the CPU's features:
// "baseline" (x86-64-v2: SSE4.2, POPCNT), "avx2" (x86-64-v3: AVX2, FMA,
// F16C), or "native" in a THYROFAST_NATIVE build (-march=native, the only
// one).  Every variant gives bit-identical results.  The environment
// variable THYROFAST_CPU_VARIANT=<name> forces one (for tests and bug
// reports); naming one this build lacks or this CPU cannot run makes
// cpu_variant() and preprocess_cpu() throw std::runtime_error.
std::string cpu_variant();            // the variant preprocess_cpu runs
std::string cpu_variants_built();     // comma-separated, lowest first
std::string cpu_variants_runnable();  // those of them this CPU can run

}  // namespace thyrofast
