// A caching allocator for large host blocks, loaded with LD_PRELOAD (see __init__.py).
//
// XLA:CPU allocates each execution's temporary buffer (about 1 GB for Net1D-small's training
// step at B=64, L=5000) with malloc and frees it at the end of the step. glibc serves blocks of
// that size with a fresh mmap every time, so every page of the buffer is faulted in and zeroed
// by the kernel on every step. This library keeps freed blocks of at least
// CLEF_BIGCACHE_THRESHOLD bytes (default 8 MiB) mapped and hands them out again: requests are
// rounded up to 2 MiB and carved from one reserved (MAP_NORESERVE) address range, best fit
// among recently freed ("hot") blocks first, then among released ("cold") ones; neighbouring
// free blocks coalesce. When hot blocks exceed CLEF_BIGCACHE_BYTES (default half of physical
// memory), the least recently freed ones are returned to the kernel (MADV_DONTNEED), so the
// resident set stays bounded. Smaller requests, and everything when the range cannot be
// reserved, go to glibc unchanged.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define ALIGN ((size_t)2 << 20)
#define MAX_BLOCKS 4096
enum { LIVE = 0, HOT = 1, COLD = 2 };
typedef struct { char *p; size_t size; int state; unsigned long stamp; } block;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char *region;  // Set once (release), read without the lock (acquire).
static size_t region_size, used, hot_bytes, cap_bytes, threshold = (size_t)8 << 20;
static int init_done, disabled;
static block blocks[MAX_BLOCKS];  // Sorted by address, contiguous from region.
static int nblocks;
static unsigned long clock_;
static unsigned long long n_new, n_hot, n_cold;

static size_t env_size(const char *name, size_t dflt) {
  const char *v = getenv(name);
  if (!v || !*v) return dflt;
  char *end; unsigned long long x = strtoull(v, &end, 10);
  return end == v ? dflt : (size_t)x;
}

static void init_locked(void) {
  init_done = 1;
  // Reserve address space only (1 TiB, halving down to 16 GiB where that is refused), with
  // one spare 2 MiB so that the range, and so every block, can start 2 MiB-aligned.
  for (size_t want = (size_t)1 << 40; want >= ((size_t)1 << 34); want >>= 1) {
    void *r = mmap(NULL, want + ALIGN, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED) continue;
    region_size = want;
    __atomic_store_n(&region, (char *)(((uintptr_t)r + ALIGN - 1) & ~(uintptr_t)(ALIGN - 1)),
                     __ATOMIC_RELEASE);
    return;
  }
  disabled = 1;
}

static inline int ours(const void *p) {
  char *r = __atomic_load_n(&region, __ATOMIC_ACQUIRE);
  return r && (uintptr_t)p - (uintptr_t)r < region_size;
}

static void insert_at(int i, block b) {
  memmove(&blocks[i + 1], &blocks[i], (size_t)(nblocks - i) * sizeof(block));
  blocks[i] = b; nblocks++;
}
static void remove_at(int i) {
  memmove(&blocks[i], &blocks[i + 1], (size_t)(nblocks - i - 1) * sizeof(block));
  nblocks--;
}

// Splits blocks[i] (free) so that it is exactly `size` long; the tail stays free, same state.
static void split(int i, size_t size) {
  if (blocks[i].size - size < threshold || nblocks >= MAX_BLOCKS) return;
  block tail = {blocks[i].p + size, blocks[i].size - size, blocks[i].state, blocks[i].stamp};
  blocks[i].size = size;
  insert_at(i + 1, tail);
}

static void *alloc_locked(size_t size) {
  if (!init_done) init_locked();
  if (disabled) return NULL;
  size_t s = (size + ALIGN - 1) & ~(ALIGN - 1);
  int best = -1;
  for (int pass = HOT; pass <= COLD && best < 0; pass++) {
    for (int i = 0; i < nblocks; i++) {
      if (blocks[i].state != pass || blocks[i].size < s) continue;
      if (best < 0 || blocks[i].size < blocks[best].size) best = i;
    }
  }
  if (best >= 0) {
    split(best, s);
    if (blocks[best].state == HOT) { hot_bytes -= blocks[best].size; n_hot++; } else n_cold++;
    blocks[best].state = LIVE;
    return blocks[best].p;
  }
  if (used + s > region_size || nblocks >= MAX_BLOCKS) return NULL;
  block b = {region + used, s, LIVE, 0};
  used += s;
  insert_at(nblocks, b);
  n_new++;
  return b.p;
}

static int find(const void *p) {
  int lo = 0, hi = nblocks - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (blocks[mid].p == p) return mid;
    if (blocks[mid].p < (char *)p) lo = mid + 1; else hi = mid - 1;
  }
  return -1;
}

