// Emulates a slow flash disk (an edge box's SD card or eMMC) for a benchmark: every fsync and fdatasync of the
// process takes SLOW_FSYNC_US microseconds longer (default 10000). Not part of the product or the tests.
//   gcc -shared -fPIC -O2 -o /tmp/slow-fsync.so bench/slow-fsync.c -ldl
//   LD_PRELOAD=/tmp/slow-fsync.so SLOW_FSYNC_US=10000 npm run bench -- edge
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>
static int delay(void) { const char *s = getenv("SLOW_FSYNC_US"); return s ? atoi(s) : 10000; }
int fsync(int fd) { static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fsync"); usleep(delay()); return real(fd); }
int fdatasync(int fd) { static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fdatasync"); usleep(delay()); return real(fd); }
