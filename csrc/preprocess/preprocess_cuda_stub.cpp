// Entry points of a build without CUDA: they raise, never run a silent stub.
#include "thyrofast/preprocess.h"

namespace thyrofast {

void preprocess_cuda(const FrameBatch&, const PreprocessParams&, void*, void*) {
  throw cuda_error("thyrofast was built without CUDA (THYROFAST_CUDA=OFF or no nvcc at build time)");
}

void preprocess_cuda_host(const FrameBatch&, const PreprocessParams&, void*, void*) {
  throw cuda_error("thyrofast was built without CUDA (THYROFAST_CUDA=OFF or no nvcc at build time)");
}

int cuda_device_count() { return 0; }

std::string cuda_last_kernel() { return ""; }

}  // namespace thyrofast
