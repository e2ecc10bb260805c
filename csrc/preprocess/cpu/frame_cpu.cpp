// One frame through all stages, and this variant's table for the dispatcher
// (cpu_dispatch.cpp).  Compiled once per CPU variant (cpu_internal.h).
#include "cpu_internal.h"

namespace thyrofast {
namespace cpu {
namespace TF_CPU_VARIANT {
namespace {

template <typename T>
void process_frame(const FrameArgs& args, int64_t f, Workspace& ws) {
  const FrameBatch& in = *args.in;
  const PreprocessParams& p = *args.p;
  const int64_t h = p.out_h, w = p.out_w, wp = w + 2 * kPad;
  const size_t img_size = static_cast<size_t>((h + 2 * kPad) * wp);
  float* a = ws.floats(Workspace::kImgA, img_size);
  float* b = ws.floats(Workspace::kImgB, img_size);
  const int64_t rx = p.has_roi ? p.roi_x : 0, ry = p.has_roi ? p.roi_y : 0;
  const int64_t rw = p.has_roi ? p.roi_w : in.w;
  const T* frame = static_cast<const T*>(in.data) + f * in.stride_n;
  resize_frame<T>(frame, in, p, rx, ry, rw, args.ty, args.tx, args.k, ws, a, wp);
  float* img = a;
  switch (p.denoise) {
    case Denoise::none:
      break;
    case Denoise::median3:
      replicate_border(a, h, w, wp, 1);
      median3(a, b, h, w, wp);
      img = b;
      break;
    case Denoise::median5:
      replicate_border(a, h, w, wp, 2);
      median5(a, b, h, w, wp);
      img = b;
      break;
    case Denoise::srad:
      if (p.srad_iterations > 0) {
        srad(a, b, ws, h, w, wp, p);
        img = (p.srad_iterations % 2 == 0) ? a : b;
      }
      break;
  }
  const detail::FrameAffine fa = frame_affine(img, img == a ? b : a, h, w, wp, p, ws);
  write_output(img, h, w, wp, fa, p, args.out, f);
}

#define TF_STR2(x) #x
#define TF_STR(x) TF_STR2(x)

}  // namespace

const VariantKernels& kernels() {
  static const VariantKernels k{TF_STR(TF_CPU_VARIANT), &process_frame<uint8_t>, &process_frame<uint16_t>};
  return k;
}

}  // namespace TF_CPU_VARIANT
}  // namespace cpu
}  // namespace thyrofast
