/* team.c: the kernels' threads. One call's work is cut into parts (blocks of weight rows, or
 * attention heads); the calling thread and up to CG_MAX_THREADS - 1 helper threads take parts
 * from one shared counter, so no thread waits at a barrier for a fixed share that a
 * descheduled thread still holds: the caller does every part no helper took, and waits only
 * for parts a helper is in the middle of. Each output is computed by one part, in the order
 * its kernel fixes, so the result does not depend on which thread computed which part or on
 * how many threads there are.
 *
 * Users' machines are busy, and a second thread only pays where a core is free: a helper
 * descheduled mid-part makes the caller wait, and a spinning helper pushes the machine's other
 * work onto the caller's core. So the caller times every call, per byte of its parts, alone
 * and shared (a slow moving average of each, per kind of call), runs each call the cheaper
 * way, and tries the other way for CG_PROBE_CALLS calls once it has not for CG_PROBE_NS; a call
 * that had to wake the helpers is not timed. Helpers spin for CG_SPIN_NS after their last part
 * (the next call of a decode step follows within microseconds), then sleep on a condition
 * variable. A second caller while the team is busy (two threads calling kernels at once) runs
 * its call alone. Compiled without instruction-set flags; no OpenMP. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "codegen_native.h"

#define CG_SPIN_NS 2000000LL    /* helpers spin this long after their last part */
#define CG_STALL_NS 200000LL    /* a wait this long (plus four parts) is a stall (counted) */
#define CG_PROBE_NS 50000000LL  /* the way not taken is tried again after this long */
#define CG_PROBE_CALLS 8        /* calls per try */

#if defined(__x86_64__) || defined(__i386__)
#define CG_RELAX() __builtin_ia32_pause()
#else
#define CG_RELAX() ((void)0)
#endif

/* the shared word: generation (32 bits) | parts (16) | next part (16) */
static _Atomic uint64_t word;
static _Atomic int64_t done;      /* parts the helpers finished in this generation */
static _Atomic int busy;          /* a caller owns the team */
static _Atomic int sleepers;      /* helpers asleep on `wake` */
static _Atomic int limit;         /* helpers numbered `limit` and above leave */
static _Atomic int alive;         /* helpers started and not yet left */
static struct {
    cg_part_fn fn;
    void *ctx;
} job;
static uint32_t generation;       /* the caller's, under `busy` */
static int wanted = 1;            /* threads, the caller included */
static int running = 1;           /* threads started, the caller included */
/* what the caller knows of one kind of call (one part function: a GEMV, an attention) */
typedef struct {
    cg_part_fn fn;
    double cost[2];   /* moving average of ns per byte: [0] alone, [1] shared */
    int64_t tried[2]; /* when each way last ran (monotonic ns) */
    int probe_way, probe_left; /* the way being tried, calls left in the try */
} cg_kind;
#define CG_KINDS 16
static cg_kind kinds[CG_KINDS];
static _Atomic int64_t stalls, shared_calls, alone_calls;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* claim the next part of the current generation: its index, or -1 */
static int64_t claim(uint64_t *seen) {
    uint64_t w = atomic_load_explicit(&word, memory_order_acquire);
    for (;;) {
        *seen = w;
        uint64_t parts = (w >> 16) & 0xffff, next = w & 0xffff;
        if (next >= parts) return -1;
        if (atomic_compare_exchange_weak_explicit(&word, &w, w + 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            return (int64_t)next;
    }
}

static int claimable(void) {
    uint64_t w = atomic_load(&word);
    return (w & 0xffff) < ((w >> 16) & 0xffff);
}

static void *helper_main(void *arg) {
    int worker = (int)(intptr_t)arg;
    int64_t idle_since = now_ns();
    for (;;) {
        if (worker >= atomic_load_explicit(&limit, memory_order_relaxed)) break;
        uint64_t seen;
        int64_t part = claim(&seen);
        if (part >= 0) { /* the call cannot finish before our `done`: job is stable */
            job.fn(job.ctx, part, worker);
            atomic_fetch_add_explicit(&done, 1, memory_order_release);
            idle_since = 0;
            continue;
        }
        if (idle_since == 0) idle_since = now_ns();
        if (now_ns() - idle_since < CG_SPIN_NS) {
            for (int i = 0; i < 64; i++) CG_RELAX();
            continue;
        }
        pthread_mutex_lock(&lock);
        atomic_fetch_add(&sleepers, 1);
        while (!claimable() && worker < atomic_load(&limit))
            pthread_cond_wait(&wake, &lock);
        atomic_fetch_sub(&sleepers, 1);
        pthread_mutex_unlock(&lock);
        idle_since = 0;
    }
    atomic_fetch_sub(&alive, 1);
    return NULL;
}

/* start helpers up to `wanted` (under `busy`); returns the threads running */
static int grow(void) {
    while (running < wanted) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        atomic_fetch_add(&alive, 1);
        int rc = pthread_create(&t, &attr, helper_main, (void *)(intptr_t)running);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            atomic_fetch_sub(&alive, 1);
            wanted = running; /* no more threads to be had: work with those there are */
            break;
        }
        running++;
    }
    return running;
}

static void run_alone(cg_part_fn fn, void *ctx, int64_t parts) {
    for (int64_t p = 0; p < parts; p++) fn(ctx, p, 0);
}

