/* A device application in C: classify a cine with thyrofast's runtime, no Python.
 *
 *   classify_cine BUNDLE_DIR FRAMES.raw N HEIGHT WIDTH [FPS]
 *
 * FRAMES.raw holds N gray uint8 frames of HEIGHT x WIDTH, row-major, back to back (what a
 * frame grabber writes).  The frames go through a thyrofast_stream (a bounded queue, 2
 * workers, light logit smoothing) at FPS frames per second (default 30; 0 = as fast as
 * possible); each delivered frame's decision is printed, then the latency statistics and the
 * dropped-frame count.  Exit status: 0 on success, 2 on bad arguments, 1 on a runtime error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "thyrofast/thyrofast.h"

typedef struct {
  const thyrofast_classifier* clf;
  int quiet;
} ctx_t;

static void on_result(void* user, uint64_t seq, int32_t decision, const double* probs, const float* logits,
                      double latency_ms) {
  const ctx_t* ctx = (const ctx_t*)user;
  (void)logits;
  if (ctx->quiet) return;
  printf("frame %4llu  %-8s p=%.3f  %.2f ms\n", (unsigned long long)seq,
         decision >= 0 ? thyrofast_classifier_class_name(ctx->clf, (size_t)decision) : "error",
         decision >= 0 ? probs[decision] : 0.0, latency_ms);
}

static void sleep_until(const struct timespec* t) {
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, t, NULL) != 0) {
  }
}

int main(int argc, char** argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: %s BUNDLE_DIR FRAMES.raw N HEIGHT WIDTH [FPS]\n", argv[0]);
    return 2;
  }
  const long n = atol(argv[3]), h = atol(argv[4]), w = atol(argv[5]);
  const double fps = argc > 6 ? atof(argv[6]) : 30.0;
  if (n < 1 || h < 1 || w < 1 || fps < 0) {
    fprintf(stderr, "error: N, HEIGHT, WIDTH must be >= 1 and FPS >= 0\n");
    return 2;
  }
  unsigned char* frames = (unsigned char*)malloc((size_t)(n * h * w));
  FILE* f = fopen(argv[2], "rb");
  if (!frames || !f || fread(frames, 1, (size_t)(n * h * w), f) != (size_t)(n * h * w)) {
    fprintf(stderr, "error: cannot read %ld frames of %ldx%ld from %s\n", n, h, w, argv[2]);
    return 2;
  }
  fclose(f);

  thyrofast_classifier* clf = NULL;
  thyrofast_status s = thyrofast_classifier_load(argv[1], NULL, &clf);
  if (s != THYROFAST_OK) {
    fprintf(stderr, "error [%s]: %s\n", thyrofast_status_name(s), thyrofast_last_error());
    return s == THYROFAST_ERR_UNREADABLE || s == THYROFAST_ERR_INVALID_ARGUMENT ? 2 : 1;
  }
  printf("thyrofast %s, bundle %.12s..., %zu classes, T = %.3g\n", thyrofast_version(),
         thyrofast_classifier_bundle_sha256(clf), thyrofast_classifier_num_classes(clf),
         thyrofast_classifier_temperature(clf));

  ctx_t ctx = {clf, getenv("THYROFAST_QUIET") != NULL};
  thyrofast_stream_options so = {sizeof(thyrofast_stream_options), h, w, 1, 0, 4, 2, 0.3};
  thyrofast_stream* stream = NULL;
  s = thyrofast_stream_open(clf, &so, on_result, &ctx, &stream);
  if (s != THYROFAST_OK) {
    fprintf(stderr, "error [%s]: %s\n", thyrofast_status_name(s), thyrofast_last_error());
    thyrofast_classifier_free(clf);
    return 1;
  }
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  for (long i = 0; i < n && s == THYROFAST_OK; ++i) {
    s = thyrofast_stream_push(stream, frames + i * h * w, w, 1, 0, NULL);
    if (fps > 0) {
      next.tv_nsec += (long)(1e9 / fps);
      while (next.tv_nsec >= 1000000000L) {
        next.tv_nsec -= 1000000000L;
        next.tv_sec += 1;
      }
      sleep_until(&next);
    }
  }
  thyrofast_stream_flush(stream);
  thyrofast_stream_stats st;
  thyrofast_stream_stats_get(stream, &st);
  printf("frames %llu  classified %llu  dropped %llu  max queue %d\n", (unsigned long long)st.pushed,
         (unsigned long long)st.processed, (unsigned long long)st.dropped, st.max_queue_depth);
  printf("latency ms: p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", st.p50_ms, st.p99_ms, st.p999_ms, st.max_ms);
  thyrofast_stream_free(stream);
  thyrofast_classifier_free(clf);
  free(frames);
  return s == THYROFAST_OK ? 0 : 1;
}
