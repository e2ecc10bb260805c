// Only in sanitizer builds of the runtime's test program (THYROFAST_SANITIZE): oneTBB, inside
// OpenVINO, dlopen()s libtbbbind with RTLD_DEEPBIND, which AddressSanitizer refuses outright
// (google/sanitizers#611: a deep-bound library would bypass ASan's malloc).  This dlopen,
// defined in the executable, is found before ASan's interceptor; it drops that one flag and
// hands the call on to the interceptor (RTLD_NEXT), so everything is still checked.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>

extern "C" void* dlopen(const char* file, int mode) {
  using fn = void* (*)(const char*, int);
  static fn next = reinterpret_cast<fn>(dlsym(RTLD_NEXT, "dlopen"));
  return next(file, mode & ~RTLD_DEEPBIND);
}
