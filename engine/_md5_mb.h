/* Multi-buffer MD5: many independent streams side by side, one per SIMD lane.
 *
 * One MD5 stream is a single dependency chain and cannot be vectorised, but
 * the same step of 8 (AVX2) or 16 (AVX-512F) independent streams can run as
 * one vector instruction per operation, each 32-bit lane holding one stream's
 * state: the technique of Intel isa-l_crypto's md5_mb.  With AVX2, 16 streams
 * run as two groups of 8 interleaved.  Each lane's block is
 * loaded as it lies in memory and the loads are transposed, so that vector j
 * holds message word j of every lane.
 *
 * The vector kernels carry GCC target attributes, so the module is compiled
 * for the baseline ISA and still runs anywhere; which kernel runs is decided
 * at run time (md5_mb_cpu_level).  Off x86 only the scalar kernels exist.
 *
 * This header only computes.  It does not guard its reads of caller memory
 * (_guard.h wraps md5_mb_update for that) and it allocates nothing.
 */
#ifndef SYNAPSE_ENGINE_MD5_MB_H
#define SYNAPSE_ENGINE_MD5_MB_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_md5.h"

#define MD5_MB_SCALAR 0
#define MD5_MB_AVX2 1
#define MD5_MB_AVX512 2
#define MD5_MB_MAX_LANES 16

/* Defined to 0 beforehand, it builds the portable path on x86 too (to test it). */
#ifndef MD5_MB_X86
#if defined(__x86_64__) || defined(__i386__)
#define MD5_MB_X86 1
#else
#define MD5_MB_X86 0
#endif
#endif
#if MD5_MB_X86
#include <cpuid.h>
#include <immintrin.h>
#endif

/* A kernel runs n blocks in each of its lanes: lane i hashes p[i][0, 64 n) into h[i][0..3]. */
typedef void (*md5_mb_kernel)(uint32_t *const *h, const unsigned char *const *p, size_t n);

static void md5_mb_x1(uint32_t *const *h, const unsigned char *const *p, size_t n) {
    md5_blocks(h[0], p[0], n);
}

/* The scalar path's two lanes: two chains interleaved keep a superscalar core busier than one. */
static void md5_mb_x2(uint32_t *const *h, const unsigned char *const *p, size_t n) {
    md5_blocks_x2(h[0], p[0], h[1], p[1], n);
}

/* What the CPU and the OS allow: AVX needs the OS to save YMM state, AVX-512
 * the opmask and both ZMM halves too (XCR0 bits 1-2, 5-7).  GCC >= 7.4's
 * __builtin_cpu_supports checks XCR0 as well (GCC bug 85100), but checking
 * here does not depend on the compiler's runtime. */
static int md5_mb_cpu_level(void) {
#if MD5_MB_X86
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_OSXSAVE)) return MD5_MB_SCALAR;
    unsigned lo, hi;
    __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    __builtin_cpu_init();
    if ((lo & 0x06) != 0x06 || !__builtin_cpu_supports("avx2")) return MD5_MB_SCALAR;
    if ((lo & 0xe6) != 0xe6 || !__builtin_cpu_supports("avx512f")) return MD5_MB_AVX2;
    return MD5_MB_AVX512;
#else
    return MD5_MB_SCALAR;
#endif
}

/* Lanes of the widest kernel at this level (the most streams run at once). */
static int md5_mb_width(int level) {
#if !MD5_MB_X86
    level = MD5_MB_SCALAR; /* only the scalar kernels are built */
#endif
    return level >= MD5_MB_AVX2 ? 16 : 2;
}

#if MD5_MB_X86

/* Keeps a + M + K a separate sum the compiler cannot reassociate with the
 * round function: that sum does not wait for b, so the only chain left from
 * one step to the next is F, add, rotate, add. */
#define MD5_MB_OPAQUE(x) __asm__("" : "+v"(x))
/* The kernels read the step constants through this, an opaque pointer to
 * md5_k: a constant the compiler can see it would build in a general
 * register and broadcast (three instructions a step); read from memory it
 * is a broadcast load, folded into the add with AVX-512. */
