// Runtime choice of the CPU variant: CPU features from cpuid (x86-64), an
// optional override from the environment, a table per variant.
//
// Variants (CMake compiles the ones named in TF_CPU_VARIANTS_*):
//   baseline  x86-64-v2 (SSE4.2, POPCNT; Nehalem, 2008, and later); on other
//             architectures the compiler's default target
//   avx2      x86-64-v3 (AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE; Haswell,
//             2013, and Zen, 2017, and later)
//   native    a THYROFAST_NATIVE build: -march=native, the only variant, for
//             the building machine
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define TF_X86_CPUID 1
#elif defined(_M_X64) && defined(_MSC_VER)
#include <intrin.h>
#define TF_X86_CPUID 1
#endif

#include "cpu_dispatch.h"
#include "thyrofast/preprocess.h"

namespace thyrofast {
namespace cpu {
namespace {

struct Variant {
  const char* name;
  const char* needs;  // the features, in words, for error messages
  bool (*cpu_runs)();
  const VariantKernels& (*kernels)();
};

#if defined(TF_X86_CPUID)
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub) {
  Regs r;
#if defined(_MSC_VER) && !defined(__clang__)
  int v[4];
  __cpuidex(v, static_cast<int>(leaf), static_cast<int>(sub));
  r.a = v[0], r.b = v[1], r.c = v[2], r.d = v[3];
#else
  if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) r = Regs{};
#endif
  return r;
}

unsigned max_leaf(unsigned base) { return cpuid(base, 0).a; }

bool bit(unsigned v, int i) { return ((v >> i) & 1u) != 0; }

// the OS saves the YMM state (XCR0 bits 1, 2), read only when OSXSAVE is set
bool os_saves_ymm() {
#if defined(_MSC_VER) && !defined(__clang__)
  return (_xgetbv(0) & 6u) == 6u;
#else
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 6u) == 6u;
#endif
}

bool cpu_is_x86_64_v2() {
  if (max_leaf(0) < 1) return false;
  const Regs l1 = cpuid(1, 0);
  const bool ext = max_leaf(0x80000000u) >= 0x80000001u && bit(cpuid(0x80000001u, 0).c, 0);  // LAHF/SAHF
  return ext && bit(l1.c, 0) && bit(l1.c, 9) && bit(l1.c, 13) && bit(l1.c, 19) && bit(l1.c, 20) &&
         bit(l1.c, 23);  // SSE3 SSSE3 CX16 SSE4.1 SSE4.2 POPCNT
}

bool cpu_is_x86_64_v3() {
  if (!cpu_is_x86_64_v2() || max_leaf(0) < 7) return false;
  const Regs l1 = cpuid(1, 0), l7 = cpuid(7, 0);
  // FMA MOVBE OSXSAVE AVX F16C
  if (!(bit(l1.c, 12) && bit(l1.c, 22) && bit(l1.c, 27) && bit(l1.c, 28) && bit(l1.c, 29))) return false;
  if (!(bit(l7.b, 3) && bit(l7.b, 5) && bit(l7.b, 8))) return false;  // BMI1 AVX2 BMI2
  if (!bit(cpuid(0x80000001u, 0).c, 5)) return false;                 // LZCNT
  return os_saves_ymm();
}
#else
bool cpu_is_x86_64_v2() { return true; }  // not x86: the baseline is the compiler's default target
bool cpu_is_x86_64_v3() { return false; }
#endif

[[maybe_unused]] bool always() { return true; }

// lowest first
const std::vector<Variant>& built_variants() {
  static const std::vector<Variant> v = {
#if defined(TF_CPU_VARIANT_BASELINE)
#if defined(TF_X86_CPUID)
    {"baseline", "x86-64-v2 (SSE4.2, POPCNT)", &cpu_is_x86_64_v2, &baseline::kernels},
#else
    {"baseline", "the compiler's default target", &always, &baseline::kernels},
#endif
#endif
#if defined(TF_CPU_VARIANT_AVX2)
    {"avx2", "x86-64-v3 (AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE)", &cpu_is_x86_64_v3, &avx2::kernels},
#endif
#if defined(TF_CPU_VARIANT_NATIVE)
    {"native", "the CPU this library was built on (-march=native)", &always, &native::kernels},
#endif
  };
  return v;
}

std::string names(const std::vector<const Variant*>& vs) {
  std::string s;
  for (const Variant* v : vs) s += (s.empty() ? "" : ", ") + std::string(v->name);
  return s.empty() ? "none" : s;
}

std::vector<const Variant*> runnable() {
  std::vector<const Variant*> r;
  for (const Variant& v : built_variants())
    if (v.cpu_runs()) r.push_back(&v);
  return r;
}

struct Choice {
  const Variant* variant = nullptr;
  std::string error;
};

Choice choose() {
  Choice c;
  const std::vector<const Variant*> ok = runnable();
  const char* env = std::getenv("THYROFAST_CPU_VARIANT");
  const std::string want = env ? env : "";
  if (want.empty() || want == "auto") {
    if (ok.empty()) {
      std::ostringstream m;
      m << "this CPU cannot run any variant of thyrofast's CPU code: the lowest, "
        << (built_variants().empty() ? "none" : built_variants().front().name) << ", needs "
        << (built_variants().empty() ? "?" : built_variants().front().needs);
      c.error = m.str();
    } else {
      c.variant = ok.back();
    }
    return c;
  }
  std::vector<const Variant*> all;
  for (const Variant& v : built_variants()) all.push_back(&v);
  for (const Variant* v : all) {
    if (want != v->name) continue;
    if (!v->cpu_runs()) {
      c.error = "THYROFAST_CPU_VARIANT=" + want + " needs " + v->needs + ", which this CPU lacks; it can run: " +
                names(ok);
      return c;
    }
    c.variant = v;
    return c;
  }
  c.error = "THYROFAST_CPU_VARIANT=" + want + " is not a variant of this build; it has: " + names(all) +
            " (unset it or use auto for the best this CPU runs)";
  return c;
}

const Choice& choice() {
  static const Choice c = choose();
  return c;
}

}  // namespace

const VariantKernels& active_kernels() {
  const Choice& c = choice();
  if (!c.variant) throw std::runtime_error(c.error);
  return c.variant->kernels();
}

}  // namespace cpu

std::string cpu_variant() { return cpu::active_kernels().name; }

std::string cpu_variants_built() {
  std::string s;
  for (const auto& v : cpu::built_variants()) s += (s.empty() ? "" : ",") + std::string(v.name);
  return s;
}

std::string cpu_variants_runnable() {
  std::string s;
  for (const auto* v : cpu::runnable()) s += (s.empty() ? "" : ",") + std::string(v->name);
  return s;
}

}  // namespace thyrofast
