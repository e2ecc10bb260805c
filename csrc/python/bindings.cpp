// pybind11 bindings of thyrofast._core.  This file only binds: the array
// plumbing lives in array_views.h, the work in csrc/preprocess/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "array_views.h"
#include "thyrofast/preprocess.h"

namespace py = pybind11;
using namespace thyrofast;

PYBIND11_MODULE(_core, m) {
  m.doc() = "thyrofast C++/CUDA core (preprocessing spec v1)";

  static py::exception<cuda_error> cuda_exc(m, "CudaError", PyExc_RuntimeError);
  (void)cuda_exc;

  py::enum_<Denoise>(m, "Denoise")
      .value("none", Denoise::none)
      .value("median3", Denoise::median3)
      .value("median5", Denoise::median5)
      .value("srad", Denoise::srad);
  py::enum_<Normalize>(m, "Normalize")
      .value("percentile", Normalize::percentile)
      .value("minmax", Normalize::minmax)
      .value("zscore", Normalize::zscore)
      .value("none", Normalize::none);
  py::enum_<ChannelOrder>(m, "ChannelOrder").value("rgb", ChannelOrder::rgb).value("bgr", ChannelOrder::bgr);
  py::enum_<OutputType>(m, "OutputType").value("float32", OutputType::f32).value("float16", OutputType::f16);

  py::class_<PreprocessParams>(m, "Params")
      .def(py::init<>())
      .def_readwrite("has_roi", &PreprocessParams::has_roi)
      .def_readwrite("roi_x", &PreprocessParams::roi_x)
      .def_readwrite("roi_y", &PreprocessParams::roi_y)
      .def_readwrite("roi_w", &PreprocessParams::roi_w)
      .def_readwrite("roi_h", &PreprocessParams::roi_h)
      .def_readwrite("channel_order", &PreprocessParams::channel_order)
      .def_readwrite("max_value", &PreprocessParams::max_value)
      .def_readwrite("out_h", &PreprocessParams::out_h)
      .def_readwrite("out_w", &PreprocessParams::out_w)
      .def_readwrite("denoise", &PreprocessParams::denoise)
      .def_readwrite("srad_iterations", &PreprocessParams::srad_iterations)
      .def_readwrite("srad_lambda", &PreprocessParams::srad_lambda)
      .def_readwrite("srad_rho", &PreprocessParams::srad_rho)
      .def_readwrite("normalize", &PreprocessParams::normalize)
      .def_readwrite("percentile_lo", &PreprocessParams::percentile_lo)
      .def_readwrite("percentile_hi", &PreprocessParams::percentile_hi)
      .def_readwrite("mean", &PreprocessParams::mean)
      .def_readwrite("std", &PreprocessParams::std)
      .def_readwrite("channels", &PreprocessParams::channels)
      .def_readwrite("out_type", &PreprocessParams::out_type);

  m.def(
      "preprocess_cpu",
      [](const py::array& frames, const PreprocessParams& p, const py::object& out, int threads) {
        const FrameBatch in = python::host_batch(frames);
        validate(in, p);
        if (!out.is_none() && !py::isinstance<py::array>(out)) throw py::type_error("out must be a NumPy array");
        // (a cast would convert other objects into a new array the caller never sees)
        py::array dst = out.is_none() ? py::array(python::output_dtype(p), python::output_shape(in, p))
                                      : py::reinterpret_borrow<py::array>(out);
        python::check_host_output(dst, in, p);
        void* data = dst.mutable_data();
        {
          py::gil_scoped_release release;  // pure C++ from here on
          preprocess_cpu(in, p, data, threads);
        }
        return dst;
      },
      py::arg("frames"), py::arg("params"), py::arg("out") = py::none(), py::arg("threads") = 0,
      "frames: (H, W), (H, W, 3), (H, W, 4) (RGBA, alpha dropped), (N, H, W) or (N, H, W, 1|3|4) "
      "uint8/native uint16, any strides; "
      "out: None (allocated) or a C-contiguous (N, C, out_h, out_w) float32/float16 array; returns out");

  m.def(
      "frames_4d",
      [](const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
        if (shape.size() != strides.size()) throw std::invalid_argument("shape and strides differ in length");
        const python::Layout4 l = python::frames_4d(static_cast<int>(shape.size()), shape.data(), strides.data());
        return py::make_tuple(py::make_tuple(l.shape[0], l.shape[1], l.shape[2], l.shape[3]),
                              py::make_tuple(l.strides[0], l.strides[1], l.strides[2], l.strides[3]));
      },
      py::arg("shape"), py::arg("strides"),
      "(N, H, W, C) shape and strides of an accepted input layout; ValueError for any other");

  py::class_<python::DeviceFrames>(m, "DeviceFrames")
      .def(py::init([](std::uintptr_t ptr, int dtype_code, const std::array<int64_t, 4>& shape,
                       const std::array<int64_t, 4>& strides) {
             return python::DeviceFrames{ptr, dtype_code, shape, strides};
           }),
           py::arg("ptr"), py::arg("dtype_code"), py::arg("shape"), py::arg("strides"))
      .def_readonly("ptr", &python::DeviceFrames::ptr)
      .def_readonly("dtype_code", &python::DeviceFrames::dtype_code)
      .def_property_readonly("shape",
                             [](const python::DeviceFrames& f) {
                               return py::make_tuple(f.shape[0], f.shape[1], f.shape[2], f.shape[3]);
                             })
      .def_property_readonly("strides", [](const python::DeviceFrames& f) {
        return py::make_tuple(f.strides[0], f.strides[1], f.strides[2], f.strides[3]);
      });

  m.def(
      "preprocess_cuda",
      [](const python::DeviceFrames& frames, const PreprocessParams& p, std::uintptr_t out_ptr,
         std::uintptr_t stream) {
        const FrameBatch in = python::device_batch(frames);
        validate(in, p);
        py::gil_scoped_release release;
        preprocess_cuda(in, p, reinterpret_cast<void*>(out_ptr), reinterpret_cast<void*>(stream));
      },
      py::arg("frames"), py::arg("params"), py::arg("out_ptr"), py::arg("stream") = 0,
      "frames: a DeviceFrames (device pointer from __cuda_array_interface__ / DLPack, (N, H, W, C) shape, "
      "element strides); out_ptr: a C-contiguous (N, C, out_h, out_w) device buffer");

  m.def(
      "preprocess_cuda_host",
      [](const py::array& frames, const PreprocessParams& p, py::array& out, std::uintptr_t stream) {
        const FrameBatch in = python::host_batch(frames);
        validate(in, p);
        python::check_host_output(out, in, p);
        void* dst = out.mutable_data();
        py::gil_scoped_release release;
        preprocess_cuda_host(in, p, dst, reinterpret_cast<void*>(stream));
      },
      py::arg("frames"), py::arg("params"), py::arg("out"), py::arg("stream") = 0,
      "host arrays, copied through pinned staging on `stream`; synchronizes");

  m.def("validate", [](const py::array& frames, const PreprocessParams& p) { validate(python::host_batch(frames), p); });

  m.def("build_info", []() {
    py::dict d;
    d["version"] = version();
    d["compiler"] = compiler();
    d["openmp"] = built_with_openmp();
    d["cuda"] = built_with_cuda();
    d["cuda_architectures"] = cuda_architectures();
    d["cpu_variant"] = cpu_variant();  // raises for a bad THYROFAST_CPU_VARIANT
    d["cpu_variants_built"] = cpu_variants_built();
    d["cpu_variants_runnable"] = cpu_variants_runnable();
    return d;
  });
  m.def("cuda_device_count", &cuda_device_count, "0 without CUDA, a driver or a device");
  m.def("cuda_last_kernel", &cuda_last_kernel,
        "the CUDA kernel of the last preprocess call: 'cluster:S', 'block' or '' (none yet)");
}
