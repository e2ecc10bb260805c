// k x k median filters (spec step 4, median3 / median5) on the padded
// working image.  Compiled once per CPU variant (cpu_internal.h); the
// selection networks use only min / max, so every variant gives the same bits.
#include <cstring>

#include "cpu_internal.h"

namespace thyrofast {
namespace cpu {
namespace TF_CPU_VARIANT {
namespace {

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

}  // namespace

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

void median3(const float* src, float* dst, int64_t h, int64_t w, int64_t wp) { median_filter<1>(src, dst, h, w, wp); }
void median5(const float* src, float* dst, int64_t h, int64_t w, int64_t wp) { median_filter<2>(src, dst, h, w, wp); }

}  // namespace TF_CPU_VARIANT
}  // namespace cpu
}  // namespace thyrofast