#define MD5_MB_K const uint32_t *K = md5_k; __asm__("" : "+r"(K))

/* The kernels keep word j of every lane's state in one vector: they read the
 * states as rows (row j holds word j of lanes 0 .. width - 1) and write them back. */
static inline void md5_mb_states_to_rows(uint32_t *const *h, int width, uint32_t *rows) {
    for (int i = 0; i < width; i++)
        for (int j = 0; j < 4; j++) rows[j * width + i] = h[i][j];
}

static inline void md5_mb_rows_to_states(const uint32_t *rows, int width, uint32_t *const *h) {
    for (int i = 0; i < width; i++)
        for (int j = 0; j < 4; j++) h[i][j] = rows[j * width + i];
}

/* ---- AVX2: 8 lanes ------------------------------------------------------ */

#define MD5_MB_AVX2_FN __attribute__((target("avx2")))

#define V8_ADD _mm256_add_epi32
#define V8_ROTL(x, s) _mm256_or_si256(_mm256_slli_epi32((x), (s)), _mm256_srli_epi32((x), 32 - (s)))
/* The round functions as in _md5.h, the operand that depends on b applied last. */
#define V8_MD5_F(a, b, c, d) a = V8_ADD(a, _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d))));
#define V8_MD5_G(a, b, c, d) a = V8_ADD(a, _mm256_andnot_si256(d, c)); a = V8_ADD(a, _mm256_and_si256(b, d));
#define V8_MD5_H(a, b, c, d) a = V8_ADD(a, _mm256_xor_si256(b, _mm256_xor_si256(c, d)));
#define V8_MD5_I(a, b, c, d) a = V8_ADD(a, _mm256_xor_si256(c, _mm256_or_si256(b, _mm256_xor_si256(d, ones))));
#define V8_STEP(f, a, b, c, d, m, k, s)                                \
    a = V8_ADD(a, V8_ADD(M[m], _mm256_set1_epi32((int)K[k])));    \
    MD5_MB_OPAQUE(a);                                                  \
    V8_##f(a, b, c, d)                                                 \
    a = V8_ADD(V8_ROTL(a, s), b);

/* Half `half` (words 8 half .. 8 half + 7) of block `at` of each of the 8
 * lanes, transposed: out[j] holds word 8 half + j of every lane. */
