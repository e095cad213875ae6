/* Reads of mapped files that survive the file shrinking.
 *
 * Touching a page of a mapping past the end of a file that was truncated
 * after it was mapped raises SIGBUS, which kills the process: every upload
 * in it, not just the one whose file shrank.  The engine checks size and
 * mtime before it maps each window, but a truncation can still land between
 * the check and the read.  So the reads of mapped memory done here (hashing,
 * copying) run under a guard: a SIGBUS whose address lies in the range being
 * read jumps back out of the read, which then reports failure (-1) instead.
 *
 * md5_many reads many buffers in one call: its frame lists them all, and a
 * fault in any of them ends the whole call.
 *
 * The handler is installed (again) on entry to every guarded read if someone
 * else took SIGBUS since (faulthandler, say); any SIGBUS it does not own is
 * handed back to the previous handler, which sees the fault again as the
 * access repeats.
 */
#ifndef SYNAPSE_ENGINE_GUARD_H
#define SYNAPSE_ENGINE_GUARD_H

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>

#include "_md5.h"
#include "_md5_mb.h"

typedef struct {
    sigjmp_buf jump;
    const unsigned char *lo, *hi; /* the bytes being read */
    /* or, for reads of many buffers at once: [starts[i], starts[i] + lengths[i]) for i < count */
    const unsigned char *const *starts;
    const size_t *lengths;
    size_t count;
} guard_frame;

/* initial-exec: the handler reads it without the allocation a dynamic TLS lookup may do. */
static __thread guard_frame *guard_current __attribute__((tls_model("initial-exec")));
static struct sigaction guard_previous;
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;

/* Plain loads only: this runs in the signal handler. */
static int guard_covers(const guard_frame *frame, const unsigned char *at) {
    if (at >= frame->lo && at < frame->hi) return 1;
    for (size_t i = 0; i < frame->count; i++)
        if (at >= frame->starts[i] && at < frame->starts[i] + frame->lengths[i]) return 1;
    return 0;
}

static void guard_on_sigbus(int sig, siginfo_t *info, void *context) {
    guard_frame *frame = guard_current;
    const unsigned char *at = (const unsigned char *)info->si_addr;
    /* si_code > 0: raised by the kernel for a fault, not sent by kill(). */
    if (frame != NULL && info->si_code > 0 && guard_covers(frame, at)) {
        guard_current = NULL;
        siglongjmp(frame->jump, 1);
    }
    (void)context;
    sigaction(sig, &guard_previous, NULL);
}

static void guard_ensure_installed(void) {
    struct sigaction now;
    pthread_mutex_lock(&guard_lock);
    if (sigaction(SIGBUS, NULL, &now) == 0 &&
        !((now.sa_flags & SA_SIGINFO) && now.sa_sigaction == guard_on_sigbus)) {
        struct sigaction mine;
        memset(&mine, 0, sizeof mine);
        mine.sa_sigaction = guard_on_sigbus;
        mine.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&mine.sa_mask);
        sigaction(SIGBUS, &mine, &guard_previous);
    }
    pthread_mutex_unlock(&guard_lock);
}

/* Runs STATEMENT with reads of [p, p + n) guarded; evaluates to 0, or -1 if they faulted. */
#define GUARDED(p, n, STATEMENT) GUARDED_RANGES((p), (p) + (n), NULL, NULL, 0, STATEMENT)

/* The same for reads of [LO, HI) and of COUNT ranges [STARTS[i], STARTS[i] + LENGTHS[i]). */
#define GUARDED_RANGES(LO, HI, STARTS, LENGTHS, COUNT, STATEMENT) \
    guard_frame frame;                                    \
    guard_ensure_installed();                             \
    frame.lo = (LO);                                      \
    frame.hi = (HI);                                      \
    frame.starts = (STARTS);                              \
    frame.lengths = (LENGTHS);                            \
    frame.count = (COUNT);                                \
    if (sigsetjmp(frame.jump, 1)) return -1;              \
    guard_current = &frame;                               \
    __asm__ __volatile__("" ::: "memory");                \
    STATEMENT;                                            \
    __asm__ __volatile__("" ::: "memory");                \
    guard_current = NULL;                                 \
    return 0;

static int guarded_md5_update(md5_ctx *c, const unsigned char *p, size_t n) {
    GUARDED(p, n, md5_update(c, p, n))
}

static int guarded_md5_update_pair(md5_ctx *x, md5_ctx *y, const unsigned char *p, size_t n) {
    GUARDED(p, n, md5_update_pair(x, y, p, n))
}

static int guarded_copy(unsigned char *to, const unsigned char *p, size_t n) {
    GUARDED(p, n, memcpy(to, p, n))
}

/* md5_mb_update: ctx[i] absorbs p[i][0, n[i]), all the streams' reads guarded. */
static int guarded_md5_many(md5_ctx *const *ctx, const unsigned char *const *p, const size_t *n, size_t count,
                            int level, md5_mb_job *jobs) {
    GUARDED_RANGES(NULL, NULL, p, n, count, md5_mb_update(ctx, p, n, count, level, jobs))
}

#endif
