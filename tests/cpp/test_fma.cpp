// detail::fma_f without hardware FMA (this file is compiled for the
// baseline, x86-64-v2) against the C library's fmaf: random operands, operands
// built so that the double sum lands on a float midpoint (the double-rounding
// case), and subnormal results.  Exit status 0 when all agree bit for bit.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>

#include "../../csrc/common/host_device.h"

static uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

int main() {
#if defined(__FMA__)
  std::printf("compiled with FMA: this test needs the software path (build it for x86-64-v2)\n");
  return 1;
#else
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> uni(-4.0f, 4.0f);
  std::uniform_int_distribution<int> ex(-140, 20);
  long bad = 0, n = 0;
  auto check = [&](float a, float b, float c) {
    const float want = std::fmaf(a, b, c), got = thyrofast::detail::fma_f(a, b, c);
    ++n;
    if (bits(want) != bits(got) && !(std::isnan(want) && std::isnan(got))) {
      if (++bad < 10) std::printf("fma(%a, %a, %a): want %a got %a\n", a, b, c, want, got);
    }
  };
  for (int i = 0; i < 20000000; ++i) {
    const float a = std::ldexp(uni(rng), ex(rng) / 2), b = std::ldexp(uni(rng), ex(rng) / 2);
    check(a, b, uni(rng));
    check(a, b, -a * b);                     // cancellation
    check(a, b, std::ldexp(uni(rng), ex(rng)));  // any scale, subnormal results included
    // c a float midpoint away from a * b: the double sum is often exactly a midpoint
    const float r = a * b;
    check(a, b, std::nextafter(r, 0.0f) - r);
  }
  std::printf("%ld of %ld fused results differ from fmaf\n", bad, n);
  return bad == 0 ? 0 : 1;
#endif
}