MD5_MB_AVX2_FN static inline void md5_mb_words8(const unsigned char *const *p, size_t at, int half, __m256i *out) {
    __m256i r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_si256((const __m256i *)(p[i] + at + 32 * half));
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* u[4 q + j]: word 4 k + j of rows 4 q .. 4 q + 3, in 128-bit half k. */
    for (int q = 0; q < 2; q++) {
        __m256i *v = t + 4 * q, *w = u + 4 * q;
        w[0] = _mm256_unpacklo_epi64(v[0], v[2]);
        w[1] = _mm256_unpackhi_epi64(v[0], v[2]);
        w[2] = _mm256_unpacklo_epi64(v[1], v[3]);
        w[3] = _mm256_unpackhi_epi64(v[1], v[3]);
    }
    for (int j = 0; j < 4; j++) {
        out[8 * half + j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
        out[8 * half + 4 + j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
    }
}

MD5_MB_AVX2_FN static void md5_mb_x8(uint32_t *const *h, const unsigned char *const *p, size_t n) {
    uint32_t lanes[4][8];
    md5_mb_states_to_rows(h, 8, lanes[0]);
    __m256i a = _mm256_loadu_si256((const __m256i *)lanes[0]), b = _mm256_loadu_si256((const __m256i *)lanes[1]);
    __m256i c = _mm256_loadu_si256((const __m256i *)lanes[2]), d = _mm256_loadu_si256((const __m256i *)lanes[3]);
    const __m256i ones = _mm256_set1_epi32(-1);
    __m256i words[2][16], *M = words[0], *next = words[1];
    if (n) {
        md5_mb_words8(p, 0, 0, M);
        md5_mb_words8(p, 0, 1, M);
    }
    for (size_t at = 0; n; n--, at += 64) {
        /* The next block is read between the rounds (see md5_mb_x16); the last one re-reads itself. */
        size_t ahead = n > 1 ? at + 64 : at;
        __m256i a0 = a, b0 = b, c0 = c, d0 = d;
        MD5_MB_K;
        md5_mb_words8(p, ahead, 0, next);
        MD5_ROUND1(V8_STEP)
        md5_mb_words8(p, ahead, 1, next);
        MD5_ROUND2(V8_STEP)
        MD5_ROUND3(V8_STEP)
        MD5_ROUND4(V8_STEP)
        a = V8_ADD(a, a0); b = V8_ADD(b, b0); c = V8_ADD(c, c0); d = V8_ADD(d, d0);
        __m256i *done = M;
        M = next;
        next = done;
    }
    _mm256_storeu_si256((__m256i *)lanes[0], a); _mm256_storeu_si256((__m256i *)lanes[1], b);
    _mm256_storeu_si256((__m256i *)lanes[2], c); _mm256_storeu_si256((__m256i *)lanes[3], d);
    md5_mb_rows_to_states(lanes[0], 8, h);
}

/* ---- AVX2: 16 lanes, two groups of 8 interleaved ----------------------- */

/* Each step is one chain of dependent operations (six in the AVX2 step), so
 * one group of 8 lanes runs at the latency of its operations and leaves the
 * core's vector units idle between them: on this project's Zen 5, md5_mb_x8
 * took 210 ns a block, longer than 16 lanes of AVX-512 (151).  Two
 * independent groups of 8, step by step side by side, fill the gaps
 * (isa-l_crypto's md5_mb x8x2): 228 ns a block for 16 lanes.  The second
 * group's registers are the first's names with a 2. */
#define V8X2_STEP(f, a, b, c, d, m, k, s)                 \
    {                                                     \
        const __m256i k8 = _mm256_set1_epi32((int)K[k]); \
        a = V8_ADD(a, V8_ADD(M[m], k8));                  \
        a##2 = V8_ADD(a##2, V8_ADD(M2[m], k8));           \
        MD5_MB_OPAQUE(a);                                 \
        MD5_MB_OPAQUE(a##2);                              \
        V8_##f(a, b, c, d)                                \
        V8_##f(a##2, b##2, c##2, d##2)                    \
        a = V8_ADD(V8_ROTL(a, s), b);                     \
        a##2 = V8_ADD(V8_ROTL(a##2, s), b##2);            \
    }

MD5_MB_AVX2_FN static void md5_mb_x8x2(uint32_t *const *h, const unsigned char *const *p, size_t n) {
    uint32_t lanes[4][16];
    md5_mb_states_to_rows(h, 16, lanes[0]);
    __m256i a = _mm256_loadu_si256((const __m256i *)lanes[0]), b = _mm256_loadu_si256((const __m256i *)lanes[1]);
    __m256i c = _mm256_loadu_si256((const __m256i *)lanes[2]), d = _mm256_loadu_si256((const __m256i *)lanes[3]);
    __m256i a2 = _mm256_loadu_si256((const __m256i *)(lanes[0] + 8));
    __m256i b2 = _mm256_loadu_si256((const __m256i *)(lanes[1] + 8));
    __m256i c2 = _mm256_loadu_si256((const __m256i *)(lanes[2] + 8));
    __m256i d2 = _mm256_loadu_si256((const __m256i *)(lanes[3] + 8));
    const __m256i ones = _mm256_set1_epi32(-1);
    const unsigned char *const *p2 = p + 8;
    __m256i words[2][2][16], *M = words[0][0], *M2 = words[0][1], *next = words[1][0], *next2 = words[1][1];
    if (n) {
        md5_mb_words8(p, 0, 0, M);
        md5_mb_words8(p, 0, 1, M);
        md5_mb_words8(p2, 0, 0, M2);
        md5_mb_words8(p2, 0, 1, M2);
    }
    for (size_t at = 0; n; n--, at += 64) {
        size_t ahead = n > 1 ? at + 64 : at; /* as in md5_mb_x8 */
        __m256i a0 = a, b0 = b, c0 = c, d0 = d, a20 = a2, b20 = b2, c20 = c2, d20 = d2;
        MD5_MB_K;
        md5_mb_words8(p, ahead, 0, next);
        MD5_ROUND1(V8X2_STEP)
        md5_mb_words8(p, ahead, 1, next);
        MD5_ROUND2(V8X2_STEP)
        md5_mb_words8(p2, ahead, 0, next2);
        MD5_ROUND3(V8X2_STEP)
        md5_mb_words8(p2, ahead, 1, next2);
        MD5_ROUND4(V8X2_STEP)
        a = V8_ADD(a, a0); b = V8_ADD(b, b0); c = V8_ADD(c, c0); d = V8_ADD(d, d0);
        a2 = V8_ADD(a2, a20); b2 = V8_ADD(b2, b20); c2 = V8_ADD(c2, c20); d2 = V8_ADD(d2, d20);
        __m256i *done = M, *done2 = M2;
        M = next, M2 = next2;
        next = done, next2 = done2;
    }
    _mm256_storeu_si256((__m256i *)lanes[0], a); _mm256_storeu_si256((__m256i *)lanes[1], b);
    _mm256_storeu_si256((__m256i *)lanes[2], c); _mm256_storeu_si256((__m256i *)lanes[3], d);
    _mm256_storeu_si256((__m256i *)(lanes[0] + 8), a2); _mm256_storeu_si256((__m256i *)(lanes[1] + 8), b2);
    _mm256_storeu_si256((__m256i *)(lanes[2] + 8), c2); _mm256_storeu_si256((__m256i *)(lanes[3] + 8), d2);
    md5_mb_rows_to_states(lanes[0], 16, h);
}

/* ---- AVX-512F: 16 lanes ------------------------------------------------- */

#define MD5_MB_AVX512_FN __attribute__((target("avx512f")))

#define V16_ADD _mm512_add_epi32
/* Each round function is one ternary-logic instruction: the immediate is its
 * truth table over (b, c, d).  F = b ? c : d, G = d ? b : c, H = b ^ c ^ d,
 * I = c ^ (b | ~d). */
#define V16_MD5_F(a, b, c, d) a = V16_ADD(a, _mm512_ternarylogic_epi32(b, c, d, 0xca));
#define V16_MD5_G(a, b, c, d) a = V16_ADD(a, _mm512_ternarylogic_epi32(b, c, d, 0xe4));
#define V16_MD5_H(a, b, c, d) a = V16_ADD(a, _mm512_ternarylogic_epi32(b, c, d, 0x96));
#define V16_MD5_I(a, b, c, d) a = V16_ADD(a, _mm512_ternarylogic_epi32(b, c, d, 0x39));
#define V16_STEP(f, a, b, c, d, m, k, s)                              \
    a = V16_ADD(a, V16_ADD(M[m], _mm512_set1_epi32((int)K[k])));  \
    MD5_MB_OPAQUE(a);                                                 \
    V16_##f(a, b, c, d)                                               \
    a = V16_ADD(_mm512_rol_epi32(a, s), b);

/* The 16 x 16 transposition of a block, in two kinds of pieces, so that the
 * kernel can spread them between its rounds.  First rows 4 q .. 4 q + 3 of
 * block `at` (lane i's block is row i): u[4 q + j] gets word 4 k + j of
 * those rows in its 128-bit lane k. */
MD5_MB_AVX512_FN static inline void md5_mb_rows16(const unsigned char *const *p, size_t at, int q, __m512i *u) {
    __m512i r[4], t[4];
    for (int i = 0; i < 4; i++) r[i] = _mm512_loadu_si512(p[4 * q + i] + at);
    t[0] = _mm512_unpacklo_epi32(r[0], r[1]);
    t[1] = _mm512_unpackhi_epi32(r[0], r[1]);
    t[2] = _mm512_unpacklo_epi32(r[2], r[3]);
    t[3] = _mm512_unpackhi_epi32(r[2], r[3]);
    u[4 * q] = _mm512_unpacklo_epi64(t[0], t[2]);
    u[4 * q + 1] = _mm512_unpackhi_epi64(t[0], t[2]);
    u[4 * q + 2] = _mm512_unpacklo_epi64(t[1], t[3]);
    u[4 * q + 3] = _mm512_unpackhi_epi64(t[1], t[3]);
}

/* Then words j, 4 + j, 8 + j, 12 + j of every lane: 128-bit lane k of the
 * four row groups, pairs of groups first, then one of each. */
MD5_MB_AVX512_FN static inline void md5_mb_columns16(const __m512i *u, int j, __m512i *out) {
    __m512i lo01 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44), hi01 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xee);
    __m512i lo23 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44);
    __m512i hi23 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xee);
    out[j] = _mm512_shuffle_i32x4(lo01, lo23, 0x88);
    out[4 + j] = _mm512_shuffle_i32x4(lo01, lo23, 0xdd);
    out[8 + j] = _mm512_shuffle_i32x4(hi01, hi23, 0x88);
    out[12 + j] = _mm512_shuffle_i32x4(hi01, hi23, 0xdd);
}

