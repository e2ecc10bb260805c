// Conversions from Python-side arrays to the core's FrameBatch.  The input
// layout rule lives here (frames_4d); the Python layer (the package
// thyrofast/preprocessing/) converts what the core cannot read (byte order, foreign
// array types) and words the errors for everything else.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "thyrofast/preprocess.h"

namespace thyrofast {
namespace python {

namespace py = pybind11;

// Multi-byte values in this machine's byte order ('=' native, '|' single byte).
inline bool native_byte_order(const py::dtype& dt) {
  const char bo = dt.byteorder();
  if (bo == '=' || bo == '|') return true;
  const uint16_t probe = 1;
  const bool little = *reinterpret_cast<const uint8_t*>(&probe) == 1;
  return bo == (little ? '<' : '>');
}

inline PixelType pixel_type_of(const py::dtype& dt) {
  if (dt.kind() == 'u' && dt.itemsize() == 1) return PixelType::u8;
  if (dt.kind() == 'u' && dt.itemsize() == 2) {
    if (!native_byte_order(dt)) throw py::type_error("non-native byte order uint16 must be byte-swapped before the core");
    return PixelType::u16;
  }
  throw py::type_error("frames must be uint8 or uint16, got dtype " + std::string(py::str(dt)));
}

// Python's repr of a shape tuple: (5,), (2, 3)
inline std::string shape_repr(const int64_t* shape, int nd) {
  std::string r = "(";
  for (int d = 0; d < nd; ++d) r += (d ? ", " : "") + std::to_string(shape[d]);
  return r + (nd == 1 ? ",)" : ")");
}

// An accepted input as (N, H, W, C) shape and strides (any unit).
struct Layout4 {
  int64_t shape[4];
  int64_t strides[4];
};

// The input layouts of spec v1: (H, W) gray; (H, W, 3) colour; (H, W, 4)
// RGBA; (N, H, W) gray batch; (N, H, W, 1|3|4).  A 3-D array whose last axis
// is 3 or 4 is one colour frame (a gray batch of 3- or 4-pixel-wide frames is
// (N, H, 3|4, 1)), as Classifier.predict and thyrofast.read read it.  RGBA
// becomes C = 3 with the same strides: alpha is dropped without a copy (the
// core never reads channel 3).  The one statement of the rule: the Python
// layer's frames_4d (thyrofast/preprocessing/layout.py) calls it too.
inline Layout4 frames_4d(int nd, const int64_t* shape, const int64_t* strides) {
  Layout4 l{};
  auto set = [&l](std::initializer_list<int64_t> sh, std::initializer_list<int64_t> st) {
    std::copy(sh.begin(), sh.end(), l.shape);
    std::copy(st.begin(), st.end(), l.strides);
  };
  if (nd == 2) {
    set({1, shape[0], shape[1], 1}, {0, strides[0], strides[1], 0});
  } else if (nd == 3 && (shape[2] == 3 || shape[2] == 4)) {
    set({1, shape[0], shape[1], 3}, {0, strides[0], strides[1], strides[2]});
  } else if (nd == 3) {
    set({shape[0], shape[1], shape[2], 1}, {strides[0], strides[1], strides[2], 0});
  } else if (nd == 4) {
    if (shape[3] != 1 && shape[3] != 3 && shape[3] != 4)
      throw std::invalid_argument(
          "a 4-D batch must be (N, H, W, 1), (N, H, W, 3) or (N, H, W, 4) (RGBA, alpha dropped), got shape " +
          shape_repr(shape, 4));
    set({shape[0], shape[1], shape[2], shape[3] == 4 ? 3 : shape[3]}, {strides[0], strides[1], strides[2], strides[3]});
  } else {
    throw std::invalid_argument(
        "frames must be (H, W), (H, W, 3), (H, W, 4) (RGBA, alpha dropped), (N, H, W) or (N, H, W, 1|3|4); got " +
                                std::to_string(nd) + "-D shape " + shape_repr(shape, nd));
  }
  for (int d = 0; d < 4; ++d)
    if (l.shape[d] == 0)
      throw std::invalid_argument("frames are empty (shape " + shape_repr(l.shape, 4) + " as N, H, W, C)");
  return l;
}

// A NumPy array of an accepted layout -> FrameBatch (element strides, any
// sign).  No view is built on the Python side: that costs more than the
// call itself when the interpreter's caches are cold.
// (N, H, W, C) shape and element strides into a batch (host and device arrays alike).
inline void set_layout(FrameBatch& b, const int64_t* shape, const int64_t* strides) {
  b.n = shape[0];
  b.h = shape[1];
  b.w = shape[2];
  b.c = shape[3];
  b.stride_n = strides[0];
  b.stride_h = strides[1];
  b.stride_w = strides[2];
  b.stride_c = strides[3];
}

inline FrameBatch host_batch(const py::array& a) {
  FrameBatch b;
  b.type = pixel_type_of(a.dtype());
  const int nd = static_cast<int>(a.ndim());
  const auto item = static_cast<int64_t>(a.itemsize());
  std::vector<int64_t> shape(nd), strides(nd);
  for (int d = 0; d < nd; ++d) {
    if (a.strides(d) % item != 0) throw std::invalid_argument("array strides must be multiples of the element size");
    shape[d] = a.shape(d);
    strides[d] = a.strides(d) / item;
  }
  const Layout4 l = frames_4d(nd, shape.data(), strides.data());
  b.data = a.data();
  set_layout(b, l.shape, l.strides);
  return b;
}

// A device array as the Python layer hands it over (thyrofast/preprocessing/
// device.py, from __cuda_array_interface__ or a torch tensor's attributes):
// the device pointer, the pixel type code (0 uint8, 1 uint16), and the
// (N, H, W, C) shape and element strides that frames_4d gave.  Bound as
// thyrofast._core.DeviceFrames; device_batch checks it.
struct DeviceFrames {
  std::uintptr_t ptr = 0;
  int dtype_code = 0;
  std::array<int64_t, 4> shape{};
  std::array<int64_t, 4> strides{};
};

inline FrameBatch device_batch(const DeviceFrames& f) {
  FrameBatch b;
  if (f.dtype_code != 0 && f.dtype_code != 1) throw std::invalid_argument("internal: bad dtype code");
  b.type = static_cast<PixelType>(f.dtype_code);
  b.data = reinterpret_cast<const void*>(f.ptr);
  set_layout(b, f.shape.data(), f.strides.data());
  return b;
}

// The (N, C, out_h, out_w) shape of the output for `in`.
inline std::vector<int64_t> output_shape(const FrameBatch& in, const PreprocessParams& p) {
  return {in.n, p.channels, p.out_h, p.out_w};
}

inline py::dtype output_dtype(const PreprocessParams& p) {
  return p.out_type == OutputType::f32 ? py::dtype::of<float>() : py::dtype("float16");
}

inline void check_host_output(const py::array& out, const FrameBatch& in, const PreprocessParams& p) {
  const bool f32 = p.out_type == OutputType::f32;
  if (out.dtype().kind() != 'f' || out.itemsize() != (f32 ? 4 : 2) || !native_byte_order(out.dtype()))
    throw py::type_error(std::string("out must be ") + (f32 ? "float32" : "float16") + " in native byte order");
  const auto want = output_shape(in, p);
  if (out.ndim() != 4 || !std::equal(want.begin(), want.end(), out.shape()))
    throw std::invalid_argument("out must have shape " + shape_repr(want.data(), 4));
  if (!(out.flags() & py::array::c_style)) throw std::invalid_argument("out must be C-contiguous");
  if (!out.writeable()) throw std::invalid_argument("out must be writeable");
}

}  // namespace python
}  // namespace thyrofast
