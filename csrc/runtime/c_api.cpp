// The C ABI (thyrofast.h) over the C++ runtime: exceptions become status codes + a
// per-thread message; nothing C++ crosses the boundary.
#include "thyrofast/thyrofast.h"

#include <new>
#include <string>

#include "thyrofast/runtime.hpp"

struct thyrofast_classifier {
  std::unique_ptr<thyrofast::Classifier> impl;
};
struct thyrofast_stream {
  std::unique_ptr<thyrofast::Stream> impl;
  thyrofast_result_fn fn;
  void* user;
};

namespace {

thread_local std::string g_last_error;

thyrofast_status fail(thyrofast_status s, const char* message) {
  g_last_error = message;
  return s;
}

template <class F>
thyrofast_status guard(F&& f) {
  try {
    f();
    return THYROFAST_OK;
  } catch (const thyrofast::Error& e) {
    return fail(static_cast<thyrofast_status>(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(THYROFAST_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::invalid_argument& e) {
    return fail(THYROFAST_ERR_INVALID_ARGUMENT, e.what());
  } catch (const std::exception& e) {
    return fail(THYROFAST_ERR_RUNTIME, e.what());
  } catch (...) {
    return fail(THYROFAST_ERR_RUNTIME, "unknown error");
  }
}

thyrofast::FrameBatch batch(const thyrofast_frames* f) {
  if (!f) throw thyrofast::Error(thyrofast::ErrorCode::invalid_argument, "frames is NULL");
  if (f->pixel_type != 0 && f->pixel_type != 1)
    throw thyrofast::Error(thyrofast::ErrorCode::invalid_argument, "pixel_type must be 0 (uint8) or 1 (uint16)");
  return thyrofast::FrameBatch{f->data, f->pixel_type ? thyrofast::PixelType::u16 : thyrofast::PixelType::u8,
                               f->n, f->h, f->w, f->c, f->stride_n, f->stride_h, f->stride_w, f->stride_c};
}

void need(const void* p, const char* name) {
  if (!p) throw thyrofast::Error(thyrofast::ErrorCode::invalid_argument, std::string(name) + " is NULL");
}

}  // namespace

extern "C" {

const char* thyrofast_version(void) { return thyrofast::runtime_version(); }
const char* thyrofast_last_error(void) { return g_last_error.c_str(); }

const char* thyrofast_status_name(thyrofast_status s) {
  switch (s) {
    case THYROFAST_OK: return "ok";
    case THYROFAST_ERR_UNREADABLE: return "unreadable";
    case THYROFAST_ERR_INVALID_ARGUMENT: return "invalid_argument";
    case THYROFAST_ERR_RUNTIME: return "runtime";
    case THYROFAST_ERR_OUT_OF_MEMORY: return "out_of_memory";
    case THYROFAST_ERR_CLOSED: return "closed";
  }
  return "unknown";
}

thyrofast_status thyrofast_classifier_load(const char* dir, const thyrofast_options* o, thyrofast_classifier** out) {
  return guard([&] {
    need(dir, "bundle_dir");
    need(out, "out");
    *out = nullptr;
    thyrofast::ClassifierOptions opt;
    if (o) {
      if (o->size < sizeof(thyrofast_options))
        throw thyrofast::Error(thyrofast::ErrorCode::invalid_argument, "options->size is smaller than this version's options");
      if (o->precision != 0 && o->precision != 1)
        throw thyrofast::Error(thyrofast::ErrorCode::invalid_argument, "precision must be 0 (fp32) or 1 (int8)");
      opt.precision = o->precision ? thyrofast::Precision::int8 : thyrofast::Precision::fp32;
      opt.threads = o->threads;
      opt.max_batch = o->max_batch ? o->max_batch : 32;
      opt.max_concurrent = o->max_concurrent;
    }
    auto* c = new thyrofast_classifier{thyrofast::Classifier::load(dir, opt)};
    *out = c;
  });
}

void thyrofast_classifier_free(thyrofast_classifier* c) { delete c; }

size_t thyrofast_classifier_num_classes(const thyrofast_classifier* c) { return c ? c->impl->num_classes() : 0; }

const char* thyrofast_classifier_class_name(const thyrofast_classifier* c, size_t i) {
  if (!c || i >= c->impl->num_classes()) return nullptr;
  return c->impl->classes()[i].c_str();
}

double thyrofast_classifier_temperature(const thyrofast_classifier* c) { return c ? c->impl->temperature() : 0.0; }

const char* thyrofast_classifier_bundle_sha256(const thyrofast_classifier* c) {
  return c ? c->impl->bundle_sha256().c_str() : nullptr;
}

thyrofast_status thyrofast_classifier_predict(const thyrofast_classifier* c, const thyrofast_frames* f, double* probs,
                                              int32_t* decisions) {
  return guard([&] {
    need(c, "classifier");
    c->impl->predict(batch(f), probs, decisions);
  });
}

thyrofast_status thyrofast_classifier_logits(const thyrofast_classifier* c, const thyrofast_frames* f, float* logits) {
  return guard([&] {
    need(c, "classifier");
    c->impl->logits(batch(f), logits);
  });
}

thyrofast_status thyrofast_classifier_aggregate(const thyrofast_classifier* c, const double* probs, size_t n,
                                                double* out) {
  return guard([&] {
    need(c, "classifier");
    need(probs, "probs");
    need(out, "patient_probs");
    c->impl->aggregate(probs, n, out);
  });
}

thyrofast_status thyrofast_stream_open(const thyrofast_classifier* c, const thyrofast_stream_options* o,
                                       thyrofast_result_fn fn, void* user, thyrofast_stream** out) {
  return guard([&] {
    need(c, "classifier");
    need(o, "options");
    need(out, "out");
    *out = nullptr;
    if (o->size < sizeof(thyrofast_stream_options))
      throw thyrofast::Error(thyrofast::ErrorCode::invalid_argument, "options->size is smaller than this version's options");
    thyrofast::StreamOptions so;
    so.height = o->height;
    so.width = o->width;
    so.channels = o->channels;
    so.type = o->pixel_type ? thyrofast::PixelType::u16 : thyrofast::PixelType::u8;
    so.capacity = o->capacity;
    so.workers = o->workers;
    so.smoothing = o->smoothing;
    auto s = std::make_unique<thyrofast_stream>();
    s->fn = fn;
    s->user = user;
    thyrofast_stream* raw = s.get();
    s->impl = std::make_unique<thyrofast::Stream>(*c->impl, so, [raw](const thyrofast::StreamResult& r) {
      if (raw->fn) raw->fn(raw->user, r.sequence, r.decision, r.probs, r.logits, r.latency_ms);
    });
    *out = s.release();
  });
}

thyrofast_status thyrofast_stream_push(thyrofast_stream* s, const void* px, int64_t sh, int64_t sw, int64_t sc,
                                       uint64_t* sequence) {
  return guard([&] {
    need(s, "stream");
    const uint64_t q = s->impl->push(px, sh, sw, sc);
    if (sequence) *sequence = q;
  });
}

thyrofast_status thyrofast_stream_flush(thyrofast_stream* s) {
  return guard([&] {
    need(s, "stream");
    s->impl->flush();
  });
}

thyrofast_status thyrofast_stream_stats_get(const thyrofast_stream* s, thyrofast_stream_stats* out) {
  return guard([&] {
    need(s, "stream");
    need(out, "stats");
    const thyrofast::StreamStats st = s->impl->stats();
    *out = thyrofast_stream_stats{st.pushed, st.processed, st.dropped, st.max_queue_depth,
                                  st.p50_ms, st.p99_ms, st.p999_ms, st.max_ms, st.mean_ms};
  });
}

void thyrofast_stream_free(thyrofast_stream* s) {
  if (!s) return;
  try {
    s->impl->close();
  } catch (...) {
  }
  delete s;
}

}  // extern "C"