MD5_MB_AVX512_FN static void md5_mb_x16(uint32_t *const *h, const unsigned char *const *p, size_t n) {
    uint32_t lanes[4][16];
    md5_mb_states_to_rows(h, 16, lanes[0]);
    __m512i a = _mm512_loadu_si512(lanes[0]), b = _mm512_loadu_si512(lanes[1]);
    __m512i c = _mm512_loadu_si512(lanes[2]), d = _mm512_loadu_si512(lanes[3]);
    __m512i words[2][16], *M = words[0], *next = words[1], u[16];
    if (n) {
        for (int q = 0; q < 4; q++) md5_mb_rows16(p, 0, q, u);
        for (int j = 0; j < 4; j++) md5_mb_columns16(u, j, M);
    }
    for (size_t at = 0; n; n--, at += 64) {
        /* The steps are one chain of dependent operations; the next block's
         * loads and shuffles do not wait on it.  Spread between the rounds
         * they fill the chain's gaps (10 % faster than before or after the
         * steps, where they delay it).  The last block re-reads itself. */
        size_t ahead = n > 1 ? at + 64 : at;
        __m512i a0 = a, b0 = b, c0 = c, d0 = d;
        MD5_MB_K;
        md5_mb_rows16(p, ahead, 0, u);
        md5_mb_rows16(p, ahead, 1, u);
        MD5_ROUND1(V16_STEP)
        md5_mb_rows16(p, ahead, 2, u);
        md5_mb_rows16(p, ahead, 3, u);
        MD5_ROUND2(V16_STEP)
        md5_mb_columns16(u, 0, next);
        md5_mb_columns16(u, 1, next);
        MD5_ROUND3(V16_STEP)
        md5_mb_columns16(u, 2, next);
        md5_mb_columns16(u, 3, next);
        MD5_ROUND4(V16_STEP)
        a = V16_ADD(a, a0); b = V16_ADD(b, b0); c = V16_ADD(c, c0); d = V16_ADD(d, d0);
        __m512i *done = M;
        M = next;
        next = done;
    }
    _mm512_storeu_si512(lanes[0], a); _mm512_storeu_si512(lanes[1], b);
    _mm512_storeu_si512(lanes[2], c); _mm512_storeu_si512(lanes[3], d);
    md5_mb_rows_to_states(lanes[0], 16, h);
}

