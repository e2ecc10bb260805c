// Validation and build facts shared by the CPU and CUDA entry points.
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "thyrofast/preprocess.h"

#ifndef THYROFAST_VERSION
#define THYROFAST_VERSION "unknown"
#endif
#ifndef THYROFAST_CUDA_ARCHS
#define THYROFAST_CUDA_ARCHS ""
#endif

namespace thyrofast {

namespace {
[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// Sizes are int64 from the caller: products are checked by division, never formed first (no overflow).
constexpr int64_t kMaxElements = int64_t{1} << 56;

bool product_fits(int64_t a, int64_t b, int64_t limit) { return a >= 1 && b >= 1 && a <= limit / b; }

// What output_elements needs: a positive batch size, output side and channel count, and a product that fits.
void validate_output_shape(const FrameBatch& in, const PreprocessParams& p) {
  if (in.n < 1) fail("the batch holds no frames (N = 0)");
  if (p.out_h < 1 || p.out_w < 1 || p.out_h > kMaxOutputSide || p.out_w > kMaxOutputSide) {
    std::ostringstream m;
    m << "size must be between 1 and " << kMaxOutputSide << " per side, got (" << p.out_h << ", " << p.out_w
      << ")";
    fail(m.str());
  }
  if (p.channels != 1 && p.channels != 3) fail("channels must be 1 or 3");
  if (p.out_type != OutputType::f32 && p.out_type != OutputType::f16) fail("output dtype must be float32 or float16");
  if (!product_fits(in.n, int64_t{p.channels} * p.out_h * p.out_w, kMaxElements)) fail("the output is too large");
}
}  // namespace

void validate(const FrameBatch& in, const PreprocessParams& p) {
  if (in.type != PixelType::u8 && in.type != PixelType::u16) fail("input pixel type must be uint8 or uint16");
  if (in.n < 1) fail("the batch holds no frames (N = 0)");
  if (in.h < 1 || in.w < 1) {
    std::ostringstream m;
    m << "frames must be at least 1x1 pixels, got " << in.h << "x" << in.w;
    fail(m.str());
  }
  if (in.c != 1 && in.c != 3) {
    std::ostringstream m;
    m << "frames must have 1 (gray) or 3 (RGB/BGR) channels, got " << in.c;
    fail(m.str());
  }
  if (!product_fits(in.h, in.w, kMaxElements / in.c) || !product_fits(in.n, in.h * in.w * in.c, kMaxElements))
    fail("the input is too large (N * H * W * C must stay below 2^56)");
  if (in.data == nullptr) fail("input data pointer is null");
  if (p.has_roi) {
    if (p.roi_w < 1 || p.roi_h < 1) fail("roi width and height must be >= 1");
    // compared as w > in.w - x (x is within [0, in.w] here), not x + w > in.w, which can overflow
    if (p.roi_x < 0 || p.roi_y < 0 || p.roi_x > in.w || p.roi_y > in.h || p.roi_w > in.w - p.roi_x ||
        p.roi_h > in.h - p.roi_y) {
      std::ostringstream m;
      m << "roi (x=" << p.roi_x << ", y=" << p.roi_y << ", w=" << p.roi_w << ", h=" << p.roi_h
        << ") does not lie inside the " << in.w << "x" << in.h << " (WxH) frame";
      fail(m.str());
    }
  }
  {
    // the per-frame work is set by the crop: refuse what no ultrasound frame
    // needs before any of it starts (a 200000 x 200000 broadcast view of one
    // pixel otherwise ran for 15 s, and larger sides overflowed)
    const int64_t rh = p.has_roi ? p.roi_h : in.h, rw = p.has_roi ? p.roi_w : in.w;
    if (rh > kMaxFrameSide || rw > kMaxFrameSide || !product_fits(rh, rw, kMaxFramePixels)) {
      std::ostringstream m;
      m << "the frame" << (p.has_roi ? " roi" : "") << " is " << rw << "x" << rh
        << " (WxH) pixels; the core resizes at most " << kMaxFramePixels << " (2^28) pixels per frame and "
        << kMaxFrameSide << " (2^20) per side: crop it with an roi or downscale it first";
      fail(m.str());
    }
  }
  validate_output_shape(in, p);
  if (!(p.max_value >= 0.0) || !std::isfinite(p.max_value)) fail("max_value must be a positive finite number");
  if (p.channel_order != ChannelOrder::rgb && p.channel_order != ChannelOrder::bgr)
    fail("channel_order must be rgb or bgr");
  switch (p.denoise) {
    case Denoise::none:
    case Denoise::median3:
    case Denoise::median5:
      break;
    case Denoise::srad:
      if (p.srad_iterations < 0 || p.srad_iterations > 1000) fail("srad_iterations must be in [0, 1000]");
      if (!(p.srad_lambda > 0.0f && p.srad_lambda <= 1.0f)) fail("srad_lambda must lie in (0, 1]");
      if (!(p.srad_rho >= 0.0f) || !std::isfinite(p.srad_rho)) fail("srad_rho must be a finite number >= 0");
      break;
    default:
      fail("unknown denoise mode");
  }
  switch (p.normalize) {
    case Normalize::percentile:
      if (!(p.percentile_lo >= 0.0f && p.percentile_lo < p.percentile_hi && p.percentile_hi <= 100.0f))
        fail("percentiles must satisfy 0 <= lo < hi <= 100");
      break;
    case Normalize::minmax:
    case Normalize::zscore:
    case Normalize::none:
      break;
    default:
      fail("unknown normalize mode");
  }
  if (!std::isfinite(p.mean)) fail("mean must be finite");
  if (!(p.std > 0.0f) || !std::isfinite(p.std)) fail("std must be a finite number > 0");
}

int64_t output_elements(const FrameBatch& in, const PreprocessParams& p) {
  validate_output_shape(in, p);
  return in.n * static_cast<int64_t>(p.channels) * p.out_h * p.out_w;
}

size_t output_bytes(const FrameBatch& in, const PreprocessParams& p) {
  return static_cast<size_t>(output_elements(in, p)) * (p.out_type == OutputType::f32 ? 4u : 2u);
}

bool built_with_cuda() { return THYROFAST_WITH_CUDA != 0; }

bool built_with_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

std::string cuda_architectures() { return THYROFAST_CUDA_ARCHS; }

std::string version() { return THYROFAST_VERSION; }

std::string compiler() {
  std::ostringstream m;
#if defined(__clang__)
  m << "clang " << __clang_major__ << "." << __clang_minor__ << "." << __clang_patchlevel__;
#elif defined(__GNUC__)
  m << "gcc " << __GNUC__ << "." << __GNUC_MINOR__ << "." << __GNUC_PATCHLEVEL__;
#elif defined(_MSC_VER)
  m << "msvc " << _MSC_VER;
#else
  m << "unknown";
#endif
  return m.str();
}

}  // namespace thyrofast
