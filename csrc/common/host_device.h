// Helpers shared by host (C++) and device (CUDA) code.
//
// Everything here is pure arithmetic with no libm calls, so the CPU and CUDA
// paths evaluate the exact same float expressions (the CPU path is the
// executable specification of the CUDA path) and the host loops vectorize.
#pragma once

#include <cstdint>
#include <cmath>
#include <cstring>

#if defined(__CUDACC__)
#define TF_HOST_DEVICE __host__ __device__
#else
#define TF_HOST_DEVICE
#endif

// Full unrolling of fixed-trip loops (selection networks, polynomial steps):
// register-resident values let the host compiler vectorize across pixels.
#if defined(__CUDACC__)
#define TF_UNROLL _Pragma("unroll")
#elif defined(__clang__)
#define TF_UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define TF_UNROLL _Pragma("GCC unroll 128")
#else
#define TF_UNROLL
#endif

#ifndef THYROFAST_WITH_CUDA
#error "THYROFAST_WITH_CUDA must be defined to 0 or 1 by the build"
#endif

namespace thyrofast {
namespace detail {

TF_HOST_DEVICE static inline uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

TF_HOST_DEVICE static inline float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// Internal linkage (`static`): the CPU stages are compiled once per
// instruction set (baseline, AVX2, ...) and linked into one library, so an
// out-of-line copy of a helper must never be shared between those
// translation units (the linker would keep one, maybe the AVX2 one, for all).

// a * b + c with one rounding, on every target.  Which products are fused is
// part of the spec: the build turns the compiler's own contraction off
// (-ffp-contract=off; nvcc fuses a * b + c on its own, and spells these the
// same), so the bits no longer depend on the compiler's tuning or on whether
// the CPU has FMA.  Without hardware FMA the fused result is computed exactly
// through double: a * b is exact there (24 + 24 bits), and where rounding the
// double sum to float could round twice the sum is taken with round-to-odd
// (the TwoSum error decides the last bit), which makes the final rounding to
// float correct (53 >= 24 + 2 bits).
TF_HOST_DEVICE static inline float fma_f(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#elif defined(__FMA__)
  return __builtin_fmaf(a, b, c);
#else
  const double p = static_cast<double>(a) * static_cast<double>(b);
  const double cd = static_cast<double>(c);
  const double s = p + cd;
  uint64_t u;
  std::memcpy(&u, &s, sizeof u);
  // Rounding s to float is already correct unless s fell exactly halfway
  // between two floats (the 29 bits a float drops are 1000...0) or the
  // result is tiny (subnormal floats keep fewer bits): a rare, predictable
  // branch keeps the common path short.
  if ((u & 0x1fffffffu) == 0x10000000u || (s < 0x1p-125 && s > -0x1p-125)) {
    const double bb = s - p;
    const double err = (p - (s - bb)) + (cd - bb);
    // inexact with an even last bit: step to the odd neighbour on err's side
    // (err is NaN only for inf/NaN inputs, where s is already the answer)
    if ((err > 0.0 || err < 0.0) && (u & 1u) == 0) {
      u += ((err > 0.0) == (s > 0.0)) ? 1 : static_cast<uint64_t>(-1);
      double odd;
      std::memcpy(&odd, &u, sizeof odd);
      return static_cast<float>(odd);
    }
  }
  return static_cast<float>(s);
#endif
}

// The same in double (the z-score sums): the hardware instruction, or the C
// library's exact fma (slow without hardware FMA; used only on per-frame values).
TF_HOST_DEVICE static inline double fma_d(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#elif defined(__FMA__)
  return __builtin_fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

TF_HOST_DEVICE static inline float min_f(float a, float b) { return b < a ? b : a; }
TF_HOST_DEVICE static inline float max_f(float a, float b) { return a < b ? b : a; }
TF_HOST_DEVICE static inline float clamp_f(float v, float lo, float hi) { return min_f(max_f(v, lo), hi); }

// exp(x) for x in [-87, 88]; ~1 ulp (Cephes expf polynomial).  Inputs are
// clamped to that range, so no inf/NaN can come out of finite inputs.
TF_HOST_DEVICE static inline float exp_f(float x) {
  x = clamp_f(x, -87.0f, 88.0f);
  const float log2e = 1.44269504088896341f;
  float fx = fma_f(x, log2e, 0.5f);
  // floor without libm: truncate then fix negatives
  int32_t k = static_cast<int32_t>(fx);
  k -= static_cast<float>(k) > fx ? 1 : 0;  // floor (branch-free: vectorizes)
  const float kf = static_cast<float>(k);
  // two-constant Cody-Waite reduction of x - k*ln2
  float r = fma_f(-kf, 0.693359375f, x);
  r = fma_f(-kf, -2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = fma_f(p, r, 1.3981999507e-3f);
  p = fma_f(p, r, 8.3334519073e-3f);
  p = fma_f(p, r, 4.1665795894e-2f);
  p = fma_f(p, r, 1.6666665459e-1f);
  p = fma_f(p, r, 5.0000001201e-1f);
  const float r2 = r * r;
  float y = fma_f(p, r2, r) + 1.0f;
  return y * bits_float(static_cast<uint32_t>(k + 127) << 23);
}

// log(x) for finite x > 0 (Cephes logf polynomial), ~1 ulp.  Non-positive
// inputs return -87 rather than -inf/NaN (they cannot occur in SRAD, where
// J = exp(y) > 0 and the diffusion update is a convex combination).
TF_HOST_DEVICE static inline float log_f(float x_in) {
  // branch-free so the host loops vectorize; bad inputs are selected away at the end
  const bool ok = x_in > 1.17549435e-38f;
  const float x = ok ? x_in : 1.0f;
  const uint32_t u = float_bits(x);
  int32_t e = static_cast<int32_t>((u >> 23) & 0xff) - 126;
  float m = bits_float((u & 0x007fffffu) | 0x3f000000u);  // m in [0.5, 1)
  const float sqrthf = 0.707106781186547524f;
  const bool small = m < sqrthf;
  e -= small ? 1 : 0;
  m = small ? (m + m - 1.0f) : (m - 1.0f);
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = fma_f(y, m, -1.1514610310e-1f);
  y = fma_f(y, m, 1.1676998740e-1f);
  y = fma_f(y, m, -1.2420140846e-1f);
  y = fma_f(y, m, 1.4249322787e-1f);
  y = fma_f(y, m, -1.6668057665e-1f);
  y = fma_f(y, m, 2.0000714765e-1f);
  y = fma_f(y, m, -2.4999993993e-1f);
  y = fma_f(y, m, 3.3333331174e-1f);
  y = y * m * z;
  const float ef = static_cast<float>(e);
  y = fma_f(-2.12194440e-4f, ef, y);
  y = fma_f(-0.5f, z, y);
  const float r = fma_f(0.693359375f, ef, m + y);
  return ok ? r : -87.0f;
}

// float -> IEEE half, round to nearest even (same result as CUDA's
// __float2half_rn and F16C's _cvtss_sh with _MM_FROUND_TO_NEAREST_INT).
TF_HOST_DEVICE static inline uint16_t float_to_half_rne(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {  // subnormal half (or zero)
    // value * 2^24 rounded to nearest even integer
    const uint32_t shift = 126u - (abs >> 23);  // >= 14 here
    if (shift > 24u) return static_cast<uint16_t>(sign);
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    const uint32_t r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
    return static_cast<uint16_t>(sign | r);
  }
  // normal: rebias exponent, round mantissa 23 -> 10 bits, nearest even
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

}  // namespace detail
}  // namespace thyrofast
