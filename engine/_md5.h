/* MD5 (RFC 1321) with a two-lane kernel.
 *
 * An upload needs two MD5s of the same bytes: the whole file's (running) and
 * each chunk's own (for Content-MD5).  MD5 is one long dependency chain, so a
 * single stream leaves most of a superscalar core idle; interleaving two
 * independent streams in one loop computes both for little more than the cost
 * of one.  The two lanes may be at different block alignments, which is why
 * the kernel takes a pointer per lane.
 *
 * The state is plain data (no pointers), so it can be copied and persisted.
 */
#ifndef SYNAPSE_ENGINE_MD5_H
#define SYNAPSE_ENGINE_MD5_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint32_t h[4];
    uint64_t length;        /* bytes absorbed so far */
    unsigned char buf[64];  /* pending partial block: length % 64 bytes */
} md5_ctx;

static const uint32_t md5_k[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

#define MD5_ROTL(x, c) (((x) << (c)) | ((x) >> (32 - (c))))
/* Each round function adds itself into a.  b is the value the previous step
 * just produced, so the terms are arranged to need it last: everything that
 * depends only on older values is computed while b is still in flight (the
 * latency tricks of OpenSSL's assembly).  G as two disjoint ANDs may be added
 * separately, the one without b first. */
#define MD5_F(a, b, c, d) a += (d) ^ ((b) & ((c) ^ (d)));
#define MD5_G(a, b, c, d) a += (c) & ~(d); a += (b) & (d);
#define MD5_H(a, b, c, d) a += (b) ^ ((c) ^ (d));
#define MD5_I(a, b, c, d) a += (c) ^ ((b) | ~(d));
#define MD5_STEP(f, a, b, c, d, m, k, s) \
    a += (m) + (k);                      \
    f(a, b, c, d)                        \
    a = MD5_ROTL(a, s) + b;

static inline uint32_t md5_load_le(const unsigned char *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
#else
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
#endif
}

/* The 64 steps of a block as an X-macro: S(f, a, b, c, d, message word, step, shift)
 * names which state register each step updates; one lane or two expand it. */
#define MD5_ALL_STEPS(S) MD5_ROUND1(S) MD5_ROUND2(S) MD5_ROUND3(S) MD5_ROUND4(S)
#define MD5_ROUND1(S) \
    S(MD5_F, a, b, c, d, 0, 0, 7) \
    S(MD5_F, d, a, b, c, 1, 1, 12) \
    S(MD5_F, c, d, a, b, 2, 2, 17) \
    S(MD5_F, b, c, d, a, 3, 3, 22) \
    S(MD5_F, a, b, c, d, 4, 4, 7) \
    S(MD5_F, d, a, b, c, 5, 5, 12) \
    S(MD5_F, c, d, a, b, 6, 6, 17) \
    S(MD5_F, b, c, d, a, 7, 7, 22) \
    S(MD5_F, a, b, c, d, 8, 8, 7) \
    S(MD5_F, d, a, b, c, 9, 9, 12) \
    S(MD5_F, c, d, a, b, 10, 10, 17) \
    S(MD5_F, b, c, d, a, 11, 11, 22) \
    S(MD5_F, a, b, c, d, 12, 12, 7) \
    S(MD5_F, d, a, b, c, 13, 13, 12) \
    S(MD5_F, c, d, a, b, 14, 14, 17) \
    S(MD5_F, b, c, d, a, 15, 15, 22)
#define MD5_ROUND2(S) \
    S(MD5_G, a, b, c, d, 1, 16, 5) \
    S(MD5_G, d, a, b, c, 6, 17, 9) \
    S(MD5_G, c, d, a, b, 11, 18, 14) \
    S(MD5_G, b, c, d, a, 0, 19, 20) \
    S(MD5_G, a, b, c, d, 5, 20, 5) \
    S(MD5_G, d, a, b, c, 10, 21, 9) \
    S(MD5_G, c, d, a, b, 15, 22, 14) \
    S(MD5_G, b, c, d, a, 4, 23, 20) \
    S(MD5_G, a, b, c, d, 9, 24, 5) \
    S(MD5_G, d, a, b, c, 14, 25, 9) \
    S(MD5_G, c, d, a, b, 3, 26, 14) \
    S(MD5_G, b, c, d, a, 8, 27, 20) \
    S(MD5_G, a, b, c, d, 13, 28, 5) \
    S(MD5_G, d, a, b, c, 2, 29, 9) \
    S(MD5_G, c, d, a, b, 7, 30, 14) \
    S(MD5_G, b, c, d, a, 12, 31, 20)
#define MD5_ROUND3(S) \
    S(MD5_H, a, b, c, d, 5, 32, 4) \
    S(MD5_H, d, a, b, c, 8, 33, 11) \
    S(MD5_H, c, d, a, b, 11, 34, 16) \
    S(MD5_H, b, c, d, a, 14, 35, 23) \
    S(MD5_H, a, b, c, d, 1, 36, 4) \
    S(MD5_H, d, a, b, c, 4, 37, 11) \
    S(MD5_H, c, d, a, b, 7, 38, 16) \
    S(MD5_H, b, c, d, a, 10, 39, 23) \
    S(MD5_H, a, b, c, d, 13, 40, 4) \
    S(MD5_H, d, a, b, c, 0, 41, 11) \
    S(MD5_H, c, d, a, b, 3, 42, 16) \
    S(MD5_H, b, c, d, a, 6, 43, 23) \
    S(MD5_H, a, b, c, d, 9, 44, 4) \
    S(MD5_H, d, a, b, c, 12, 45, 11) \
    S(MD5_H, c, d, a, b, 15, 46, 16) \
    S(MD5_H, b, c, d, a, 2, 47, 23)
#define MD5_ROUND4(S) \
    S(MD5_I, a, b, c, d, 0, 48, 6) \
    S(MD5_I, d, a, b, c, 7, 49, 10) \
    S(MD5_I, c, d, a, b, 14, 50, 15) \
    S(MD5_I, b, c, d, a, 5, 51, 21) \
    S(MD5_I, a, b, c, d, 12, 52, 6) \
    S(MD5_I, d, a, b, c, 3, 53, 10) \
    S(MD5_I, c, d, a, b, 10, 54, 15) \
    S(MD5_I, b, c, d, a, 1, 55, 21) \
    S(MD5_I, a, b, c, d, 8, 56, 6) \
    S(MD5_I, d, a, b, c, 15, 57, 10) \
    S(MD5_I, c, d, a, b, 6, 58, 15) \
    S(MD5_I, b, c, d, a, 13, 59, 21) \
    S(MD5_I, a, b, c, d, 4, 60, 6) \
    S(MD5_I, d, a, b, c, 11, 61, 10) \
    S(MD5_I, c, d, a, b, 2, 62, 15) \
    S(MD5_I, b, c, d, a, 9, 63, 21)

#define MD5_STEP1(f, a, b, c, d, m, k, s) MD5_STEP(f, a, b, c, d, M[m], md5_k[k], s)
/* Step k of lane 1 then step k of lane 2: adjacent in the code, so the CPU
 * runs one while the other waits on its dependency chain. */
#define MD5_STEP2(f, a, b, c, d, m, k, s) \
    MD5_STEP(f, a, b, c, d, M[m], md5_k[k], s) \
    MD5_STEP(f, a##2, b##2, c##2, d##2, N[m], md5_k[k], s)

static void md5_blocks(uint32_t *s, const unsigned char *p, size_t n) {
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3];
    for (; n; n--, p += 64) {
        uint32_t M[16];
        for (int i = 0; i < 16; i++) M[i] = md5_load_le(p + 4 * i);
        uint32_t a0 = a, b0 = b, c0 = c, d0 = d;
        MD5_ALL_STEPS(MD5_STEP1)
        a += a0; b += b0; c += c0; d += d0;
    }
    s[0] = a; s[1] = b; s[2] = c; s[3] = d;
}

/* Two independent lanes, n blocks each. */
static void md5_blocks_x2(uint32_t *s1, const unsigned char *p1,
                          uint32_t *s2, const unsigned char *p2, size_t n) {
    uint32_t a = s1[0], b = s1[1], c = s1[2], d = s1[3];
    uint32_t a2 = s2[0], b2 = s2[1], c2 = s2[2], d2 = s2[3];
    for (; n; n--, p1 += 64, p2 += 64) {
        uint32_t M[16], N[16];
        for (int i = 0; i < 16; i++) {
            M[i] = md5_load_le(p1 + 4 * i);
            N[i] = md5_load_le(p2 + 4 * i);
        }
        uint32_t a0 = a, b0 = b, c0 = c, d0 = d, a20 = a2, b20 = b2, c20 = c2, d20 = d2;
        MD5_ALL_STEPS(MD5_STEP2)
        a += a0; b += b0; c += c0; d += d0;
        a2 += a20; b2 += b20; c2 += c20; d2 += d20;
    }
    s1[0] = a; s1[1] = b; s1[2] = c; s1[3] = d;
    s2[0] = a2; s2[1] = b2; s2[2] = c2; s2[3] = d2;
}

static void md5_init(md5_ctx *c) {
    c->h[0] = 0x67452301; c->h[1] = 0xefcdab89; c->h[2] = 0x98badcfe; c->h[3] = 0x10325476;
    c->length = 0;
}

/* Complete a pending partial block from the front of p; returns bytes taken. */
static size_t md5_fill(md5_ctx *c, const unsigned char *p, size_t n) {
    size_t used = (size_t)(c->length & 63);
    if (!used) return 0;
    size_t take = 64 - used < n ? 64 - used : n;
    memcpy(c->buf + used, p, take);
    if (used + take == 64) md5_blocks(c->h, c->buf, 1);
    return take;
}

/* Whole blocks of p, then keep the remainder; the buffer must be empty. */
static void md5_absorb(md5_ctx *c, const unsigned char *p, size_t n) {
    md5_blocks(c->h, p, n / 64);
    memcpy(c->buf, p + (n & ~(size_t)63), n & 63);
}

static void md5_update(md5_ctx *c, const unsigned char *p, size_t n) {
    size_t taken = md5_fill(c, p, n);
    c->length += n;
    if (taken == n) return;
    md5_absorb(c, p + taken, n - taken);
}

/* The same bytes into two states, both lanes in one pass. */
static void md5_update_pair(md5_ctx *x, md5_ctx *y, const unsigned char *p, size_t n) {
    size_t tx = md5_fill(x, p, n), ty = md5_fill(y, p, n);
    x->length += n;
    y->length += n;
    if (tx == n || ty == n) {  /* one of them only topped up its buffer */
        if (tx != n) md5_absorb(x, p + tx, n - tx);
        if (ty != n) md5_absorb(y, p + ty, n - ty);
        return;
    }
    const unsigned char *px = p + tx, *py = p + ty;
    size_t nx = n - tx, ny = n - ty;
    size_t both = (nx < ny ? nx : ny) / 64;
    md5_blocks_x2(x->h, px, y->h, py, both);
    md5_absorb(x, px + both * 64, nx - both * 64);
    md5_absorb(y, py + both * 64, ny - both * 64);
}

static void md5_final(const md5_ctx *c, unsigned char out[16]) {
    md5_ctx t = *c;
    unsigned char pad[72] = {0x80};
    size_t used = (size_t)(t.length & 63);
    size_t padlen = (used < 56 ? 56 : 120) - used;
    uint64_t bits = t.length * 8;
    for (int i = 0; i < 8; i++) pad[padlen + i] = (unsigned char)(bits >> (8 * i));
    md5_update(&t, pad, padlen + 8);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (unsigned char)(t.h[i] >> (8 * j));
}

#endif