#endif /* MD5_MB_X86 */

/* ---- Scheduling streams onto lanes -------------------------------------- */

typedef struct {
    uint32_t *h;             /* the stream's state words */
    const unsigned char *p;  /* its next whole block */
    size_t blocks;           /* whole blocks left */
} md5_mb_job;

/* The kernel for `active` streams at this level, and its width.  A call of
 * n blocks costs per block about 80 ns (x1), 88 (x2), 101 (x8) and 120 (x16)
 * on this project's Zen 4, whatever the idle lanes: so AVX2 takes three
 * streams or more, the scalar pair two, and once the queue is empty AVX-512
 * hands eight or fewer to the cheaper AVX2 kernel.  On a Zen 5: 81 (x1),
 * 82 (x2), 210 (x8), 228 (x8x2) and 151 (x16). */
static md5_mb_kernel md5_mb_pick(int level, int active, int *width) {
#if MD5_MB_X86
    if (level == MD5_MB_AVX512 && active > 8) return *width = 16, md5_mb_x16;
    if (level == MD5_MB_AVX2 && active > 8) return *width = 16, md5_mb_x8x2;
    if (level >= MD5_MB_AVX2 && active > 2) return *width = 8, md5_mb_x8;
#else
    (void)level;
#endif
    if (active == 2) return *width = 2, md5_mb_x2;
    return *width = 1, md5_mb_x1;
}

