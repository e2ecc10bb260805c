// Internal interface of the CPU preprocessing stages (not installed).
//
// The stages (resize_cpu.cpp, median_cpu.cpp, select_cpu.cpp, srad_cpu.cpp,
// output_cpu.cpp, frame_cpu.cpp) are compiled once per instruction-set
// variant, each time with that variant's flags and with TF_CPU_VARIANT naming
// a namespace of its own (baseline, avx2, native), and linked into one
// library; preprocess_cpu.cpp picks a variant at run time (cpu_dispatch.h)
// and calls its process_frame through a table.
//
// Rules that keep one variant's instructions out of another's code:
//  - everything a stage file defines lives in namespace cpu::TF_CPU_VARIANT,
//    and the shared math headers' functions are `static`;
//  - the stages use no std containers or out-of-line std algorithms (the
//    linker keeps one copy of such an instantiation for all variants):
//    memory comes from the Workspace's out-of-line accessors and the one
//    selection step from nth_element_f, both compiled for the baseline in
//    preprocess_cpu.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../preprocess_math.h"
#include "thyrofast/preprocess.h"

namespace thyrofast {
namespace cpu {

constexpr int64_t kPad = 2;  // replicated border around the working image (median5 needs 2)

// One axis' resampling table, read-only during a call (preprocess_cpu.cpp
// builds and caches it).
struct AxisView {
  detail::AxisGeometry g;
  const int64_t* start;  // out_len first input indices
  const float* w;        // out_len x taps weights
  const float* w8;       // out_len x 8, zero-padded (taps <= 8), else null
};

// Per-thread scratch memory.  The accessors return at least `n` elements
// (contents kept unless the buffer grows); they are defined in
// preprocess_cpu.cpp, so the vectors are only ever touched by baseline code.
struct Workspace {
  enum FloatBuf { kRow0, kRow1, kAcc, kImgA, kImgB, kCoef, kScratch, kFloatBufs };
  enum ByteBuf { kGather, kBins, kByteBufs };
  float* floats(FloatBuf b, size_t n);
  unsigned char* bytes(ByteBuf b, size_t n);
  uint32_t* isum(size_t n);
  int32_t* hist(size_t n);  // zeroed

  // the two-row cache of converted input rows (resize)
  int64_t row_id[2] = {-1, -1};
  int next_slot = 0;
  void reset_rows() {
    row_id[0] = row_id[1] = -1;
    next_slot = 0;
  }

 private:
  std::vector<float> f_[kFloatBufs];
  std::vector<unsigned char> b_[kByteBufs];
  std::vector<uint32_t> isum_;
  std::vector<int32_t> hist_;
};

// std::nth_element over floats, compiled once for the baseline (the stages
// must not instantiate it; see above).
void nth_element_f(float* first, float* nth, float* last);

// What a variant exports: one frame, all stages.
struct FrameArgs {
  const FrameBatch* in;
  const PreprocessParams* p;
  AxisView ty, tx;
  detail::LumaCoeffs k;
  void* out;
};
using ProcessFrameFn = void (*)(const FrameArgs& a, int64_t frame, Workspace& ws);
struct VariantKernels {
  const char* name;
  ProcessFrameFn process_frame_u8;
  ProcessFrameFn process_frame_u16;
};

#ifdef TF_CPU_VARIANT
namespace TF_CPU_VARIANT {

// resize_cpu.cpp: crop + luma + resize of one frame into the interior of the
// padded image `img` (row stride wp = out_w + 2 kPad).
template <typename T>
void resize_frame(const T* frame, const FrameBatch& in, const PreprocessParams& p, int64_t rx, int64_t ry,
                  int64_t rw, const AxisView& ty, const AxisView& tx, const detail::LumaCoeffs& k, Workspace& ws,
                  float* img, int64_t wp);

// median_cpu.cpp
void replicate_border(float* img, int64_t h, int64_t w, int64_t wp, int64_t pad);
void median3(const float* src, float* dst, int64_t h, int64_t w, int64_t wp);
void median5(const float* src, float* dst, int64_t h, int64_t w, int64_t wp);

// select_cpu.cpp: min / max, and exact order statistics `ranks` (ascending,
// each in [0, n)) of v[0..n)
void min_max(const float* v, int64_t n, float* vmin_out, float* vmax_out);
void copy_min_max(const float* img, int64_t h, int64_t w, int64_t wp, float* dst, float* vmin_out, float* vmax_out);
void select_ranks_in(const float* v, int64_t n, float vmin, float vmax, const int64_t* ranks, int m, float* out,
                     Workspace& ws);
void select_ranks(const float* v, int64_t n, const int64_t* ranks, int m, float* out, Workspace& ws);

// srad_cpu.cpp: SRAD on the interior of `a`; the result ends in `a` for an
// even iteration count, else in `b`
void srad(float* a, float* b, Workspace& ws, int64_t h, int64_t w, int64_t wp, const PreprocessParams& p);

// output_cpu.cpp: the frame's normalization and the output write
detail::FrameAffine frame_affine(const float* img, float* spare, int64_t h, int64_t w, int64_t wp,
                                 const PreprocessParams& p, Workspace& ws);
void write_output(const float* img, int64_t h, int64_t w, int64_t wp, const detail::FrameAffine& f,
                  const PreprocessParams& p, void* out, int64_t frame);

// frame_cpu.cpp: the variant's table
const VariantKernels& kernels();

}  // namespace TF_CPU_VARIANT
#endif

// The tables of the variants this library holds (frame_cpu.cpp per variant).
namespace baseline { const VariantKernels& kernels(); }
namespace avx2 { const VariantKernels& kernels(); }
namespace native { const VariantKernels& kernels(); }

}  // namespace cpu
}  // namespace thyrofast
