// thyrofast core used from C++ with no Python: what device software does.
// Built by CMake with -DTHYROFAST_BUILD_TESTS=ON and run by ctest; the pytest
// test tests/test_cpp_core.py drives that build.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "thyrofast/preprocess.h"
#include "thyrofast/version.h"

namespace {
int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what.c_str());
    ++failures;
  } else {
    std::printf("ok: %s\n", what.c_str());
  }
}

thyrofast::FrameBatch gray_batch(const std::vector<uint8_t>& px, int64_t n, int64_t h, int64_t w) {
  thyrofast::FrameBatch b;
  b.data = px.data();
  b.type = thyrofast::PixelType::u8;
  b.n = n;
  b.h = h;
  b.w = w;
  b.c = 1;
  b.stride_n = h * w;
  b.stride_h = w;
  b.stride_w = 1;
  b.stride_c = 0;
  return b;
}
}  // namespace

int main() {
  using namespace thyrofast;
  // 1. identity resize, no denoise, no normalization: output = v / 255
  {
    std::vector<uint8_t> px(4 * 6);
    for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 10);
    PreprocessParams p;
    p.out_h = 4;
    p.out_w = 6;
    p.denoise = Denoise::none;
    p.normalize = Normalize::none;
    std::vector<float> out(static_cast<size_t>(output_elements(gray_batch(px, 1, 4, 6), p)));
    preprocess_cpu(gray_batch(px, 1, 4, 6), p, out.data(), 1);
    double err = 0;
    for (size_t i = 0; i < px.size(); ++i) err = std::fmax(err, std::fabs(out[i] - px[i] / 255.0));
    check(err < 1e-6, "identity resize gives v / 255");
  }
  // 2. 2x area shrink of a 2x2 block pattern averages each block
  {
    std::vector<uint8_t> px = {0, 0, 100, 100, 0, 0, 100, 100, 50, 50, 200, 200, 50, 50, 200, 200};
    PreprocessParams p;
    p.out_h = 2;
    p.out_w = 2;
    p.denoise = Denoise::none;
    p.normalize = Normalize::none;
    std::vector<float> out(4);
    preprocess_cpu(gray_batch(px, 1, 4, 4), p, out.data(), 1);
    const float want[4] = {0.0f, 100 / 255.0f, 50 / 255.0f, 200 / 255.0f};
    double err = 0;
    for (int i = 0; i < 4; ++i) err = std::fmax(err, std::fabs(out[i] - want[i]));
    check(err < 1e-6, "area shrink averages boxes");
  }
  // 3. full default pipeline (srad + percentile) on a batch: finite, in [0, 1], thread-independent
  {
    const int64_t n = 3, h = 120, w = 160;
    std::vector<uint8_t> px(static_cast<size_t>(n * h * w));
    uint32_t s = 12345u;
    for (auto& v : px) {
      s = s * 1664525u + 1013904223u;
      v = static_cast<uint8_t>(s >> 24);
    }
    PreprocessParams p;  // defaults: 224x224, srad(10), percentile(1, 99)
    std::vector<float> a(static_cast<size_t>(output_elements(gray_batch(px, n, h, w), p)));
    std::vector<float> b(a.size());
    preprocess_cpu(gray_batch(px, n, h, w), p, a.data(), 1);
    preprocess_cpu(gray_batch(px, n, h, w), p, b.data(), 2);
    bool finite = true, in_range = true;
    for (float v : a) {
      finite = finite && std::isfinite(v);
      in_range = in_range && v >= 0.0f && v <= 1.0f;
    }
    check(finite && in_range, "default pipeline output is finite and in [0, 1]");
    check(a == b, "results do not depend on the thread count");
  }
  // 4. float16 output: 1.0 -> 0x3c00, 0.5 -> 0x3800
  {
    std::vector<uint8_t> px = {255, 255, 255, 255};
    PreprocessParams p;
    p.out_h = 2;
    p.out_w = 2;
    p.denoise = Denoise::none;
    p.normalize = Normalize::none;
    p.out_type = OutputType::f16;
    p.std = 2.0f;
    std::vector<uint16_t> out(4);
    preprocess_cpu(gray_batch(px, 1, 2, 2), p, out.data(), 1);
    check(out[0] == 0x3800 && out[3] == 0x3800, "float16 output of 1.0 / 2 is 0x3800");
  }
  // 5. invalid arguments throw std::invalid_argument with a message
  {
    std::vector<uint8_t> px(16);
    PreprocessParams p;
    p.has_roi = true;
    p.roi_x = 2;
    p.roi_y = 0;
    p.roi_w = 3;
    p.roi_h = 2;
    bool threw = false;
    try {
      validate(gray_batch(px, 1, 4, 4), p);
    } catch (const std::invalid_argument& e) {
      threw = std::string(e.what()).find("roi") != std::string::npos;
    }
    check(threw, "roi outside the frame is refused");
    PreprocessParams q;
    q.srad_lambda = 1.5f;
    threw = false;
    try {
      validate(gray_batch(px, 1, 4, 4), q);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    check(threw, "srad_lambda > 1 is refused");
    // sizes near INT64_MAX must be refused, not overflow into a pass (found with UBSan)
    const auto refused = [](const FrameBatch& b, const PreprocessParams& pp, const char* word) {
      try {
        validate(b, pp);
      } catch (const std::invalid_argument& e) {
        return std::string(e.what()).find(word) != std::string::npos;
      }
      return false;
    };
    const int64_t big = INT64_MAX;
    PreprocessParams r;
    r.has_roi = true;
    r.roi_x = big;
    r.roi_y = 0;
    r.roi_w = 2;
    r.roi_h = 2;
    check(refused(gray_batch(px, 1, 4, 4), r, "roi"), "roi_x near INT64_MAX is refused");
    r.roi_x = 0;
    r.roi_y = big - 1;
    check(refused(gray_batch(px, 1, 4, 4), r, "roi"), "roi_y near INT64_MAX is refused");
    FrameBatch huge = gray_batch(px, int64_t{1} << 62, 4, 4);
    huge.data = nullptr;
    check(refused(huge, PreprocessParams{}, "too large"), "a batch whose size overflows is refused");
    FrameBatch null_data = gray_batch(px, 1, 4, 4);
    null_data.data = nullptr;
    check(refused(null_data, PreprocessParams{}, "null"), "a null input pointer is refused");
    // output_elements checks what it multiplies (the README sizes buffers with it)
    threw = false;
    try {
      (void)output_elements(gray_batch(px, -1, 4, 4), PreprocessParams{});
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    check(threw, "output_elements refuses a negative batch size");
    FrameBatch shape_only = gray_batch(px, 2, 4, 4);
    shape_only.data = nullptr;  // a size may be asked before the frames exist
    check(output_elements(shape_only, PreprocessParams{}) == 2 * 224 * 224, "output_elements needs no data");
  }
  // 6. frame size limits (kMaxFramePixels, kMaxFrameSide), checked before any
  //    work; stride-0 views of one pixel stand for huge frames without memory
  {
    const uint8_t five = 5;
    const auto view = [&five](int64_t n, int64_t h, int64_t w) {
      FrameBatch b;
      b.data = &five;
      b.n = n;
      b.h = h;
      b.w = w;
      return b;  // all strides 0
    };
    const auto refused_size = [](const FrameBatch& b, const PreprocessParams& pp) {
      try {
        validate(b, pp);
      } catch (const std::invalid_argument& e) {
        return std::string(e.what()).find("2^28") != std::string::npos;
      }
      return false;
    };
    PreprocessParams p;
    p.out_h = p.out_w = 1;
    p.denoise = Denoise::none;
    p.normalize = Normalize::none;
    // an int tap count truncated 2^32 + 100 to 100 (output 4.6e-10) and made
    // 2^31 + 5 negative (a std::length_error)
    check(refused_size(view(1, (int64_t{1} << 32) + 100, 1), p), "2^32 + 100 rows are refused");
    check(refused_size(view(1, (int64_t{1} << 31) + 5, 1), p), "2^31 + 5 rows are refused");
    check(refused_size(view(1, 1, (int64_t{1} << 32) + 100), p), "2^32 + 100 columns are refused");
    check(refused_size(view(1, 200000, 200000), p), "a 200000 x 200000 frame is refused");
    check(refused_size(view(1, kMaxFrameSide + 1, 1), p), "one row past kMaxFrameSide is refused");
    check(refused_size(view(1, 1 << 14, (1 << 14) + 1), p), "one column past kMaxFramePixels is refused");
    PreprocessParams roi = p;  // the limits are the crop's
    roi.has_roi = true;
    roi.roi_x = 150000;
    roi.roi_y = 3;
    roi.roi_w = 64;
    roi.roi_h = 48;
    bool ok = true;
    try {
      validate(view(1, 200000, 200000), roi);
    } catch (const std::invalid_argument&) {
      ok = false;
    }
    check(ok, "a small roi of a huge frame is accepted");
    float out = 0.0f;
    preprocess_cpu(view(1, kMaxFrameSide, 1), p, &out, 1);
    check(std::fabs(out - 5 / 255.0f) < 1e-2f * (5 / 255.0f), "a frame of kMaxFrameSide rows resizes to its value");
  }
  // 7. the output does not depend on the memory layout (bit-identical):
  //    contiguous vs flipped (negative strides) vs column-major storage
  {
    const int64_t h = 53, w = 611;
    std::vector<uint8_t> px(static_cast<size_t>(h * w)), flipped(px.size()), colmajor(px.size());
    uint32_t s = 777u;
    for (auto& v : px) {
      s = s * 1664525u + 1013904223u;
      v = static_cast<uint8_t>(s >> 24);
    }
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        flipped[static_cast<size_t>((h - 1 - y) * w + (w - 1 - x))] = px[static_cast<size_t>(y * w + x)];
        colmajor[static_cast<size_t>(x * h + y)] = px[static_cast<size_t>(y * w + x)];
      }
    FrameBatch rev = gray_batch(flipped, 1, h, w);
    rev.data = flipped.data() + (h * w - 1);  // element [0, 0] of the flipped-back view
    rev.stride_h = -w;
    rev.stride_w = -1;
    FrameBatch cm = gray_batch(colmajor, 1, h, w);
    cm.stride_h = 1;
    cm.stride_w = h;
    bool same = true;
    for (const auto& size : {std::pair<int64_t, int64_t>{20, 70}, {40, 330}, {53, 900}, {100, 611}}) {
      PreprocessParams p;
      p.out_h = size.first;
      p.out_w = size.second;
      p.denoise = Denoise::median3;
      std::vector<float> a(static_cast<size_t>(p.out_h * p.out_w)), b(a.size()), c(a.size());
      preprocess_cpu(gray_batch(px, 1, h, w), p, a.data(), 1);
      preprocess_cpu(rev, p, b.data(), 1);
      preprocess_cpu(cm, p, c.data(), 1);
      same = same && a == b && a == c;
    }
    check(same, "flipped and column-major frames give the contiguous frame's bits");
  }
  // 8. CUDA entry point: runs only where built with CUDA and a device exists
  if (!built_with_cuda()) {
    bool threw = false;
    try {
      preprocess_cuda(FrameBatch{}, PreprocessParams{}, nullptr, nullptr);
    } catch (const cuda_error& e) {
      threw = std::string(e.what()).find("without CUDA") != std::string::npos;
    } catch (const std::invalid_argument&) {
      threw = false;
    }
    check(threw, "preprocess_cuda in a CPU-only build raises cuda_error");
  }
  // 9. the headers' compile-time version is the linked library's
  check(version() == THYROFAST_VERSION_STRING && THYROFAST_VERSION_MAJOR >= 0 && THYROFAST_VERSION_MINOR >= 0,
        "version.h matches thyrofast::version()");
  std::printf("%s (%d failures); version %s, %s, cuda %d\n", failures ? "FAILED" : "PASSED", failures,
              version().c_str(), compiler().c_str(), built_with_cuda() ? 1 : 0);
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
