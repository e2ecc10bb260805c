// CPU implementation of preprocessing spec v1 (see thyrofast/preprocess.h):
// the entry point, the resize tables, the per-thread workspace and the frame
// loop.  Compiled once, for the baseline; the per-frame work runs in the CPU
// variant cpu_dispatch.cpp picks (cpu_internal.h).
//
// One frame at a time per thread, in a per-thread workspace: the fused
// crop + luma + separable resize streams input rows through a two-row cache
// into the padded working image; denoise and normalization then run on that
// image while it is still in L2.  Frames are independent, so results do not
// depend on the thread count.
#include <algorithm>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_dispatch.h"
#include "cpu_internal.h"

namespace thyrofast {
namespace cpu {

float* Workspace::floats(FloatBuf b, size_t n) {
  if (f_[b].size() < n) f_[b].resize(n);
  return f_[b].data();
}

unsigned char* Workspace::bytes(ByteBuf b, size_t n) {
  if (b_[b].size() < n) b_[b].resize(n);
  return b_[b].data();
}

uint32_t* Workspace::isum(size_t n) {
  if (isum_.size() < n) isum_.resize(n);
  return isum_.data();
}

int32_t* Workspace::hist(size_t n) {
  hist_.assign(n, 0);
  return hist_.data();
}

void nth_element_f(float* first, float* nth, float* last) { std::nth_element(first, nth, last); }

namespace {

struct AxisTable {
  detail::AxisGeometry g;
  std::vector<int64_t> start;
  std::vector<float> w;   // out_len x taps
  std::vector<float> w8;  // out_len x 8, zero-padded (when taps <= 8)

  AxisView view() const { return AxisView{g, start.data(), w.data(), w8.empty() ? nullptr : w8.data()}; }
};

AxisTable build_axis(int64_t in_len, int64_t out_len) {
  AxisTable t;
  t.g = detail::axis_geometry(in_len, out_len);
  t.start.resize(static_cast<size_t>(out_len));
  // taps <= in_len <= kMaxFrameSide (validate), so the table stays about in_len + 2 out_len floats
  t.w.assign(static_cast<size_t>(out_len * t.g.taps), 0.0f);
  for (int64_t i = 0; i < out_len; ++i) t.start[i] = detail::axis_taps(t.g, i, &t.w[i * t.g.taps]);
  if (t.g.taps <= 8) {
    t.w8.assign(static_cast<size_t>(out_len * 8), 0.0f);
    for (int64_t i = 0; i < out_len; ++i)
      for (int64_t q = 0; q < t.g.taps; ++q) t.w8[i * 8 + q] = t.w[i * t.g.taps + q];
  }
  return t;
}

// The tables depend only on (in_len, out_len); a video stream resizes every
// frame with the same geometry, so each calling thread keeps the last table
// per axis (`slot`: 0 rows, 1 columns) and rebuilds it only when the
// geometry changes.  OpenMP workers only read it during the call.
const AxisTable& cached_axis(int slot, int64_t in_len, int64_t out_len) {
  thread_local AxisTable cache[2];
  thread_local bool valid[2] = {false, false};
  AxisTable& t = cache[slot];
  if (!valid[slot] || t.g.in_len != in_len || t.g.out_len != out_len) {
    valid[slot] = false;  // stays invalid if building throws
    t = build_axis(in_len, out_len);
    valid[slot] = true;
  }
  return t;
}

Workspace& thread_workspace() {
  thread_local Workspace ws;
  return ws;
}

void run_cpu(const FrameBatch& in, const PreprocessParams& p, void* out, int threads) {
  const VariantKernels& kv = active_kernels();
  const ProcessFrameFn frame_fn = in.type == PixelType::u8 ? kv.process_frame_u8 : kv.process_frame_u16;
  const int64_t rh = p.has_roi ? p.roi_h : in.h, rw = p.has_roi ? p.roi_w : in.w;
  FrameArgs args;
  args.in = &in;
  args.p = &p;
  args.ty = cached_axis(0, rh, p.out_h).view();
  args.tx = cached_axis(1, rw, p.out_w).view();
  const double max_value = p.max_value > 0.0 ? p.max_value : (in.type == PixelType::u8 ? 255.0 : 65535.0);
  args.k = detail::luma_coeffs(max_value, p.channel_order == ChannelOrder::bgr);
  args.out = out;
#ifdef _OPENMP
  int nt = threads > 0 ? threads : omp_get_num_procs();
  if (nt > in.n) nt = static_cast<int>(in.n);
  if (nt > 1) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t f = 0; f < in.n; ++f) frame_fn(args, f, thread_workspace());
    return;
  }
#else
  (void)threads;
#endif
  Workspace& ws = thread_workspace();
  for (int64_t f = 0; f < in.n; ++f) frame_fn(args, f, ws);
}

}  // namespace
}  // namespace cpu

void preprocess_cpu(const FrameBatch& in, const PreprocessParams& p, void* out, int threads) {
  validate(in, p);
  if (out == nullptr) throw std::invalid_argument("output pointer is null");
  cpu::run_cpu(in, p, out, threads);
}

}  // namespace thyrofast