static void merge_around(int i) {
  if (i + 1 < nblocks && blocks[i + 1].state == blocks[i].state &&
      blocks[i].p + blocks[i].size == blocks[i + 1].p) {
    blocks[i].size += blocks[i + 1].size;
    if (blocks[i + 1].stamp > blocks[i].stamp) blocks[i].stamp = blocks[i + 1].stamp;
    remove_at(i + 1);
  }
  if (i > 0 && blocks[i - 1].state == blocks[i].state &&
      blocks[i - 1].p + blocks[i - 1].size == blocks[i].p) {
    blocks[i - 1].size += blocks[i].size;
    if (blocks[i].stamp > blocks[i - 1].stamp) blocks[i - 1].stamp = blocks[i].stamp;
    remove_at(i);
  }
}

static void free_locked(void *p) {
  int i = find(p);
  if (i < 0 || blocks[i].state != LIVE) return;
  blocks[i].state = HOT;
  blocks[i].stamp = ++clock_;
  hot_bytes += blocks[i].size;
  while (hot_bytes > cap_bytes) {  // Release the least recently freed hot block.
    int old = -1;
    for (int j = 0; j < nblocks; j++)
      if (blocks[j].state == HOT && (old < 0 || blocks[j].stamp < blocks[old].stamp)) old = j;
    if (old < 0) break;
    madvise(blocks[old].p, blocks[old].size, MADV_DONTNEED);
    hot_bytes -= blocks[old].size;
    blocks[old].state = COLD;
    merge_around(old);
  }
  i = find(p);
  if (i >= 0) merge_around(i);
}

static void *big(size_t size) {
  pthread_mutex_lock(&mu);
  void *p = alloc_locked(size);
  pthread_mutex_unlock(&mu);
  return p;
}

static size_t usable_locked(const void *p) {
  int i = find(p);
  return i < 0 ? 0 : blocks[i].size;
}

void *malloc(size_t size) {
  if (size >= threshold) { void *p = big(size); if (p) return p; }
  return __libc_malloc(size);
}
void free(void *p) {
  if (ours(p)) { pthread_mutex_lock(&mu); free_locked(p); pthread_mutex_unlock(&mu); return; }
  __libc_free(p);
}
void *calloc(size_t n, size_t size) { return __libc_calloc(n, size); }
void *realloc(void *p, size_t size) {
  if (!ours(p)) return __libc_realloc(p, size);
  pthread_mutex_lock(&mu); size_t old = usable_locked(p); pthread_mutex_unlock(&mu);
  if (size <= old && size >= threshold) return p;
  void *q = malloc(size);
  if (!q) return NULL;
  memcpy(q, p, old < size ? old : size);
  free(p);
  return q;
}
static void *aligned(size_t align, size_t size) {
  if (size >= threshold && align <= ALIGN) { void *p = big(size); if (p) return p; }
  return __libc_memalign(align, size);
}
int posix_memalign(void **out, size_t align, size_t size) {
  if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
  void *p = aligned(align, size);
  if (!p && size) return ENOMEM;
  *out = p; return 0;
}
void *aligned_alloc(size_t align, size_t size) { return aligned(align, size); }
void *memalign(size_t align, size_t size) { return aligned(align, size); }
size_t malloc_usable_size(void *p) {
  if (ours(p)) { pthread_mutex_lock(&mu); size_t s = usable_locked(p); pthread_mutex_unlock(&mu); return s; }
  static size_t (*next)(void *);
  if (!next) next = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
  return next ? next(p) : 0;
}

static void before_fork(void) { pthread_mutex_lock(&mu); }
static void after_fork(void) { pthread_mutex_unlock(&mu); }
// The tuning is read once, before main(); requests made earlier (by other libraries' start-up)
// see the defaults.
__attribute__((constructor)) static void setup(void) {
  long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
  size_t phys = (pages > 0 && psz > 0) ? (size_t)pages * (size_t)psz : ((size_t)8 << 30);
  pthread_mutex_lock(&mu);
  cap_bytes = env_size("CLEF_BIGCACHE_BYTES", phys / 2);
  size_t t = env_size("CLEF_BIGCACHE_THRESHOLD", threshold);
  threshold = t < ALIGN ? ALIGN : t;
  pthread_mutex_unlock(&mu);
  pthread_atfork(before_fork, after_fork, after_fork);
}

// Counters for tests and benchmarks: blocks carved new, reused hot, reused cold; bytes held
// hot; bytes of the range carved so far.
void clef_bigcache_stats(unsigned long long out[5]) {
  pthread_mutex_lock(&mu);
  out[0] = n_new; out[1] = n_hot; out[2] = n_cold; out[3] = hot_bytes; out[4] = used;
  pthread_mutex_unlock(&mu);
}
