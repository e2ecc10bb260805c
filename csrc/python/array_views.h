// Conversions from Python-side array descriptions to the core's FrameBatch.
// The Python layer (thyrofast/preprocess.py) decides dtype, ndim and byte
// order; these helpers only check that what arrives is what the core reads.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "thyrofast/preprocess.h"

namespace thyrofast {
namespace python {

namespace py = pybind11;

inline PixelType pixel_type_of(const py::dtype& dt) {
  if (dt.kind() == 'u' && dt.itemsize() == 1) return PixelType::u8;
  if (dt.kind() == 'u' && dt.itemsize() == 2) {
    if (dt.byteorder() == '>') throw py::type_error("big-endian uint16 must be byte-swapped before the core");
    return PixelType::u16;
  }
  throw py::type_error("frames must be uint8 or uint16, got dtype " + std::string(py::str(dt)));
}

// A 4-D (N, H, W, C) NumPy view -> FrameBatch (element strides, any sign).
inline FrameBatch host_batch(const py::array& a) {
  if (a.ndim() != 4) throw std::invalid_argument("internal: expected a 4-D (N, H, W, C) view");
  FrameBatch b;
  b.type = pixel_type_of(a.dtype());
  const auto item = static_cast<int64_t>(a.itemsize());
  int64_t strides[4];
  for (int d = 0; d < 4; ++d) {
    if (a.strides(d) % item != 0)
      throw std::invalid_argument("array strides must be multiples of the element size");
    strides[d] = a.strides(d) / item;
  }
  b.data = a.data();
  b.n = a.shape(0);
  b.h = a.shape(1);
  b.w = a.shape(2);
  b.c = a.shape(3);
  b.stride_n = strides[0];
  b.stride_h = strides[1];
  b.stride_w = strides[2];
  b.stride_c = strides[3];
  return b;
}

// A device array described by __cuda_array_interface__ fields, already
// checked and converted to element strides by the Python layer.
inline FrameBatch device_batch(std::uintptr_t ptr, int dtype_code, int64_t n, int64_t h, int64_t w, int64_t c,
                               int64_t sn, int64_t sh, int64_t sw, int64_t sc) {
  FrameBatch b;
  if (dtype_code != 0 && dtype_code != 1) throw std::invalid_argument("internal: bad dtype code");
  b.type = static_cast<PixelType>(dtype_code);
  b.data = reinterpret_cast<const void*>(ptr);
  b.n = n;
  b.h = h;
  b.w = w;
  b.c = c;
  b.stride_n = sn;
  b.stride_h = sh;
  b.stride_w = sw;
  b.stride_c = sc;
  return b;
}

inline void check_host_output(const py::array& out, const FrameBatch& in, const PreprocessParams& p) {
  const bool f32 = p.out_type == OutputType::f32;
  if (out.dtype().kind() != 'f' || out.itemsize() != (f32 ? 4 : 2))
    throw py::type_error(std::string("out must be ") + (f32 ? "float32" : "float16"));
  if (!(out.flags() & py::array::c_style)) throw std::invalid_argument("out must be C-contiguous");
  if (!out.writeable()) throw std::invalid_argument("out must be writeable");
  if (out.size() != output_elements(in, p)) throw std::invalid_argument("out has the wrong number of elements");
}

}  // namespace python
}  // namespace thyrofast
