/* thyrofast C API: the runtime (bundle -> frames -> calibrated decision) behind opaque handles.
 *
 * Link thyrofast::runtime (libthyrofast_runtime.so).  Binary-stable promise: within a major
 * version, functions are only added, never changed or removed; structs passed in are
 * versioned by their leading `size` field (set it to sizeof the struct you compiled with).
 *
 * Errors: every function that can fail returns a thyrofast_status (0 = THYROFAST_OK); the
 * message of the calling thread's last failure is thyrofast_last_error() (valid until the
 * thread's next failing call).  THYROFAST_ERR_UNREADABLE is Python's InputError("unreadable"):
 * the bundle's card or an artifact cannot be used (e.g. an SHA-256 mismatch).
 *
 * Threads: one thyrofast_classifier may be used from any number of threads at once (a pool of
 * infer requests; see runtime.hpp).  A thyrofast_stream's push may be called from any thread.
 */
#ifndef THYROFAST_H_
#define THYROFAST_H_

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define THYROFAST_C_API __attribute__((visibility("default")))
#else
#define THYROFAST_C_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum thyrofast_status {
  THYROFAST_OK = 0,
  THYROFAST_ERR_UNREADABLE = 1,
  THYROFAST_ERR_INVALID_ARGUMENT = 2,
  THYROFAST_ERR_RUNTIME = 3,
  THYROFAST_ERR_OUT_OF_MEMORY = 4,
  THYROFAST_ERR_CLOSED = 5
} thyrofast_status;

typedef struct thyrofast_classifier thyrofast_classifier;
typedef struct thyrofast_stream thyrofast_stream;

typedef struct thyrofast_options {
  size_t size;            /* sizeof(thyrofast_options) */
  int precision;          /* 0 = fp32, 1 = int8 */
  int threads;            /* 0 = all CPUs */
  int max_batch;          /* 0 = 32 */
  int max_concurrent;     /* 0 = number of CPUs */
} thyrofast_options;

/* N frames of H x W x C pixels, element strides (any sign); pixel_type 0 = uint8, 1 = uint16. */
typedef struct thyrofast_frames {
  const void* data;
  int pixel_type;
  int64_t n, h, w, c;
  int64_t stride_n, stride_h, stride_w, stride_c;
} thyrofast_frames;

THYROFAST_C_API const char* thyrofast_version(void);
THYROFAST_C_API const char* thyrofast_last_error(void);
THYROFAST_C_API const char* thyrofast_status_name(thyrofast_status status); /* "unreadable", ... */

/* options may be NULL (defaults). */
THYROFAST_C_API thyrofast_status thyrofast_classifier_load(const char* bundle_dir, const thyrofast_options* options,
                                                           thyrofast_classifier** out);
THYROFAST_C_API void thyrofast_classifier_free(thyrofast_classifier* classifier);
THYROFAST_C_API size_t thyrofast_classifier_num_classes(const thyrofast_classifier* classifier);
THYROFAST_C_API const char* thyrofast_classifier_class_name(const thyrofast_classifier* classifier, size_t index);
THYROFAST_C_API double thyrofast_classifier_temperature(const thyrofast_classifier* classifier);
THYROFAST_C_API const char* thyrofast_classifier_bundle_sha256(const thyrofast_classifier* classifier);
/* probs: n x K doubles; decisions: n class indices or NULL. */
THYROFAST_C_API thyrofast_status thyrofast_classifier_predict(const thyrofast_classifier* classifier,
                                                              const thyrofast_frames* frames, double* probs,
                                                              int32_t* decisions);
THYROFAST_C_API thyrofast_status thyrofast_classifier_logits(const thyrofast_classifier* classifier,
                                                             const thyrofast_frames* frames, float* logits);
/* One patient's K probabilities from its n images' probabilities (n x K), by the bundle's rule. */
THYROFAST_C_API thyrofast_status thyrofast_classifier_aggregate(const thyrofast_classifier* classifier,
                                                                const double* probs, size_t n, double* patient_probs);

/* Live cine: see thyrofast::Stream in runtime.hpp.  The callback runs on a worker thread, in frame
 * order; `probs` / `logits` point at K values valid during the call only. */
typedef void (*thyrofast_result_fn)(void* user, uint64_t sequence, int32_t decision, const double* probs,
                                    const float* logits, double latency_ms);
typedef struct thyrofast_stream_options {
  size_t size; /* sizeof(thyrofast_stream_options) */
  int64_t height, width, channels;
  int pixel_type;
  int capacity;
  int workers;
  double smoothing;
} thyrofast_stream_options;
typedef struct thyrofast_stream_stats {
  uint64_t pushed, processed, dropped;
  int max_queue_depth;
  double p50_ms, p99_ms, p999_ms, max_ms, mean_ms;
} thyrofast_stream_stats;

THYROFAST_C_API thyrofast_status thyrofast_stream_open(const thyrofast_classifier* classifier,
                                                       const thyrofast_stream_options* options,
                                                       thyrofast_result_fn on_result, void* user,
                                                       thyrofast_stream** out);
THYROFAST_C_API thyrofast_status thyrofast_stream_push(thyrofast_stream* stream, const void* pixels, int64_t stride_h,
                                                       int64_t stride_w, int64_t stride_c, uint64_t* sequence);
THYROFAST_C_API thyrofast_status thyrofast_stream_flush(thyrofast_stream* stream);
THYROFAST_C_API thyrofast_status thyrofast_stream_stats_get(const thyrofast_stream* stream,
                                                            thyrofast_stream_stats* stats);
/* Flushes, stops the workers and frees the stream (close before freeing its classifier). */
THYROFAST_C_API void thyrofast_stream_free(thyrofast_stream* stream);

#ifdef __cplusplus
}
#endif

#endif /* THYROFAST_H_ */
