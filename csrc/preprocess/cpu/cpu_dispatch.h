// Which compiled CPU variant runs (see cpu_internal.h for what a variant is).
#pragma once

#include <string>

#include "cpu_internal.h"

namespace thyrofast {
namespace cpu {

// The variant preprocess_cpu uses: the best one the CPU runs, or the one
// THYROFAST_CPU_VARIANT names.  Chosen once, at the first call; throws
// std::runtime_error (every time) when the variable names a variant this
// build lacks or this CPU cannot run.
const VariantKernels& active_kernels();

}  // namespace cpu
}  // namespace thyrofast