/* the record of calls of `fn` (under `busy`); the oldest record makes room for a new kind */
static cg_kind *kind_of(cg_part_fn fn) {
    cg_kind *oldest = &kinds[0];
    for (int i = 0; i < CG_KINDS; i++) {
        if (kinds[i].fn == fn) return &kinds[i];
        int64_t last = kinds[i].tried[0] > kinds[i].tried[1] ? kinds[i].tried[0] : kinds[i].tried[1];
        int64_t old = oldest->tried[0] > oldest->tried[1] ? oldest->tried[0] : oldest->tried[1];
        if (!kinds[i].fn || last < old) oldest = &kinds[i];
    }
    memset(oldest, 0, sizeof *oldest);
    oldest->fn = fn;
    return oldest;
}

/* alone (0) or shared (1) for this call (under `busy`) */
static int choose(cg_kind *k, int64_t now) {
    if (k->probe_left > 0) {
        k->probe_left--;
        return k->probe_way;
    }
    if (k->cost[1] == 0.0) return 1; /* not measured yet: measure it */
    int best = k->cost[0] == 0.0 || k->cost[1] <= k->cost[0] ? 1 : 0;
    if (now - k->tried[1 - best] < CG_PROBE_NS) return best;
    k->probe_way = 1 - best; /* not tried for a while (or never): try it again */
    k->probe_left = CG_PROBE_CALLS - 1;
    return k->probe_way;
}

/* the caller's share of a shared call: every part no helper took, then the wait for those a
 * helper is in the middle of; 1 when it had to wake sleeping helpers */
static int run_shared(cg_part_fn fn, void *ctx, int64_t parts, int64_t start) {
    job.fn = fn;
    job.ctx = ctx;
    atomic_store_explicit(&done, 0, memory_order_relaxed);
    if (++generation == 0) generation = 1;
    atomic_store(&word, ((uint64_t)generation << 32) | ((uint64_t)parts << 16));
    int woke = atomic_load(&sleepers) > 0;
    if (woke) {
        pthread_mutex_lock(&lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&lock);
    }
    int64_t own = 0;
    uint64_t seen;
    for (int64_t part; (part = claim(&seen)) >= 0; own++) fn(ctx, part, 0);
    if (atomic_load_explicit(&done, memory_order_acquire) + own < parts) {
        int64_t wait_from = now_ns();
        int64_t per_part = own ? (wait_from - start) / own : 0;
        while (atomic_load_explicit(&done, memory_order_acquire) + own < parts) CG_RELAX();
        if (now_ns() - wait_from > CG_STALL_NS + 4 * per_part)
            atomic_fetch_add_explicit(&stalls, 1, memory_order_relaxed);
    }
    return woke;
}

void cg_team_run(cg_part_fn fn, void *ctx, int64_t parts, int64_t part_bytes) {
    if (parts < 2 || parts > CG_MAX_PARTS || wanted < 2) {
        run_alone(fn, ctx, parts);
        return;
    }
    int free_ = 0;
    if (!atomic_compare_exchange_strong(&busy, &free_, 1)) { /* another caller has the team */
        run_alone(fn, ctx, parts);
        return;
    }
    int64_t start = now_ns();
    cg_kind *kind = kind_of(fn);
    int way = choose(kind, start);
    int woke = 0;
    if (way == 1 && grow() < 2) way = 0;
    if (way == 1)
        woke = run_shared(fn, ctx, parts, start);
    else
        run_alone(fn, ctx, parts);
    int64_t end = now_ns();
    kind->tried[way] = end;
    if (!woke) { /* a call that woke the helpers paid for it once: not its steady cost */
        double per_byte = (double)(end - start) / (double)(parts * (part_bytes > 0 ? part_bytes : 1));
        double *cost = &kind->cost[way];
        if (*cost != 0.0 && per_byte > 8.0 * *cost) per_byte = 8.0 * *cost;
        *cost = *cost == 0.0 ? per_byte : *cost + 0.1 * (per_byte - *cost);
    }
    atomic_fetch_add_explicit(way ? &shared_calls : &alone_calls, 1, memory_order_relaxed);
    atomic_store(&busy, 0);
}

int cg_set_threads(int threads) {
    int want = threads < 1 ? 1 : threads > CG_MAX_THREADS ? CG_MAX_THREADS : threads;
    int free_ = 0;
    while (!atomic_compare_exchange_weak(&busy, &free_, 1)) free_ = 0;
    wanted = want;
    memset(kinds, 0, sizeof kinds); /* measure both ways again */
    if (running > want) { /* helpers numbered want .. running - 1 leave, and are waited for */
        pthread_mutex_lock(&lock);
        atomic_store(&limit, want);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&lock);
        while (atomic_load(&alive) > want - 1) {
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
        }
        running = want; /* each helper's number (its scratch) is unique again */
    } else {
        atomic_store(&limit, CG_MAX_THREADS);
        grow(); /* now, not in the first call's time */
    }
    atomic_store(&busy, 0);
    return want;
}

int cg_threads(void) { return wanted; }

void cg_team_stats(int64_t *out) {
    out[0] = atomic_load(&shared_calls);
    out[1] = atomic_load(&alone_calls);
    out[2] = atomic_load(&stalls);
}

static void after_fork_child(void) { /* the child has no helpers */
    running = 1;
    atomic_store(&alive, 0);
    atomic_store(&busy, 0);
    atomic_store(&sleepers, 0);
    pthread_mutex_init(&lock, NULL);
    pthread_cond_init(&wake, NULL);
}

__attribute__((constructor)) static void team_init(void) {
    atomic_store(&limit, CG_MAX_THREADS);
    pthread_atfork(NULL, NULL, after_fork_child);
}
