// pybind11 bindings of thyrofast._runtime (the C++ runtime, thyrofast::runtime).  This file
// only binds: the work is csrc/runtime/, the frame plumbing array_views.h (shared with _core).
// A module of its own so that _core imports where OpenVINO's libraries are absent.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mutex>

#include "array_views.h"
#include "thyrofast/runtime.hpp"

namespace py = pybind11;
using namespace thyrofast;

namespace {

// Results a Python Stream keeps until results() takes them (the callback runs on a worker
// thread without the GIL, so it appends to C++ vectors, never to Python objects).
struct Collected {
  std::mutex mu;
  std::vector<int64_t> seq;
  std::vector<int32_t> decision;
  std::vector<double> probs, latency;
  bool keep = true;
};

struct PyStream {
  py::object classifier;  // keeps the Classifier alive as long as the stream (first: destroyed last)
  std::shared_ptr<Collected> out = std::make_shared<Collected>();
  std::unique_ptr<Stream> stream;  // destroyed first: close() joins the workers
  StreamOptions opt;
  size_t k = 0;
};

}  // namespace

PYBIND11_MODULE(_runtime, m) {
  m.doc() = "thyrofast C++ runtime: bundle -> frames -> calibrated decision (OpenVINO CPU)";
  static py::exception<Error> bundle_error(m, "RuntimeError", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      // code name first: the Python side turns "unreadable" into InputError("unreadable", ...)
      const char* names[] = {"ok", "unreadable", "invalid_argument", "runtime", "out_of_memory", "closed"};
      const int c = int(e.code());
      if (e.code() == ErrorCode::invalid_argument) {
        PyErr_SetString(PyExc_ValueError, e.what());
        return;
      }
      py::object exc = py::reinterpret_borrow<py::object>(bundle_error.ptr())(py::str(e.what()));
      exc.attr("code") = py::str(c >= 0 && c < 6 ? names[c] : "runtime");
      PyErr_SetObject(bundle_error.ptr(), exc.ptr());
    }
  });
  m.def("version", &runtime_version);

  py::class_<Classifier>(m, "Classifier")
      .def(py::init([](const std::string& bundle, const std::string& precision, int threads, int max_batch,
                       int max_concurrent) {
             ClassifierOptions o;
             if (precision != "fp32" && precision != "int8")
               throw Error(ErrorCode::invalid_argument, "precision must be 'fp32' or 'int8', got '" + precision + "'");
             o.precision = precision == "int8" ? Precision::int8 : Precision::fp32;
             o.threads = threads;
             o.max_batch = max_batch;
             o.max_concurrent = max_concurrent;
             py::gil_scoped_release release;  // hashing + compiling take a while
             return Classifier::load(bundle, o);
           }),
           py::arg("bundle"), py::arg("precision") = "fp32", py::arg("threads") = 0, py::arg("max_batch") = 32,
           py::arg("max_concurrent") = 0)
      .def_property_readonly("classes", &Classifier::classes)
      .def_property_readonly("temperature", &Classifier::temperature)
      .def_property_readonly("bundle_sha256", &Classifier::bundle_sha256)
      .def_property_readonly("precision", &Classifier::precision_name)
      .def_property_readonly("threads", [](const Classifier& c) { return c.options().threads; })
      .def_property_readonly("max_batch", [](const Classifier& c) { return c.options().max_batch; })
      .def_property_readonly("aggregation", &Classifier::aggregation_method)
      .def(
          "logits",
          [](const Classifier& c, const py::array& frames) {
            const FrameBatch in = python::host_batch(frames);
            py::array_t<float> out({in.n, int64_t(c.num_classes())});
            float* dst = out.mutable_data();
            {
              py::gil_scoped_release release;
              c.logits(in, dst);
            }
            return out;
          },
          py::arg("frames"), "(N, K) float32 logits; frames as thyrofast._core.preprocess_cpu takes them")
      .def(
          "predict",
          [](const Classifier& c, const py::array& frames) {
            const FrameBatch in = python::host_batch(frames);
            py::array_t<double> probs({in.n, int64_t(c.num_classes())});
            py::array_t<int32_t> dec(in.n);
            double* p = probs.mutable_data();
            int32_t* d = dec.mutable_data();
            {
              py::gil_scoped_release release;
              c.predict(in, p, d);
            }
            return py::make_tuple(probs, dec);
          },
          py::arg("frames"), "((N, K) float64 probabilities, (N,) int32 decisions)")
      .def(
          "aggregate",
          [](const Classifier& c, const py::array_t<double, py::array::c_style | py::array::forcecast>& probs) {
            if (probs.ndim() != 2 || size_t(probs.shape(1)) != c.num_classes())
              throw Error(ErrorCode::invalid_argument, "probs must be (n_images, n_classes)");
            py::array_t<double> out(int64_t(c.num_classes()));
            c.aggregate(probs.data(), size_t(probs.shape(0)), out.mutable_data());
            return out;
          },
          py::arg("probs"));

  py::class_<PyStream>(m, "Stream")
      .def(py::init([](py::object clf, int64_t height, int64_t width, int64_t channels, const std::string& dtype,
                       int capacity, int workers, double smoothing, bool keep_results) {
             const Classifier& c = clf.cast<const Classifier&>();
             auto s = std::make_unique<PyStream>();
             s->opt.height = height;
             s->opt.width = width;
             s->opt.channels = channels;
             if (dtype != "uint8" && dtype != "uint16")
               throw Error(ErrorCode::invalid_argument, "dtype must be 'uint8' or 'uint16'");
             s->opt.type = dtype == "uint16" ? PixelType::u16 : PixelType::u8;
             s->opt.capacity = capacity;
             s->opt.workers = workers;
             s->opt.smoothing = smoothing;
             s->classifier = clf;
             s->k = c.num_classes();
             s->out->keep = keep_results;
             std::shared_ptr<Collected> out = s->out;
             const size_t k = s->k;
             s->stream = std::make_unique<Stream>(c, s->opt, [out, k](const StreamResult& r) {
               if (!out->keep) return;
               std::lock_guard<std::mutex> lock(out->mu);
               out->seq.push_back(int64_t(r.sequence));
               out->decision.push_back(r.decision);
               out->probs.insert(out->probs.end(), r.probs, r.probs + k);
               out->latency.push_back(r.latency_ms);
             });
             return s;
           }),
           py::arg("classifier"), py::arg("height"), py::arg("width"), py::arg("channels") = 1,
           py::arg("dtype") = "uint8", py::arg("capacity") = 8, py::arg("workers") = 1, py::arg("smoothing") = 0.0,
           py::arg("keep_results") = true)
      .def(
          "push",
          [](PyStream& s, const py::array& frame) {
            const FrameBatch b = python::host_batch(frame);
            if (b.n != 1 || b.h != s.opt.height || b.w != s.opt.width || b.c != s.opt.channels || b.type != s.opt.type)
              throw Error(ErrorCode::invalid_argument, "the frame does not match the stream's geometry and dtype");
            py::gil_scoped_release release;
            return s.stream->push(b.data, b.stride_h, b.stride_w, b.stride_c);
          },
          py::arg("frame"))
      .def("flush", [](PyStream& s) {
        py::gil_scoped_release release;
        s.stream->flush();
      })
      .def("close", [](PyStream& s) {
        py::gil_scoped_release release;
        s.stream->close();
      })
      .def_property_readonly("capacity", [](const PyStream& s) { return s.stream->capacity(); })
      .def("stats", [](const PyStream& s) {
        const StreamStats st = s.stream->stats();
        py::dict d;
        d["pushed"] = st.pushed;
        d["processed"] = st.processed;
        d["dropped"] = st.dropped;
        d["max_queue_depth"] = st.max_queue_depth;
        d["p50_ms"] = st.p50_ms;
        d["p99_ms"] = st.p99_ms;
        d["p99.9_ms"] = st.p999_ms;
        d["max_ms"] = st.max_ms;
        d["mean_ms"] = st.mean_ms;
        return d;
      })
      .def("results", [](PyStream& s) {
        std::lock_guard<std::mutex> lock(s.out->mu);
        const int64_t n = int64_t(s.out->seq.size());
        py::array_t<int64_t> seq(n);
        py::array_t<int32_t> dec(n);
        py::array_t<double> probs({n, int64_t(s.k)});
        py::array_t<double> lat(n);
        std::copy(s.out->seq.begin(), s.out->seq.end(), seq.mutable_data());
        std::copy(s.out->decision.begin(), s.out->decision.end(), dec.mutable_data());
        std::copy(s.out->probs.begin(), s.out->probs.end(), probs.mutable_data());
        std::copy(s.out->latency.begin(), s.out->latency.end(), lat.mutable_data());
        s.out->seq.clear();
        s.out->decision.clear();
        s.out->probs.clear();
        s.out->latency.clear();
        return py::make_tuple(seq, dec, probs, lat);
      });
}