static int md5_mb_longest_first(const void *x, const void *y) {
    size_t a = ((const md5_mb_job *)x)->blocks, b = ((const md5_mb_job *)y)->blocks;
    return a < b ? 1 : a > b ? -1 : 0;
}

/* Run every job's blocks.  A lane whose stream ends takes the next one from
 * the queue (isa-l's job manager), so the lanes stay full while it lasts;
 * longest first, so that the short streams fill in at the end instead of a
 * long one running alone.  Lanes left idle read a running lane's bytes into
 * a spare state, so every kernel call reads only memory it was given. */
static void md5_mb_run(md5_mb_job *jobs, size_t count, int level) {
    qsort(jobs, count, sizeof *jobs, md5_mb_longest_first);
    md5_mb_job *lane[MD5_MB_MAX_LANES];
    uint32_t spare[MD5_MB_MAX_LANES][4] = {{0}};
    uint32_t *h[MD5_MB_MAX_LANES];
    const unsigned char *p[MD5_MB_MAX_LANES];
    int capacity = md5_mb_width(level), active = 0;
    size_t next = 0;
    for (;;) {
        while (active < capacity && next < count) lane[active++] = &jobs[next++];
        if (active == 0) return;
        int width;
        md5_mb_kernel kernel = md5_mb_pick(level, active, &width);
        size_t n = lane[0]->blocks;
        for (int i = 0; i < width; i++) {
            h[i] = i < active ? lane[i]->h : spare[i];
            p[i] = i < active ? lane[i]->p : lane[0]->p;
            if (i < active && lane[i]->blocks < n) n = lane[i]->blocks;
        }
        kernel(h, p, n);
        int kept = 0;
        for (int i = 0; i < active; i++) {
            lane[i]->p += 64 * n;
            lane[i]->blocks -= n;
            if (lane[i]->blocks) lane[kept++] = lane[i];
        }
        active = kept;
    }
}

/* ctx[i] absorbs p[i][0, n[i]) exactly as md5_update would, for each i: a
 * pending partial block is completed scalar-wise, the whole blocks run in
 * lanes, the tail is kept.  The ctx must be distinct; jobs has room for count. */
static void md5_mb_update(md5_ctx *const *ctx, const unsigned char *const *p, const size_t *n, size_t count,
                          int level, md5_mb_job *jobs) {
    size_t queued = 0;
    for (size_t i = 0; i < count; i++) {
        md5_ctx *c = ctx[i];
        size_t taken = md5_fill(c, p[i], n[i]);
        c->length += n[i];
        if (taken == n[i]) continue;
        const unsigned char *rest = p[i] + taken;
        size_t left = n[i] - taken;
        /* The pending block is empty now and the blocks do not use it: keep the tail first. */
        memcpy(c->buf, rest + (left & ~(size_t)63), left & 63);
        if (left >= 64) {
            jobs[queued].h = c->h;
            jobs[queued].p = rest;
            jobs[queued].blocks = left / 64;
            queued++;
        }
    }
    md5_mb_run(jobs, queued, level);
}

#endif
