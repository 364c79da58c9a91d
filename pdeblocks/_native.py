"""Fused C kernels (M₂ = ℝ² ⋊ S¹ morphology, convection and pooling; the learned flux; tridiagonal solves),
built on first use with the system C compiler.

1. The min-plus convolution (erosion; dilation by a sign flip):

    out[b, c, o, y, x] = min_{d, i, j}  f[b, c, (o + d − rθ) mod Or, y + i − rh, x + j − rw] + k[c, o, d, i, j]
    win[b, c, o, y, x] = the first (d, i, j) in row-major order attaining that minimum

Each (b, c) block is copied once into a buffer padded with +∞ in (y, x) (those positions never win;
the centre tap is always inside); dilation max_h f(h) − k = −min_h (−f(h) + k) flips the sign in that
copy and in the output. An output plane is evaluated in the padded row stride, so an offset is a
constant shift of a flat index; blocks of 4 native-width vectors run through all offsets with the
running minimum and its winner in registers. The backward routes ∂L/∂out[b, c, o, y, x] to the
winning input position and kernel tap; kernel gradients accumulate in float64.

2. The left-invariant shift of convection: per (c, o), linear interpolation in θ between two
planes, then a bilinear shift by (sx, sy) pixels with zeros outside; its backward gives ∂L/∂f and
the sums of g·∂out/∂(θ fraction, sx, sy) (float64).

3. 2×2 max pooling with stride 2 of [P, H, W] planes, with torch's max_pool2d's winner (the first
maximum in row-major window order; NaN wins) stored as one byte; the backward writes g to the winner. The same
over the round 12-pixel window (the 4×4 window around each 2×2 block without its corners), whose backward adds
g at the winner (the windows overlap).

4. The learned flux Φ(s) = g(|s̄|/h)·s̄ of :class:`pdeblocks.layers.flux.LearnedFlux` in one pass
(bit-identical to its torch expression, which takes about 13 passes over s); its backward gives ∂L/∂s and
float64 sums for the knot values.

5. Symmetric tridiagonal solves for :mod:`pdeblocks.ops.tridiagonal` by the Thomas algorithm, one row per vector
lane; the matrix given, or built from the implicit diffusion step's edge weights and τ.

6. The edge weights of the blind denoiser's two exact tails (:mod:`pdeblocks.models.blind`) in one pass, float64:
(1 + s²)^(−q) by vector log and exp (fdlibm's, within 1 ulp each), and the learned diffusivity g(|s|) bit for bit;
and the tails' gate features (pooled lag differences) in one pass per lag, sums in float64.

7. The training contract's estimate for wide weights (:mod:`pdeblocks.layers.certificate`), float32: z = x Wᵀ for
x [2, K] and the rows' sums of squares of W [H, K] in one pass over W (the weight is read once per step, not twice).
And its power steps on the symbol A(ω) = Σ_j W_j e^{−i⟨ω, j⟩} for narrow weights, one frequency per vector lane: A is
formed once per block of frequencies and read twice per step (no torch op per step, whose dispatch costs more than
the arithmetic at 64 channels).

8. The rational fluxes of :class:`pdeblocks.layers.flux.PeronaMalik` (g = 1/(1 + s²/λ²)) and
:class:`~pdeblocks.layers.flux.Charbonnier` (g = 1/√(1 + s²/λ²)), Φ(s) = g·s, in one pass forward and one backward
(torch's expressions take about 6 and 11 passes over s): Perona–Malik's values bit for bit.

9. The posterior mean of a piecewise-constant signal under a product-partition prior (:mod:`pdeblocks.ops.segmentation`):
a forward and a backward sum over the segments of at most W samples that end and start at each sample, one vector exp
per segment and pass, prefix sums for the segments' means and squared deviations.

10. The same posterior mean with pieces of degree ≤ 2 (``segment_posterior_mean(degree=…)``): scalar, one row at a
time, the moments accumulated per end sample in each piece's own basis (no prefix-sum cancellation), the inverse Gram
matrices tables over the length, the exps by vector; 6–9× item 9's time for D = 2.

The shared library is compiled from the source below (``cc -O3 -shared -fPIC``, plus ``-march=native``
when the compiler accepts it) into ``$PDEBLOCKS_CACHE`` (default ``~/.cache/pdeblocks``), keyed by a
hash of source, flags, compiler and machine, and loaded with ``ctypes`` (calls release the GIL, so
row or plane ranges run in parallel threads: :func:`run_ranges`). If no compiler works, or ``PDEBLOCKS_NATIVE=0``,
:func:`native_library` returns None and callers use torch ops, which give the same values (and,
for the min-plus convolution, the same winners).

One module of about 1,630 lines because 1,430 of them are the C source (:data:`C_SOURCE`), which is hashed,
compiled and loaded as one unit; the Python that caches, builds and loads it is about 100 lines.
"""
import ctypes
import hashlib
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

__all__ = ['native_library', 'native_available', 'run_ranges', 'split_ranges', 'C_SOURCE']


C_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>

/* native-width vectors (GCC / clang vector extensions): 64 bytes with AVX-512, 32 with AVX, else 16 */
#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
typedef float vf32 __attribute__((vector_size(VBYTES)));
typedef int32_t vi32 __attribute__((vector_size(VBYTES)));
typedef double vf64 __attribute__((vector_size(VBYTES)));
typedef int64_t vi64 __attribute__((vector_size(VBYTES)));
#define NV 4 /* vectors per block */

/* flat positions [m0, m0 + NVV * LANES) of one plane through the offsets j = 64 * s + e whose bit e is
   set in bits[s] (s < ns): src[j] points at offset j's source, kk[j] is its kernel value. The running minimum and the
   winner of the block stay in registers (strict <, offsets in increasing j: the first offset attaining
   the minimum wins). */
#define MINPLUS_BLOCK(T, VT, IT, MT, FN, NVV, LANES)                                                     \
static void FN(const T* const* src, const T* kk, const uint64_t* bits, int64_t ns, int64_t m0, T* best, \
               IT* arg) {                                                                               \
    VT bv[NVV];                                                                                         \
    MT av[NVV];                                                                                         \
    for (int q = 0; q < NVV; ++q) { bv[q] = (VT){0} + (T)INFINITY; av[q] = (MT){0}; }                   \
    for (int64_t sg = 0; sg < ns; ++sg) {                                                               \
        for (uint64_t rest = bits[sg]; rest; rest &= rest - 1) {                                        \
            const int64_t j = 64 * sg + __builtin_ctzll(rest);                                          \
            const T* s = src[j] + m0;                                                                   \
            const VT kv = (VT){0} + kk[j];                                                              \
            const MT jv = (MT){0} + (IT)j;                                                              \
            for (int q = 0; q < NVV; ++q) {                                                             \
                VT v;                                                                                   \
                memcpy(&v, s + q * LANES, sizeof v);                                                    \
                v += kv;                                                                                \
                const MT m = v < bv[q]; /* lanes: -1 where strictly better */                           \
                bv[q] = (VT)(((MT)v & m) | ((MT)bv[q] & ~m));                                           \
                av[q] = (jv & m) | (av[q] & ~m);                                                        \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    memcpy(best + m0, bv, sizeof bv);                                                                   \
    memcpy(arg + m0, av, sizeof av);                                                                    \
}

/* Offsets that cannot win. For a block of output positions (rows y0..y1 of output plane o) let
   M = max of f over those rows of plane o and m[d] = min of f over the rows that the offsets of θ step d
   read in their source plane. An offset j of step d with m[d] + k[j] > M + k[centre] has a candidate
   f(h) + k[j] >= m[d] + k[j] strictly larger than the centre's f(g) + k[centre] <= M + k[centre]
   (rounding is monotone), so it never attains the minimum: leaving it out changes neither the minimum
   nor the first offset attaining it. Per (c, o, d) the kh*kw kernel values are sorted once per call;
   the kept offsets of a step are then a prefix of that order (a bit mask), visited in index order. */
#define DEFINE_MINPLUS(T, VT, IT, MT, NAME)                                                              \
enum { NAME##_LANES = VBYTES / sizeof(T), NAME##_BLOCK = NV * (VBYTES / sizeof(T)) };                           \
MINPLUS_BLOCK(T, VT, IT, MT, NAME##_block, NV, NAME##_LANES)                                            \
MINPLUS_BLOCK(T, VT, IT, MT, NAME##_block1, 1, NAME##_LANES)                                            \
/* sorted kernel values sv and prefix masks pm (pm[r]: the r smallest) of every (c, o, d) slice; ok[c, o]: \
   no NaN in the kernel of (c, o) */                                                                    \
static void NAME##_tables(const T* k, int64_t C, int64_t Or, int64_t kt, int64_t K, T* sv, uint64_t* pm, \
                          char* ok) {                                                                   \
    int32_t order[64];                                                                                  \
    for (int64_t co = 0; co < C * Or; ++co) {                                                           \
        ok[co] = 1;                                                                                     \
        for (int64_t d = 0; d < kt; ++d) {                                                              \
            const T* kd = k + (co * kt + d) * K;                                                        \
            T* s = sv + (co * kt + d) * K;                                                              \
            uint64_t* m = pm + (co * kt + d) * (K + 1);                                                 \
            for (int64_t e = 0; e < K; ++e) {                                                           \
                int64_t r = e;                                                                          \
                ok[co] &= kd[e] == kd[e];                                                               \
                while (r > 0 && kd[order[r - 1]] > kd[e]) { order[r] = order[r - 1]; --r; }             \
                order[r] = (int32_t)e;                                                                  \
            }                                                                                           \
            m[0] = 0;                                                                                   \
            for (int64_t r = 0; r < K; ++r) { s[r] = kd[order[r]]; m[r + 1] = m[r] | (1ull << order[r]); } \
        }                                                                                               \
    }                                                                                                   \
}                                                                                                       \
/* br = sg * xr (W values); *mn, *mx: their min and max (NaN ignored); returns 1 if one is NaN */          \
static int NAME##_row(const T* xr, T* br, int64_t W, T sg, T* mn, T* mx) {                              \
    const int64_t L = NAME##_LANES;                                                                     \
    const VT vs = (VT){0} + sg;                                                                         \
    VT vmn = (VT){0} + (T)INFINITY, vmx = (VT){0} - (T)INFINITY;                                        \
    MT vnan = (MT){0};                                                                                  \
    int64_t xx = 0;                                                                                     \
    for (; xx + L <= W; xx += L) {                                                                      \
        VT v;                                                                                           \
        memcpy(&v, xr + xx, sizeof v);                                                                  \
        v *= vs;                                                                                        \
        memcpy(br + xx, &v, sizeof v);                                                                  \
        const MT lo = v < vmn, hi = v > vmx;                                                            \
        vmn = (VT)(((MT)v & lo) | ((MT)vmn & ~lo));                                                     \
        vmx = (VT)(((MT)v & hi) | ((MT)vmx & ~hi));                                                     \
        vnan |= v != v;                                                                                 \
    }                                                                                                   \
    T a = (T)INFINITY, b = -(T)INFINITY;                                                                \
    int nan = 0;                                                                                        \
    for (int64_t l = 0; l < L; ++l) { a = vmn[l] < a ? vmn[l] : a; b = vmx[l] > b ? vmx[l] : b; nan |= vnan[l] != 0; } \
    for (; xx < W; ++xx) {                                                                              \
        const T v = sg * xr[xx];                                                                        \
        br[xx] = v;                                                                                     \
        a = v < a ? v : a;                                                                              \
        b = v > b ? v : b;                                                                              \
        nan |= v != v;                                                                                  \
    }                                                                                                   \
    *mn = a;                                                                                            \
    *mx = b;                                                                                            \
    return nan;                                                                                         \
}                                                                                                       \
/* (b, c) blocks q in [q0, q1) of x: [B, C, Or, H, W]; k: [C, Or, kt, kh, kw]; out, win: [B, C, Or, H, W].  \
   sign = +1: out = min_h x(h) + k (erosion); sign = -1: out = -min_h (-x(h) + k) = max_h x(h) - k      \
   (dilation). Each block is copied once, times sign, into a buffer padded with +inf: rh rows above and \
   below, rw columns before every row, which are also the columns after the previous row (row stride    \
   Wp = W + rw: an offset l in [-rw, rw] from a column in [0, W) lands in the row or in +inf padding).  \
   An output plane is computed in that row stride (columns x >= W discarded), so the offset (i, l) is   \
   the constant shift i*Wp + l of a flat index. The n needed flat positions are rounded up to whole     \
   vectors (no scalar tail); the buffer has L + rw values of +inf slack after its last plane (the last  \
   row's offsets reach rw past a plane), so the extra lanes read inside it, and their results are       \
   discarded. Blocks of positions visit only the   \
   offsets that can win (above) if skip != 0, unless the (b, c) block holds a NaN or kh*kw > 64. */     \
int NAME##_forward(const T* x, const T* k, T* out, int16_t* win, int64_t C, int64_t Or, int64_t H,      \
                   int64_t W, int64_t kt, int64_t kh, int64_t kw, int64_t sign, int64_t skip, int64_t q0, \
                   int64_t q1) {                                                                        \
    const int64_t K = kh * kw, J = kt * K, rt = kt / 2, rh = kh / 2, rw = kw / 2;                       \
    const int64_t ec = rh * kw + rw, jc = rt * K + ec; /* the centre offset */                          \
    const int64_t Hp = H + kh - 1, Wp = W + rw, HW = H * W, P = Hp * Wp;                                \
    const int64_t n = (H - 1) * Wp + W; /* last needed flat position + 1 */                             \
    const int64_t L = NAME##_LANES, np = (n + L - 1) / L * L; /* whole vectors */                       \
    const int64_t ns = (J + 63) / 64; /* 64-offset segments of the bit masks */                         \
    const T sg = sign < 0 ? (T)-1 : (T)1;                                                               \
    const int64_t can_prune = skip && K <= 64;                                                          \
    const int64_t nt = can_prune ? C * Or * kt : 0;                                                     \
    T* xb = (T*)malloc(sizeof(T) * (size_t)(Or * P + L + rw));                                          \
    T* best = (T*)malloc(sizeof(T) * (size_t)(np > 0 ? np : 1));                                        \
    IT* arg = (IT*)malloc(sizeof(IT) * (size_t)(np > 0 ? np : 1));                                      \
    const T** src = (const T**)malloc(sizeof(T*) * (size_t)J);                                          \
    uint64_t* all = (uint64_t*)malloc(sizeof(uint64_t) * (size_t)ns);                                   \
    uint64_t* bits = (uint64_t*)malloc(sizeof(uint64_t) * (size_t)ns);                                  \
    T* rmin = (T*)malloc(sizeof(T) * (size_t)(Or * Hp));                                                \
    T* rmax = (T*)malloc(sizeof(T) * (size_t)(Or * H));                                                 \
    int64_t* plane = (int64_t*)malloc(sizeof(int64_t) * (size_t)kt);                                    \
    T* sv = (T*)malloc(sizeof(T) * (size_t)(nt * K + 1));                                               \
    uint64_t* pm = (uint64_t*)malloc(sizeof(uint64_t) * (size_t)(nt * (K + 1) + 1));                    \
    char* ok = (char*)malloc((size_t)(C * Or));                                                         \
    if (!xb || !best || !arg || !src || !all || !bits || !rmin || !rmax || !plane || !sv || !pm || !ok) { \
        free(xb); free(best); free(arg); free(src); free(all); free(bits); free(rmin); free(rmax);       \
        free(plane); free(sv); free(pm); free(ok); return 1;                                            \
    }                                                                                                   \
    if (can_prune) NAME##_tables(k, C, Or, kt, K, sv, pm, ok);                                          \
    for (int64_t g = 0; g < ns; ++g) all[g] = J - 64 * g >= 64 ? ~0ull : (1ull << (J - 64 * g)) - 1;    \
    for (int64_t m = 0; m < Or * P + L + rw; ++m) xb[m] = (T)INFINITY;                                  \
    for (int64_t t = 0; t < Or; ++t)                                                                    \
        for (int64_t y = 0; y < rh; ++y) rmin[t * Hp + y] = rmin[t * Hp + Hp - 1 - y] = (T)INFINITY;    \
    for (int64_t q = q0; q < q1; ++q) {                                                                 \
        const int64_t c = q % C;                                                                        \
        int nan = 0;                                                                                    \
        for (int64_t t = 0; t < Or; ++t)                                                                \
            for (int64_t y = 0; y < H; ++y)                                                             \
                nan |= NAME##_row(x + (q * Or + t) * HW + y * W, xb + t * P + (y + rh) * Wp + rw, W, sg, \
                                  rmin + t * Hp + y + rh, rmax + t * H + y);                            \
        for (int64_t o = 0; o < Or; ++o) {                                                              \
            const T* kk = k + (c * Or + o) * J;                                                         \
            const int64_t prune = can_prune && !nan && ok[c * Or + o];                                  \
            int64_t j = 0;                                                                              \
            for (int64_t d = 0; d < kt; ++d) {                                                          \
                plane[d] = ((o + d - rt) % Or + Or) % Or;                                               \
                const T* pl = xb + plane[d] * P;                                                        \
                for (int64_t i = 0; i < kh; ++i)                                                        \
                    for (int64_t l = 0; l < kw; ++l) src[j++] = pl + i * Wp + l;                        \
            }                                                                                           \
            for (int64_t m0 = 0; m0 < np;) {                                                            \
                /* a block of NV vectors, or all the remaining vectors (one offset selection for them) */ \
                const int64_t len = m0 + NAME##_BLOCK <= np ? NAME##_BLOCK : np - m0;                   \
                const uint64_t* use = all;                                                              \
                if (prune) {                                                                            \
                    const int64_t y0 = m0 / Wp, y1e = (m0 + len - 1) / Wp, y1 = y1e < H ? y1e : H - 1;   \
                    T M = -(T)INFINITY;                                                                 \
                    for (int64_t y = y0; y <= y1; ++y) M = rmax[o * H + y] > M ? rmax[o * H + y] : M;   \
                    const T thr = M + kk[jc];                                                           \
                    for (int64_t g = 0; g < ns; ++g) bits[g] = 0;                                       \
                    for (int64_t d = 0; d < kt; ++d) {                                                  \
                        const T* r = rmin + plane[d] * Hp;                                              \
                        T mn = (T)INFINITY;                                                             \
                        for (int64_t y = y0; y <= y1 + kh - 1; ++y) mn = r[y] < mn ? r[y] : mn;         \
                        const T* s = sv + ((c * Or + o) * kt + d) * K;                                  \
                        int64_t rank = 0; /* the kept offsets are a prefix of the sorted order: count them */ \
                        for (int64_t e = 0; e < K; ++e) rank += !(mn + s[e] > thr);                     \
                        uint64_t b = pm[((c * Or + o) * kt + d) * (K + 1) + rank];                      \
                        if (d == rt) b |= 1ull << ec;                                                   \
                        const int64_t off = d * K, sh = off & 63;                                       \
                        bits[off >> 6] |= b << sh;                                                      \
                        if (sh + K > 64) bits[(off >> 6) + 1] |= b >> (64 - sh);                        \
                    }                                                                                   \
                    use = bits;                                                                         \
                }                                                                                       \
                if (len == NAME##_BLOCK) NAME##_block(src, kk, use, ns, m0, best, arg);                 \
                else for (int64_t m1 = m0; m1 < m0 + len; m1 += L) NAME##_block1(src, kk, use, ns, m1, best, arg); \
                m0 += len;                                                                              \
            }                                                                                           \
            const int64_t p = q * Or + o;                                                               \
            T* op = out + p * HW;                                                                       \
            for (int64_t y = 0; y < H; ++y)                                                             \
                for (int64_t xx = 0; xx < W; ++xx) op[y * W + xx] = sg * best[y * Wp + xx];             \
            if (win) {                                                                                  \
                int16_t* w = win + p * HW;                                                              \
                for (int64_t y = 0; y < H; ++y)                                                         \
                    for (int64_t xx = 0; xx < W; ++xx) w[y * W + xx] = (int16_t)arg[y * Wp + xx];       \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    free(xb); free(best); free(arg); free(src); free(all); free(bits); free(rmin); free(rmax);           \
    free(plane); free(sv); free(pm); free(ok);                                                          \
    return 0;                                                                                           \
}                                                                                                       \
/* channels c in [c0, c1), all b and o: each channel owns its slices of gx and gk (no write races).      \
   Offset j of output orientation o reads the input at the flat shift delta[o][j] from the output's      \
   position in the same (b, c) block; gk accumulates sign * g in float64 (sign -1 for dilation). */     \
int NAME##_backward(const T* g, const int16_t* win, T* gx, double* gk, int64_t B, int64_t C,            \
                    int64_t Or, int64_t H, int64_t W, int64_t kt, int64_t kh, int64_t kw,               \
                    int64_t sign, int64_t c0, int64_t c1) {                                             \
    const int64_t HW = H * W, J = kt * kh * kw, rt = kt / 2, rh = kh / 2, rw = kw / 2;                  \
    int64_t* delta = (int64_t*)malloc(sizeof(int64_t) * (size_t)(Or * J));                              \
    double* acc = (double*)malloc(sizeof(double) * (size_t)(4 * J));                                    \
    if (!delta || !acc) { free(delta); free(acc); return 1; }                                           \
    for (int64_t o = 0; o < Or; ++o)                                                                    \
        for (int64_t j = 0; j < J; ++j) {                                                               \
            const int64_t d = j / (kh * kw), i = (j / kw) % kh, l = j % kw;                             \
            const int64_t q = ((o + d - rt) % Or + Or) % Or;                                            \
            delta[o * J + j] = (q - o) * HW + (i - rh) * W + (l - rw);                                  \
        }                                                                                               \
    /* gk: four partial sums per tap (positions n mod 4) so that runs of one winner do not serialise     \
       on a single accumulator */                                                                       \
    if (gk) {                                                                                           \
        const double sg = sign < 0 ? -1.0 : 1.0;                                                        \
        for (int64_t c = c0; c < c1; ++c)                                                               \
            for (int64_t o = 0; o < Or; ++o) {                                                          \
                for (int64_t j = 0; j < 4 * J; ++j) acc[j] = 0;                                         \
                for (int64_t b = 0; b < B; ++b) {                                                       \
                    const int64_t p = (b * C + c) * Or + o;                                             \
                    const T* gp = g + p * HW;                                                           \
                    const int16_t* wp = win + p * HW;                                                   \
                    int64_t n = 0;                                                                      \
                    for (; n + 4 <= HW; n += 4) {                                                       \
                        acc[wp[n]] += (double)gp[n];                                                    \
                        acc[J + wp[n + 1]] += (double)gp[n + 1];                                        \
                        acc[2 * J + wp[n + 2]] += (double)gp[n + 2];                                    \
                        acc[3 * J + wp[n + 3]] += (double)gp[n + 3];                                    \
                    }                                                                                   \
                    for (; n < HW; ++n) acc[wp[n]] += (double)gp[n];                                    \
                }                                                                                       \
                double* gkp = gk + (c * Or + o) * J;                                                    \
                for (int64_t j = 0; j < J; ++j) gkp[j] += sg * ((acc[j] + acc[J + j]) + (acc[2 * J + j] + acc[3 * J + j])); \
            }                                                                                           \
    }                                                                                                   \
    /* gx: per (b, c) block, zeroed here (the block is in cache for the scatter that follows) */          \
    if (gx) {                                                                                           \
        const int64_t N = Or * HW;                                                                      \
        for (int64_t b = 0; b < B; ++b)                                                                 \
            for (int64_t c = c0; c < c1; ++c) {                                                         \
                const int64_t blk = (b * C + c) * Or;                                                   \
                T* gxb = gx + blk * HW;                                                                 \
                memset(gxb, 0, sizeof(T) * (size_t)N);                                                  \
                for (int64_t o = 0; o < Or; ++o) {                                                      \
                    const T* gp = g + (blk + o) * HW;                                                   \
                    const int16_t* wp = win + (blk + o) * HW;                                           \
                    const int64_t* dp = delta + o * J;                                                  \
                    T* gxp = gxb + o * HW;                                                              \
                    for (int64_t n = 0; n < HW; ++n) gxp[n + dp[wp[n]]] += gp[n];                       \
                }                                                                                       \
            }                                                                                           \
    }                                                                                                   \
    free(delta); free(acc);                                                                             \
    return 0;                                                                                           \
}


/* Left-invariant shift on M2 (convection), per (b, c) block q in [q0, q1) of x: [B, C, Or, H, W]:
   out[o](y, x) = bilinear sample, zero outside, at (x + sx[c, o], y + sy[c, o]) of
   G_o = (1 - at[c]) x[(o + nt[c]) mod Or] + at[c] x[(o + nt[c] + 1) mod Or].
   G_o is built in a buffer with a one-pixel zero border, so both taps of a row/column are inside it
   whenever either is inside the image; outputs whose taps are both outside are 0. */
#define DEFINE_SHIFT(T, NAME)                                                                            \
typedef struct { int64_t ny, nx, lo, hi; T ay, ax; } NAME##_geom;                                       \
static NAME##_geom NAME##_geometry(T sx, T sy, int64_t H, int64_t W) {                                  \
    NAME##_geom g;                                                                                      \
    const T fy = floor(sy), fx = floor(sx);                                                             \
    /* shifts beyond the image give all-zero output: clamp (keeps the integers small) */                 \
    g.ny = fy < -(T)(H + 2) ? -(H + 2) : (fy > (T)(H + 2) ? H + 2 : (int64_t)fy);                         \
    g.nx = fx < -(T)(W + 2) ? -(W + 2) : (fx > (T)(W + 2) ? W + 2 : (int64_t)fx);                         \
    g.ay = sy - fy; g.ax = sx - fx;                                                                     \
    g.lo = -g.nx - 1 > 0 ? -g.nx - 1 : 0;                                                               \
    g.hi = W - g.nx < W ? W - g.nx : W;                                                                 \
    if (g.hi < g.lo) g.hi = g.lo;                                                                       \
    return g;                                                                                           \
}                                                                                                       \
static void NAME##_blend(const T* f0, const T* f1, T at, T* gp, int64_t H, int64_t W) {                 \
    const int64_t Wp = W + 2;                                                                           \
    for (int64_t y = 0; y < H; ++y) {                                                                   \
        T* r = gp + (y + 1) * Wp + 1;                                                                   \
        const T* a = f0 + y * W;                                                                        \
        const T* b = f1 + y * W;                                                                        \
        for (int64_t x = 0; x < W; ++x) r[x] = a[x] + at * (b[x] - a[x]);                               \
    }                                                                                                   \
}                                                                                                       \
int NAME##_forward(const T* x, T* out, const int64_t* nt, const T* at, const T* sx, const T* sy,        \
                   int64_t C, int64_t Or, int64_t H, int64_t W, int64_t q0, int64_t q1) {               \
    const int64_t HW = H * W, Wp = W + 2, Hp = H + 2;                                                   \
    T* gp = (T*)calloc((size_t)(Hp * Wp), sizeof(T));                                                   \
    if (!gp) return 1;                                                                                  \
    for (int64_t q = q0; q < q1; ++q) {                                                                 \
        const int64_t c = q % C;                                                                        \
        for (int64_t o = 0; o < Or; ++o) {                                                              \
            const int64_t p0 = ((o + nt[c]) % Or + Or) % Or, p1 = (p0 + 1) % Or;                        \
            NAME##_blend(x + (q * Or + p0) * HW, x + (q * Or + p1) * HW, at[c], gp, H, W);               \
            const NAME##_geom g = NAME##_geometry(sx[c * Or + o], sy[c * Or + o], H, W);                 \
            const T wy0 = 1 - g.ay, wy1 = g.ay, wx0 = 1 - g.ax, wx1 = g.ax;                             \
            T* op = out + (q * Or + o) * HW;                                                            \
            for (int64_t y = 0; y < H; ++y) {                                                           \
                T* orow = op + y * W;                                                                   \
                const int64_t ys = y + g.ny + 1;                                                        \
                for (int64_t xx = 0; xx < W; ++xx) orow[xx] = 0;                                        \
                if (ys + 1 < 0 || ys > Hp - 1) continue;                                                \
                const T* r0 = ys >= 0 && ys < Hp ? gp + ys * Wp + g.nx + 1 : 0;                          \
                const T* r1 = ys + 1 < Hp ? gp + (ys + 1) * Wp + g.nx + 1 : 0;                           \
                if (r0 && r1)                                                                           \
                    for (int64_t xx = g.lo; xx < g.hi; ++xx)                                            \
                        orow[xx] = wy0 * (wx0 * r0[xx] + wx1 * r0[xx + 1]) + wy1 * (wx0 * r1[xx] + wx1 * r1[xx + 1]); \
                else if (r0)                                                                            \
                    for (int64_t xx = g.lo; xx < g.hi; ++xx) orow[xx] = wy0 * (wx0 * r0[xx] + wx1 * r0[xx + 1]); \
                else                                                                                    \
                    for (int64_t xx = g.lo; xx < g.hi; ++xx) orow[xx] = wy1 * (wx0 * r1[xx] + wx1 * r1[xx + 1]); \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    free(gp);                                                                                           \
    return 0;                                                                                           \
}                                                                                                       \
/* gradients for blocks [q0, q1): gx (owned by the block, zeroed here), and partial sums over these blocks of       \
   dat[c] = Σ g ∂out/∂at, dsx[c, o] = Σ g ∂out/∂sx, dsy[c, o] = Σ g ∂out/∂sy (float64, caller sums) */  \
int NAME##_backward(const T* x, const T* g, T* gx, const int64_t* nt, const T* at, const T* sx,         \
                    const T* sy, double* dat, double* dsx, double* dsy, int64_t C, int64_t Or,          \
                    int64_t H, int64_t W, int64_t q0, int64_t q1) {                                     \
    const int64_t HW = H * W, Wp = W + 2, Hp = H + 2;                                                   \
    T* gp = (T*)calloc((size_t)(Hp * Wp), sizeof(T));                                                   \
    T* gg = (T*)calloc((size_t)(Hp * Wp), sizeof(T));                                                   \
    T* cx = (T*)malloc(sizeof(T) * (size_t)(3 * W)); /* per-column partial sums (vectorisable) */       \
    if (!gp || !gg || !cx) { free(gp); free(gg); free(cx); return 1; }                                  \
    T* cy = cx + W;                                                                                     \
    T* ca = cy + W;                                                                                     \
    for (int64_t q = q0; q < q1; ++q) {                                                                 \
        const int64_t c = q % C;                                                                        \
        memset(gx + q * Or * HW, 0, sizeof(T) * (size_t)(Or * HW)); /* the block's gx, accumulated below */ \
        for (int64_t o = 0; o < Or; ++o) {                                                              \
            const int64_t p0 = ((o + nt[c]) % Or + Or) % Or, p1 = (p0 + 1) % Or;                        \
            const T* f0 = x + (q * Or + p0) * HW;                                                       \
            const T* f1 = x + (q * Or + p1) * HW;                                                       \
            NAME##_blend(f0, f1, at[c], gp, H, W);                                                      \
            memset(gg, 0, sizeof(T) * (size_t)(Hp * Wp));                                               \
            for (int64_t m = 0; m < 3 * W; ++m) cx[m] = 0;                                              \
            const NAME##_geom ge = NAME##_geometry(sx[c * Or + o], sy[c * Or + o], H, W);                \
            const T wy0 = 1 - ge.ay, wy1 = ge.ay, wx0 = 1 - ge.ax, wx1 = ge.ax;                         \
            const T* gop = g + (q * Or + o) * HW;                                                       \
            for (int64_t y = 0; y < H; ++y) {                                                           \
                const int64_t ys = y + ge.ny + 1;                                                       \
                const T* grow = gop + y * W;                                                            \
                const int in0 = ys >= 0 && ys < Hp, in1 = ys + 1 >= 0 && ys + 1 < Hp;                   \
                if (!in0 && !in1) continue;                                                             \
                /* a row outside the padded buffer reads as zeros: point it at the zero row 0 */         \
                const T* r0 = gp + (in0 ? ys : 0) * Wp + ge.nx + 1;                                     \
                const T* r1 = gp + (in1 ? ys + 1 : 0) * Wp + ge.nx + 1;                                 \
                const T v0 = in0 ? wy0 : 0, v1 = in1 ? wy1 : 0;                                         \
                for (int64_t xx = ge.lo; xx < ge.hi; ++xx) {                                            \
                    const T gv = grow[xx];                                                              \
                    const T a0 = r0[xx], b0 = r0[xx + 1], a1 = r1[xx], b1 = r1[xx + 1];                 \
                    cx[xx] += gv * (v0 * (b0 - a0) + v1 * (b1 - a1));                                   \
                    cy[xx] += gv * ((wx0 * a1 + wx1 * b1) * (T)in1 - (wx0 * a0 + wx1 * b0) * (T)in0);   \
                }                                                                                       \
                if (in0) {                                                                              \
                    T* s0 = gg + ys * Wp + ge.nx + 1;                                                   \
                    for (int64_t xx = ge.lo; xx < ge.hi; ++xx) s0[xx] += wy0 * wx0 * grow[xx];          \
                    for (int64_t xx = ge.lo; xx < ge.hi; ++xx) s0[xx + 1] += wy0 * wx1 * grow[xx];      \
                }                                                                                       \
                if (in1) {                                                                              \
                    T* s1 = gg + (ys + 1) * Wp + ge.nx + 1;                                             \
                    for (int64_t xx = ge.lo; xx < ge.hi; ++xx) s1[xx] += wy1 * wx0 * grow[xx];          \
                    for (int64_t xx = ge.lo; xx < ge.hi; ++xx) s1[xx + 1] += wy1 * wx1 * grow[xx];      \
                }                                                                                       \
            }                                                                                           \
            /* G = f0 + at (f1 - f0): interior of gg to gx and to dat */                                \
            T* g0 = gx + (q * Or + p0) * HW;                                                            \
            T* g1 = gx + (q * Or + p1) * HW;                                                            \
            const T a = at[c];                                                                          \
            for (int64_t y = 0; y < H; ++y) {                                                           \
                const T* r = gg + (y + 1) * Wp + 1;                                                     \
                const T* u0 = f0 + y * W;                                                               \
                const T* u1 = f1 + y * W;                                                               \
                T* w0 = g0 + y * W;                                                                     \
                T* w1 = g1 + y * W;                                                                     \
                for (int64_t xx = 0; xx < W; ++xx) {                                                    \
                    w0[xx] += (1 - a) * r[xx];                                                          \
                    w1[xx] += a * r[xx];                                                                \
                    ca[xx] += r[xx] * (u1[xx] - u0[xx]);                                                \
                }                                                                                       \
            }                                                                                           \
            double ssx = 0, ssy = 0, sat = 0;                                                           \
            for (int64_t xx = 0; xx < W; ++xx) { ssx += cx[xx]; ssy += cy[xx]; sat += ca[xx]; }         \
            dsx[c * Or + o] += ssx;                                                                     \
            dsy[c * Or + o] += ssy;                                                                     \
            dat[c] += sat;                                                                              \
        }                                                                                               \
    }                                                                                                   \
    free(gp);                                                                                           \
    free(gg);                                                                                           \
    free(cx);                                                                                           \
    return 0;                                                                                           \
}


/* The backward of the max poolings with stride 2 below: gx[p] (zeroed here) accumulates g at every window's winner,
   tap t of the window at offset (DY[t], DX[t]) from (2y, 2x) (the round windows overlap; the 2x2 ones do not) */
#define DEFINE_POOL_BACKWARD(NAME, T, DY, DX)                                                            \
int NAME##_backward(const T* g, const int8_t* idx, T* gx, int64_t H, int64_t W, int64_t p0, int64_t p1) { \
    const int64_t Ho = H / 2, Wo = W / 2;                                                               \
    memset(gx + p0 * H * W, 0, sizeof(T) * (size_t)((p1 - p0) * H * W));                                \
    for (int64_t p = p0; p < p1; ++p)                                                                   \
        for (int64_t y = 0; y < Ho; ++y) {                                                              \
            const T* gr = g + (p * Ho + y) * Wo;                                                        \
            const int8_t* w = idx + (p * Ho + y) * Wo;                                                  \
            T* r = gx + (p * H + 2 * y) * W;                                                            \
            for (int64_t xo = 0; xo < Wo; ++xo) r[DY[w[xo]] * W + 2 * xo + DX[w[xo]]] += gr[xo];         \
        }                                                                                               \
    return 0;                                                                                           \
}
static const int8_t POOL2_DY[4] = {0, 0, 1, 1};
static const int8_t POOL2_DX[4] = {0, 1, 0, 1};

/* 2x2 max pooling, stride 2, of planes p in [p0, p1) of x: [P, H, W] -> out: [P, H/2, W/2] (floor),
   idx: the winner 2*i + j of window position (i, j), chosen as torch's max_pool2d does: windows scanned
   row by row, a candidate replaces the running maximum if it is larger or NaN (ties: the first). */
#define DEFINE_POOL2(T, NAME)                                                                            \
int NAME##_forward(const T* x, T* out, int8_t* idx, int64_t H, int64_t W, int64_t p0, int64_t p1) {   \
    const int64_t Ho = H / 2, Wo = W / 2;                                                               \
    for (int64_t p = p0; p < p1; ++p)                                                                   \
        for (int64_t y = 0; y < Ho; ++y) {                                                              \
            const T* r0 = x + (p * H + 2 * y) * W;                                                      \
            const T* r1 = r0 + W;                                                                       \
            T* o = out + (p * Ho + y) * Wo;                                                             \
            int8_t* w = idx + (p * Ho + y) * Wo;                                                        \
            for (int64_t xo = 0; xo < Wo; ++xo) {                                                       \
                const T a = r0[2 * xo], b = r0[2 * xo + 1], c = r1[2 * xo], d = r1[2 * xo + 1];        \
                /* branch-free selects (random data would mispredict every other branch) */              \
                T m = a;                                                                                \
                int i = 0;                                                                              \
                const int ub = (b > m) | (b != b); m = ub ? b : m; i = ub ? 1 : i;                      \
                const int uc = (c > m) | (c != c); m = uc ? c : m; i = uc ? 2 : i;                      \
                const int ud = (d > m) | (d != d); m = ud ? d : m; i = ud ? 3 : i;                      \
                o[xo] = m;                                                                              \
                w[xo] = (int8_t)i;                                                                      \
            }                                                                                           \
        }                                                                                               \
    return 0;                                                                                           \
}                                                                                                       \
DEFINE_POOL_BACKWARD(NAME, T, POOL2_DY, POOL2_DX)

/* Max pooling over the round 12-pixel window (the 4x4 window around each 2x2 block, without its corners), stride 2,
   of planes p in [p0, p1) of x: [P, H, W] -> out: [P, H/2, W/2] (floor); idx: the winner's tap t (taps row by row,
   offsets (ROUND_DY[t], ROUND_DX[t]) from (2y, 2x)), chosen as in pool2: a candidate replaces the running maximum if
   it is larger or NaN; taps outside the plane are skipped (the centre 2x2 is always inside).
   Per plane: the four polyphase components of the plane padded by one -inf pixel on every side,
     Q_ab[i L + k] = x(2i + a - 1, 2k + b - 1),  0 <= i <= Ho, 0 <= k <= Wo, L = Wo + 1,
   so that tap (dy, dx) of output j = y L + xo is Q_ab[j + di L + dk] with dy + 1 = 2 di + a, dx + 1 = 2 dk + b: twelve
   unit-stride loads, one loop over the plane's Ho L outputs (one unused column per row) without border tests, which
   the compiler vectorises. The pairs are combined in a tree (the later one wins if larger or NaN: associative, so
   the tree's winner is the scan's: the last NaN, else the first maximum). A pad can win only where the maximum is
   -inf (a pad is never larger or NaN); those outputs are rescanned over the taps inside the plane. */
/* (m, i) <- (v, t) if v > m or v is NaN, for v later in the window's row-major order than m */
#define POOL_PAIR(VT, MT, m, i, v, t) { const VT v_ = (v); const MT u_ = (v_ > m) | (v_ != v_);                  \
                                     i = ((t) & u_) | (i & ~u_); m = (VT)(((MT)v_ & u_) | ((MT)m & ~u_)); }
static const int8_t ROUND_DY[12] = {-1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2};
static const int8_t ROUND_DX[12] = {0, 1, -1, 0, 1, 2, -1, 0, 1, 2, 0, 1};
#define DEFINE_POOL_ROUND(T, VT, IT, MT, NAME)                                                           \
int NAME##_forward(const T* x, T* out, int8_t* idx, int64_t H, int64_t W, int64_t p0, int64_t p1) {   \
    enum { LANES = VBYTES / sizeof(T) };                                                                \
    const int64_t Ho = H / 2, Wo = W / 2, L = Wo + 1, n = Ho * L, nv = (n + LANES - 1) / LANES * LANES;  \
    const int64_t S = nv + L + LANES;  /* every load of the vector loop stays inside Q_ab */              \
    T* buf = (T*)malloc(sizeof(T) * (size_t)(4 * S + nv) + sizeof(IT) * (size_t)nv);                   \
    if (!buf) return 1;                                                                                 \
    T* q[2][2] = {{buf, buf + S}, {buf + 2 * S, buf + 3 * S}};                                          \
    T* mx = buf + 4 * S;                                                                                \
    IT* win = (IT*)(mx + nv);                                                                           \
    for (int64_t j = 0; j < 4 * S; ++j) buf[j] = -INFINITY;                                             \
    for (int64_t p = p0; p < p1; ++p) {                                                                 \
        const T* xp = x + p * H * W;                                                                    \
        for (int64_t i = 0; i <= Ho; ++i)                                                               \
            for (int a = 0; a < 2; ++a) {                                                               \
                const int64_t r = 2 * i + a - 1;                                                        \
                if (r < 0 || r >= H) continue;  /* stays -inf */                                        \
                T* e = q[a][0] + i * L;   /* columns 2k - 1 */                                          \
                T* f = q[a][1] + i * L;   /* columns 2k */                                              \
                const T* row = xp + r * W;                                                              \
                for (int64_t k = 1; k < L; ++k) e[k] = row[2 * k - 1];                                  \
                for (int64_t k = 0; k < Wo; ++k) f[k] = row[2 * k];                                     \
                if (2 * Wo < W) f[Wo] = row[2 * Wo];                                                    \
            }                                                                                           \
        const T *q00 = q[0][0], *q01 = q[0][1], *q10 = q[1][0], *q11 = q[1][1];                          \
        const MT t0 = (MT){0} + 0, t1 = t0 + 1, t2 = t0 + 2, t3 = t0 + 3, t4 = t0 + 4, t5 = t0 + 5,       \
                 t6 = t0 + 6, t7 = t0 + 7, t8 = t0 + 8, t9 = t0 + 9, t10 = t0 + 10, t11 = t0 + 11;       \
        for (int64_t j = 0; j < nv; j += LANES) {                                                       \
            VT m0, m1, m2, m3, m4, m5, v0, v1, v2, v3, v4, v5;                                          \
            memcpy(&m0, q01 + j, sizeof m0); memcpy(&v0, q00 + j + 1, sizeof v0);                       \
            memcpy(&m1, q10 + j, sizeof m1); memcpy(&v1, q11 + j, sizeof v1);                           \
            memcpy(&m2, q10 + j + 1, sizeof m2); memcpy(&v2, q11 + j + 1, sizeof v2);                   \
            memcpy(&m3, q00 + j + L, sizeof m3); memcpy(&v3, q01 + j + L, sizeof v3);                   \
            memcpy(&m4, q00 + j + L + 1, sizeof m4); memcpy(&v4, q01 + j + L + 1, sizeof v4);           \
            memcpy(&m5, q11 + j + L, sizeof m5); memcpy(&v5, q10 + j + L + 1, sizeof v5);               \
            MT i0 = t0, i1 = t2, i2 = t4, i3 = t6, i4 = t8, i5 = t10;                                   \
            POOL_PAIR(VT, MT, m0, i0, v0, t1) POOL_PAIR(VT, MT, m1, i1, v1, t3) POOL_PAIR(VT, MT, m2, i2, v2, t5)   \
            POOL_PAIR(VT, MT, m3, i3, v3, t7) POOL_PAIR(VT, MT, m4, i4, v4, t9) POOL_PAIR(VT, MT, m5, i5, v5, t11)  \
            POOL_PAIR(VT, MT, m0, i0, m1, i1) POOL_PAIR(VT, MT, m2, i2, m3, i3) POOL_PAIR(VT, MT, m4, i4, m5, i5)   \
            POOL_PAIR(VT, MT, m0, i0, m2, i2) POOL_PAIR(VT, MT, m0, i0, m4, i4)                                 \
            memcpy(mx + j, &m0, sizeof m0);                                                             \
            memcpy(win + j, &i0, sizeof i0);                                                            \
        }                                                                                               \
        for (int64_t y = 0; y < Ho; ++y) {                                                              \
            T* o = out + (p * Ho + y) * Wo;                                                             \
            int8_t* w = idx + (p * Ho + y) * Wo;                                                        \
            for (int64_t xo = 0; xo < Wo; ++xo) {                                                       \
                T m = mx[y * L + xo];                                                                   \
                int i = (int)win[y * L + xo];                                                           \
                if (m == -INFINITY) {   /* rescan the taps inside the plane: the first of them wins */  \
                    i = -1;                                                                             \
                    for (int t = 0; t < 12; ++t) {                                                      \
                        const int64_t r = 2 * y + ROUND_DY[t], c = 2 * xo + ROUND_DX[t];                 \
                        if (r < 0 || r >= H || c < 0 || c >= W) continue;                               \
                        const T v = xp[r * W + c];                                                      \
                        if (i < 0 || v > m || v != v) { m = v; i = t; }                                 \
                    }                                                                                   \
                }                                                                                       \
                o[xo] = m;                                                                              \
                w[xo] = (int8_t)i;                                                                      \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    free(buf);                                                                                          \
    return 0;                                                                                           \
}                                                                                                       \
DEFINE_POOL_BACKWARD(NAME, T, ROUND_DY, ROUND_DX)

/* The learned flux of pdeblocks.layers.flux.LearnedFlux on rows [r0, r1) of s: [R, inner], row r of channel
   c = r mod C reading the knot table c·table_stride (table_stride 0: one table shared by every channel):
     x = clamp(s, −s_max, s_max), a = |x|·inv_h, i = min(floor(a), K − 2), Φ = (v[i] + d[i]·(a − i))·x
   with v = knot values 0..K−2 and d their differences; params = (s_max, inv_h) in T. The same operations in the
   same order as the torch expression (no contraction: -std=c99), so the values are bit-identical. The backward
   gives ∂L/∂s = g·(v[i] + d[i]·(a − i) + a·d[i]) for |s| < s_max (0 elsewhere, as clamp's gradient) and adds
   g·x·(1 − (a − i)), g·x·(a − i) to the float64 partial sums gv[table, i], gv[table, i + 1] (K per table). */
/* The forward's row for float32 with AVX-512 and at most 17 knots: the knot tables (K − 1 ≤ 16 values each) sit in one
   register and the lookups are permutes instead of gathers; the same operations per sample, so the same values. */
#if defined(__AVX512F__)
#include <immintrin.h>
static int flux_f32_fast_row(const float* src, const float* vc, const float* dc, float s_max, float inv_h,
                             int32_t last, float* dst, int64_t inner, int64_t K) {
    if (K - 1 > 16) return 0;
    const __mmask16 tab = (__mmask16)((1u << (K - 1)) - 1u);
    const __m512 vt = _mm512_maskz_loadu_ps(tab, vc), dt = _mm512_maskz_loadu_ps(tab, dc);
    const __m512 hi = _mm512_set1_ps(s_max), lo = _mm512_set1_ps(-s_max), zero = _mm512_setzero_ps(),
                 ih = _mm512_set1_ps(inv_h);
    const __m512i top = _mm512_set1_epi32(last);
    for (int64_t k = 0; k < inner; k += 16) {
        const __mmask16 m = inner - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (inner - k)) - 1u);
        __m512 x = _mm512_maskz_loadu_ps(m, src + k);
        x = _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), lo);     /* x < −s_max ? −s_max */
        x = _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), hi);     /* : x > s_max ? s_max : x */
        const __m512 ax = _mm512_mask_sub_ps(x, _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ), zero, x);
        const __m512 a = _mm512_mul_ps(ax, ih);
        const __m512 a0 = _mm512_mask_mov_ps(a, _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), zero);  /* NaN → 0 */
        const __m512i i = _mm512_min_epi32(_mm512_cvttps_epi32(a0), top);
        const __m512 frac = _mm512_sub_ps(a, _mm512_cvtepi32_ps(i));
        const __m512 t = _mm512_mul_ps(_mm512_permutexvar_ps(i, dt), frac);
        const __m512 g = _mm512_add_ps(_mm512_permutexvar_ps(i, vt), t);
        _mm512_mask_storeu_ps(dst + k, m, _mm512_mul_ps(g, x));
    }
    return 1;
}
#else
static int flux_f32_fast_row(const float* src, const float* vc, const float* dc, float s_max, float inv_h,
                             int32_t last, float* dst, int64_t inner, int64_t K) {
    (void)src; (void)vc; (void)dc; (void)s_max; (void)inv_h; (void)last; (void)dst; (void)inner; (void)K;
    return 0;
}
#endif
static int flux_f64_fast_row(const double* src, const double* vc, const double* dc, double s_max, double inv_h,
                             int32_t last, double* dst, int64_t inner, int64_t K) {
    (void)src; (void)vc; (void)dc; (void)s_max; (void)inv_h; (void)last; (void)dst; (void)inner; (void)K;
    return 0;
}
#define DEFINE_FLUX(T, NAME)                                                                      \
static inline int32_t NAME##_interval(T a, int32_t last, T* frac) {                                    \
    /* a ≥ 0 (or NaN, read as 0): truncation is floor; (T)i and a − (T)i are exact, as torch's floor */    \
    int32_t i = (int32_t)(a == a ? a : (T)0);                                                             \
    i = i > last ? last : i;                                                                              \
    *frac = a - (T)i;                                                                                     \
    return i;                                                                                             \
}                                                                                                         \
int NAME##_forward(const T* restrict s, const T* restrict v, const T* restrict d, const T* restrict params,   \
                   T* restrict out, int64_t C, int64_t table_stride, int64_t inner, int64_t K, int64_t r0,         \
                   int64_t r1) {                                                                          \
    const T s_max = params[0], inv_h = params[1];                                                         \
    const int32_t last = (int32_t)(K - 2);                                                                \
    for (int64_t r = r0; r < r1; ++r) {                                                                   \
        const T* restrict vc = v + (r % C) * table_stride;                                                \
        const T* restrict dc = d + (r % C) * table_stride;                                                \
        const T* restrict src = s + r * inner;                                                            \
        T* restrict dst = out + r * inner;                                                                \
        if (NAME##_fast_row(src, vc, dc, s_max, inv_h, last, dst, inner, K)) continue;                     \
        for (int64_t k = 0; k < inner; ++k) {  /* vectorised (gathers from the knot table) */             \
            T x = src[k];                                                                                 \
            x = x < -s_max ? -s_max : (x > s_max ? s_max : x);                                            \
            const T a = (x < 0 ? -x : x) * inv_h;                                                         \
            T frac;                                                                                       \
            const int32_t i = NAME##_interval(a, last, &frac);                                            \
            const T t = dc[i] * frac;                                                                     \
            const T g = vc[i] + t;                                                                        \
            dst[k] = g * x;                                                                               \
        }                                                                                                 \
    }                                                                                                     \
    return 0;                                                                                             \
}                                                                                                         \
int NAME##_backward(const T* s, const T* v, const T* d, const T* params, const T* grad, T* gs, double* gv, \
                    int64_t C, int64_t table_stride, int64_t inner, int64_t K, int64_t r0, int64_t r1) {  \
    const T s_max = params[0], inv_h = params[1];                                                         \
    const int32_t last = (int32_t)(K - 2);                                                                \
    const int64_t gstride = table_stride ? K : 0;                                                         \
    for (int64_t r = r0; r < r1; ++r) {                                                                   \
        const T* vc = v + (r % C) * table_stride;                                                         \
        const T* dc = d + (r % C) * table_stride;                                                         \
        double* gc = gv + (r % C) * gstride;                                                              \
        const T* src = s + r * inner;                                                                     \
        const T* gr = grad + r * inner;                                                                   \
        T* dst = gs + r * inner;                                                                          \
        double acc0[64] = {0}, acc1[64] = {0}; /* K ≤ 64: per-row sums, then one add per knot */          \
        for (int64_t k = 0; k < inner; ++k) {                                                             \
            const T s0 = src[k];                                                                          \
            const int inside = (s0 > -s_max) & (s0 < s_max);  /* clamp's gradient: 0 at the bounds */      \
            const T x = s0 < -s_max ? -s_max : (s0 > s_max ? s_max : s0);                                 \
            const T a = (x < 0 ? -x : x) * inv_h;                                                         \
            T frac;                                                                                       \
            const int32_t i = NAME##_interval(a, last, &frac);                                            \
            const T g = vc[i] + dc[i] * frac;                                                             \
            dst[k] = inside ? gr[k] * (g + a * dc[i]) : (T)0;                                             \
            const double gx = (double)gr[k] * (double)x;                                                  \
            acc0[i] += gx * (1.0 - (double)frac);                                                         \
            acc1[i] += gx * (double)frac;                                                                 \
        }                                                                                                 \
        for (int64_t j = 0; j + 1 < K; ++j) {                                                             \
            gc[j] += acc0[j];                                                                             \
            gc[j + 1] += acc1[j];                                                                         \
        }                                                                                                 \
    }                                                                                                     \
    return 0;                                                                                             \
}

/* Symmetric tridiagonal solves M x = d for rows [r0, r1) of diag [R, n], off [R, n − 1], d [R, n] by the Thomas
   algorithm (Gaussian elimination in natural order, no pivoting: stable for symmetric positive definite or
   diagonally dominant M): c'_0 = e_0/b_0, c'_i = e_i/(b_i − e_{i−1}c'_{i−1}), x'_i = (d_i − e_{i−1}x'_{i−1})/(b_i −
   e_{i−1}c'_{i−1}), then x_i = x'_i − c'_i x_{i+1}. One row is a chain of dependent divisions (latency bound), so
   LANES = VBYTES/sizeof(T) rows run at once, one per vector lane (8 doubles with AVX-512): the same operations in the same order per
   row (no contraction: -std=c99), hence the same values as row by row; the rows left over go one at a time.
   With ``tau`` (not NULL) the system is I + τ_r Dᵀ diag(w) D of pdeblocks.ops.tridiagonal.diffusion_system, built on
   the fly from the edge weights w = ``off`` [R, n − 1] and τ_r = tau[r]: t_i = τ_r·w_i, b_i = (1 + t_{i−1}) + t_i
   (t_{−1} = t_{n−1} = 0), e_i = −t_i, the torch expression's operations. Returns 1 if scratch cannot be allocated. */
#define DEFINE_TRIDIAGONAL(T, VT, NAME)                                                                   \
enum { NAME##_LANES = VBYTES / sizeof(T) };                                                               \
/* one row; ``fused``: b, e from τ and the weights (a constant at both calls, so each call is specialised) */ \
static inline void NAME##_row(const T* b, const T* e, T tau, const T* d, T* xr, T* cp, int64_t n, int fused) { \
    T t_prev = 0, t = fused && n > 1 ? tau * e[0] : (T)0;                                                 \
    T e_prev = fused ? -t : (n > 1 ? e[0] : (T)0);                                                        \
    T denom = fused ? ((T)1 + t_prev) + t : b[0];                                                         \
    cp[0] = n > 1 ? e_prev / denom : (T)0;                                                                \
    xr[0] = d[0] / denom;                                                                                 \
    for (int64_t i = 1; i < n; ++i) {                                                                     \
        T bi;                                                                                             \
        if (fused) { t_prev = t; t = i < n - 1 ? tau * e[i] : (T)0; bi = ((T)1 + t_prev) + t; }           \
        else bi = b[i];                                                                                   \
        denom = bi - e_prev * cp[i - 1];                                                                  \
        xr[i] = (d[i] - e_prev * xr[i - 1]) / denom;                                                      \
        if (i < n - 1) { e_prev = fused ? -t : e[i]; cp[i] = e_prev / denom; }                            \
        else cp[i] = 0;                                                                                   \
    }                                                                                                     \
    for (int64_t i = n - 2; i >= 0; --i) xr[i] -= cp[i] * xr[i + 1];                                      \
}                                                                                                         \
/* LANES rows at once: lane l holds row l; p[l] points at row l of an array */                            \
static inline VT NAME##_gather(const T* const* p, int64_t i) {                                            \
    VT v;                                                                                                 \
    for (int l = 0; l < NAME##_LANES; ++l) v[l] = p[l][i];                                                \
    return v;                                                                                             \
}                                                                                                         \
static inline void NAME##_lanes(const T* const* b, const T* const* e, VT tau, const T* const* d, T* const* x, \
                                VT* cp, VT* xp, int64_t n, int fused) {                                   \
    const VT zero = {0}, one = zero + (T)1;                                                               \
    VT t_prev = zero, t = fused && n > 1 ? tau * NAME##_gather(e, 0) : zero;                              \
    VT e_prev = fused ? -t : (n > 1 ? NAME##_gather(e, 0) : zero);                                        \
    VT denom = fused ? (one + t_prev) + t : NAME##_gather(b, 0);                                          \
    cp[0] = n > 1 ? e_prev / denom : zero;                                                                \
    xp[0] = NAME##_gather(d, 0) / denom;                                                                  \
    for (int64_t i = 1; i < n; ++i) {                                                                     \
        VT bi;                                                                                            \
        if (fused) { t_prev = t; t = i < n - 1 ? tau * NAME##_gather(e, i) : zero; bi = (one + t_prev) + t; } \
        else bi = NAME##_gather(b, i);                                                                    \
        denom = bi - e_prev * cp[i - 1];                                                                  \
        xp[i] = (NAME##_gather(d, i) - e_prev * xp[i - 1]) / denom;                                       \
        if (i < n - 1) { e_prev = fused ? -t : NAME##_gather(e, i); cp[i] = e_prev / denom; }             \
        else cp[i] = zero;                                                                                \
    }                                                                                                     \
    VT next = xp[n - 1];                                                                                  \
    for (int l = 0; l < NAME##_LANES; ++l) x[l][n - 1] = next[l];                                         \
    for (int64_t i = n - 2; i >= 0; --i) {                                                                \
        next = xp[i] - cp[i] * next;                                                                      \
        for (int l = 0; l < NAME##_LANES; ++l) x[l][i] = next[l];                                         \
    }                                                                                                     \
}                                                                                                         \
int NAME##_solve(const T* diag, const T* off, const T* tau, const T* rhs, T* x, int64_t n, int64_t r0,    \
                 int64_t r1) {                                                                            \
    enum { L = NAME##_LANES };                                                                            \
    /* scratch: c' and x' of L rows, interleaved (n vectors each), aligned by hand (C99 has no aligned_alloc) */ \
    char* raw = (char*)malloc(sizeof(VT) * (size_t)(2 * n) + VBYTES);                                     \
    if (!raw) return 1;                                                                                   \
    VT* cp = (VT*)(((uintptr_t)raw + VBYTES - 1) & ~(uintptr_t)(VBYTES - 1));                             \
    VT* xp = cp + n;                                                                                      \
    const T* bl[L]; const T* el[L]; const T* dl[L]; T* xl[L];                                             \
    int64_t r = r0;                                                                                       \
    for (; r + L <= r1; r += L) {                                                                         \
        VT tv = {0};                                                                                      \
        for (int l = 0; l < L; ++l) {                                                                     \
            bl[l] = diag + (r + l) * n; el[l] = off + (r + l) * (n - 1);                                  \
            dl[l] = rhs + (r + l) * n; xl[l] = x + (r + l) * n;                                           \
            if (tau) tv[l] = tau[r + l];                                                                  \
        }                                                                                                 \
        if (tau) NAME##_lanes(bl, el, tv, dl, xl, cp, xp, n, 1);                                          \
        else NAME##_lanes(bl, el, tv, dl, xl, cp, xp, n, 0);                                             \
    }                                                                                                     \
    for (; r < r1; ++r) {                                                                                 \
        if (tau) NAME##_row(NULL, off + r * (n - 1), tau[r], rhs + r * n, x + r * n, (T*)cp, n, 1);      \
        else NAME##_row(diag + r * n, off + r * (n - 1), 0, rhs + r * n, x + r * n, (T*)cp, n, 0);      \
    }                                                                                                     \
    free(raw);                                                                                            \
    return 0;                                                                                             \
}

/* Edge weights of the blind denoiser's exact tails (pdeblocks.models.blind), float64, rows [r0, r1) of w [R, n] with
   one λ per row: s_i = (w_{i+1} − w_i)/λ_r for i < n − 1, then into out [R, n − 1]
   * tail_irls_weights: ω_i = (1 + s_i²)^(−q) (IRLSTail1D), as exp(−q·log(1 + s_i²)) with vector versions of fdlibm's
     e_log.c and e_exp.c (each within 1 ulp), so ω within about (2 + q·log(1 + s²))·eps of the exact power; exponents
     below −700 give e^−700 (≈ 1e−304, which 1 + τω rounds away as it does 0 for τ ≤ 1e6), y = ∞ gives 0;
   * tail_knot_weights: g(|s|) of LearnedFlux.diffusivity_values (ImplicitTail1D) through the knot values v [K] and
     their differences d [K − 1], spacing h: x = |s|·(1/h), x̄ = min(x, K − 1), i = min(⌊x̄⌋, K − 2),
     g = v_i + d_i(x̄ − i), times (K − 1)/max(x, K − 1) where x > K − 1: the torch expression's operations, bit for bit
     (a number over a tensor is its reciprocal times the number in torch). */
static inline vf64 vlog64(vf64 y) {   /* y = 2^k·m, m ∈ [√½, √2); log m = f − (f²/2 − s(f²/2 + R(s²))), s = f/(2 + f) */
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01, Lg3 = 2.857142874366239149e-01,
                 Lg4 = 2.222219843214978396e-01, Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;
    const vi64 bits = (vi64)y;
    vi64 k = ((bits >> 52) & 0x7ff) - 1023;
    vi64 mb = (bits & 0x000fffffffffffffLL) | 0x3ff0000000000000LL;      /* m ∈ [1, 2) */
    const vi64 big = mb > 0x3ff6a09e667f3bcdLL;                           /* m > √2: m/2 and k + 1 (big = −1) */
    mb = (mb & ~big) | ((mb - 0x0010000000000000LL) & big);
    k = k - big;
    const vf64 magic = (vf64){0} + 6755399441055744.0;                   /* 1.5·2^52: integers in the low bits */
    const vf64 m = (vf64)mb, f = m - 1.0, dk = (vf64)(k + (vi64)magic) - magic;
    const vf64 hfsq = 0.5 * f * f, sr = f / (2.0 + f), z = sr * sr, w = z * z;
    const vf64 R = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7))) + w * (Lg2 + w * (Lg4 + w * Lg6));
    return dk * ln2_hi - ((hfsq - (sr * (hfsq + R) + dk * ln2_lo)) - f);
}
static inline vf64 vexp64(vf64 t) {   /* t ∈ [−700, 0]: t = k·ln2 + r, |r| ≤ ln2/2, e^r = 1 + 2r/(2 − c), c = r − r²P(r²) */
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
                 inv_ln2 = 1.44269504088896338700e+00;
    const double P1 = 1.66666666666666019037e-01, P2 = -2.77777777770155933842e-03, P3 = 6.61375632143793436117e-05,
                 P4 = -1.65339022054652515390e-06, P5 = 4.13813679705723846039e-08;
    const vf64 magic = (vf64){0} + 6755399441055744.0;                   /* 1.5·2^52: rounds to an integer */
    const vf64 kt = t * inv_ln2 + magic, dk = kt - magic;
    const vi64 k = (vi64)kt - (vi64)magic;
    const vf64 hi = t - dk * ln2_hi, lo = dk * ln2_lo, r = hi - lo, r2 = r * r;
    const vf64 c = r - r2 * (P1 + r2 * (P2 + r2 * (P3 + r2 * (P4 + r2 * P5))));
    const vf64 e = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    return (vf64)((vi64)e + (k << 52));                                  /* e·2^k, k ≥ −1010: a normal number */
}
int tail_irls_weights(const double* w, const double* lam, const double* q, double* out, int64_t n, int64_t r0,
                      int64_t r1) {
    enum { L = VBYTES / sizeof(double) };
    const vf64 zero = {0}, floor_exp = zero - 700.0, minus_q = zero - q[0];
    for (int64_t r = r0; r < r1; ++r) {
        const double* wr = w + r * n;
        double* o = out + r * (n - 1);
        const vf64 lr = zero + lam[r];
        for (int64_t i = 0; i < n - 1; i += L) {
            const int64_t m = n - 1 - i < L ? n - 1 - i : L;
            vf64 a = zero + 1.0, b = zero + 1.0;          /* lanes past the row's end: s = 0 */
            if (m == L) { memcpy(&a, wr + i + 1, sizeof a); memcpy(&b, wr + i, sizeof b); }
            else for (int l = 0; l < m; ++l) { a[l] = wr[i + 1 + l]; b[l] = wr[i + l]; }
            const vf64 s = (a - b) / lr, y = 1.0 + s * s;
            vf64 t = minus_q * vlog64(y);
            const vi64 low = t < floor_exp, inf = y > DBL_MAX;
            t = (vf64)(((vi64)t & ~low) | ((vi64)floor_exp & low));
            vf64 om = vexp64(t);
            om = (vf64)((vi64)om & ~inf);
            om = (vf64)(((vi64)om & (vi64)(y == y)) | ((vi64)y & ~(vi64)(y == y)));   /* NaN stays NaN */
            if (m == L) memcpy(o + i, &om, sizeof om);
            else for (int l = 0; l < m; ++l) o[i + l] = om[l];
        }
    }
    return 0;
}
int tail_knot_weights(const double* w, const double* lam, const double* v, const double* d, const double* params,
                      double* out, int64_t n, int64_t K, int64_t r0, int64_t r1) {
    const double inv_h = params[0], last = (double)(K - 1), top = (double)(K - 2);
    for (int64_t r = r0; r < r1; ++r) {
        const double* wr = w + r * n;
        double* o = out + r * (n - 1);
        const double lr = lam[r];
        for (int64_t i = 0; i < n - 1; ++i) {   /* vectorised (gathers from the knot table) */
            const double s = (wr[i + 1] - wr[i]) / lr;
            const double x = (s < 0 ? -s : s) * inv_h;
            const double xc = x < last ? x : last;
            double idx = floor(xc);
            idx = idx < top ? idx : top;
            const int32_t j = (int32_t)idx;
            const double g = v[j] + d[j] * (xc - idx);
            o[i] = x > last ? g * ((1.0 / (x > last ? x : last)) * last) : g;   /* torch's last / t: t⁻¹·last */
        }
    }
    return 0;
}

/* The pooled lag-difference features of the tails' gate (ImplicitTail1D.features) for rows [r0, r1) of v, u [R, n]:
   for each lag k = min(lags[j], n − 1), with d_t = v_{t+k} − v_t and e_t = u_{t+k} − u_t (differences in T, as torch),
   m = n − k of them, into out[r, 4j .. 4j + 3]:
     log(mean|d| + 1e−3), log(mean d² + 1e−6)/2, mean log(|d| + 1e−3), log(mean e² + 1e−6)/2,
   sums in float64. Σ log(|d| + 1e−3) without a logarithm per sample: each y = |d| + 1e−3 = 2^E·M with M ∈ [1, 2)
   (bits), Σ E exact and Π M (renormalised the same way every 32 factors, < 2^32), so the sum is
   ln2·Σ E + log Π M: one logarithm per vector lane, relative rounding about m·eps. */
#define DEFINE_LAG_FEATURES(T, NAME)                                                                      \
int NAME(const T* v, const T* u, const int64_t* lags, T* out, int64_t n, int64_t nlags, int64_t r0,      \
         int64_t r1) {                                                                                    \
    enum { L = VBYTES / sizeof(double) };                                                                 \
    const vi64 mant = (vi64){0} + 0x000fffffffffffffLL, one = (vi64){0} + 0x3ff0000000000000LL;          \
    const double ln2 = 0.69314718055994530942;                                                            \
    for (int64_t r = r0; r < r1; ++r) {                                                                   \
        const T* vr = v + r * n;                                                                          \
        const T* ur = u + r * n;                                                                          \
        for (int64_t j = 0; j < nlags; ++j) {                                                             \
            const int64_t k = lags[j] < n - 1 ? lags[j] : n - 1, m = n - k;                               \
            vf64 sa = {0}, sd = {0}, se = {0}, prod = (vf64){0} + 1.0;                                    \
            vi64 ex = {0};                                                                                \
            int64_t t = 0;                                                                                \
            for (int blk = 1; t + L <= m; t += L, ++blk) {                                                \
                vf64 d, e;                                                                                \
                for (int l = 0; l < L; ++l) {                                                             \
                    d[l] = (double)(T)(vr[t + k + l] - vr[t + l]);                                         \
                    e[l] = (double)(T)(ur[t + k + l] - ur[t + l]);                                         \
                }                                                                                         \
                const vf64 a = (vf64)((vi64)d & ((vi64){0} + 0x7fffffffffffffffLL));  /* |d| */               \
                sa += a; sd += d * d; se += e * e;                                                        \
                const vi64 yb = (vi64)(a + 1e-3);                                                         \
                ex += (yb >> 52) - 1023;                                                                  \
                prod *= (vf64)((yb & mant) | one);                                                        \
                if (blk % 32 == 0) {                                                                      \
                    const vi64 pb = (vi64)prod;                                                           \
                    ex += (pb >> 52) - 1023;                                                              \
                    prod = (vf64)((pb & mant) | one);                                                     \
                }                                                                                         \
            }                                                                                             \
            double a_sum = 0, d_sum = 0, e_sum = 0, log_sum = 0;                                          \
            for (int l = 0; l < L; ++l) {                                                                 \
                a_sum += sa[l]; d_sum += sd[l]; e_sum += se[l];                                           \
                log_sum += log(prod[l]) + ln2 * (double)ex[l];                                            \
            }                                                                                             \
            for (; t < m; ++t) {                                                                          \
                const double d = (double)(T)(vr[t + k] - vr[t]), e = (double)(T)(ur[t + k] - ur[t]);      \
                const double a = d < 0 ? -d : d;                                                          \
                a_sum += a; d_sum += d * d; e_sum += e * e; log_sum += log(a + 1e-3);                     \
            }                                                                                             \
            if (!(a_sum <= DBL_MAX)) log_sum = a_sum;   /* an Inf or NaN difference: as log(|d| + 1e−3) gives */ \
            T* o = out + r * 4 * nlags + 4 * j;                                                           \
            o[0] = (T)log(a_sum / (double)m + 1e-3);                                                      \
            o[1] = (T)(log(d_sum / (double)m + 1e-6) / 2);                                                \
            o[2] = (T)(log_sum / (double)m);                                                              \
            o[3] = (T)(log(e_sum / (double)m + 1e-6) / 2);                                                \
        }                                                                                                 \
    }                                                                                                     \
    return 0;                                                                                             \
}
DEFINE_LAG_FEATURES(float, tail_lag_features_f32)
DEFINE_LAG_FEATURES(double, tail_lag_features_f64)

/* z[0, h], z[1, h] = ⟨W[h], x[0]⟩, ⟨W[h], x[1]⟩ and ss[h] = ‖W[h]‖² for rows h0..h1 of W [H, K] (sums in vector
   lanes, the lanes' squares added in double) */
int symbol_apply_sumsq_f32(const float* w, const float* x, float* z, double* ss, int64_t H, int64_t K, int64_t h0,
                           int64_t h1) {
    enum { L = VBYTES / sizeof(float) };
    for (int64_t h = h0; h < h1; ++h) {
        const float* wr = w + h * K;
        vf32 a0 = {0}, a1 = {0}, a2 = {0};
        int64_t k = 0;
        for (; k + L <= K; k += L) {
            vf32 wv, x0, x1;
            memcpy(&wv, wr + k, sizeof wv);
            memcpy(&x0, x + k, sizeof x0);
            memcpy(&x1, x + K + k, sizeof x1);
            a0 += wv * x0;
            a1 += wv * x1;
            a2 += wv * wv;
        }
        float s0 = 0, s1 = 0;
        double s2 = 0;
        for (int l = 0; l < L; ++l) { s0 += a0[l]; s1 += a1[l]; s2 += a2[l]; }
        for (; k < K; ++k) { s0 += wr[k] * x[k]; s1 += wr[k] * x[K + k]; s2 += (double)wr[k] * wr[k]; }
        z[h] = s0;
        z[H + h] = s1;
        ss[h] = s2;
    }
    return 0;
}

/* steps of the power iteration x ← A(ω)ᴴA(ω)x/‖A(ω)ᴴA(ω)x‖ on the symbol A(ω) = Σ_j W_j e^{−i⟨ω, j⟩} at the grid
   frequencies index[f0..f1), one frequency per vector lane: per block of lanes A is formed once ([H·C] vectors, re and
   im) and every step reads it twice. w [H, C, T]; phases [T, F] and vectors [F, C] complex (re, im interleaved);
   vectors[index[f]] is updated in place and sigmas[index[f]] = ‖A x‖ at the last step's input x (sums in float32).
   Returns 1 if out of memory. */
int symbol_power_f32(const float* w, const float* phases, float* vectors, float* sigmas, const int64_t* index,
                     int64_t H, int64_t C, int64_t T, int64_t F, int64_t steps, int64_t f0, int64_t f1) {
    enum { L = VBYTES / sizeof(float) };
    const int64_t HC = H * C;
    char* raw = malloc(sizeof(vf32) * (2 * HC + 2 * H + 2 * C + 2 * T) + VBYTES);
    if (!raw) return 1;
    vf32* ar = (vf32*)(((uintptr_t)raw + VBYTES - 1) & ~(uintptr_t)(VBYTES - 1));
    vf32 *ai = ar + HC, *zr = ai + HC, *zi = zr + H, *xr = zi + H, *xi = xr + C, *pr = xi + C, *pi = pr + T;
    for (int64_t b = f0; b < f1; b += L) {
        const int m = (int)(f1 - b < L ? f1 - b : L);
        for (int64_t j = 0; j < T; ++j) pr[j] = pi[j] = (vf32){0};
        for (int64_t c = 0; c < C; ++c) xr[c] = xi[c] = (vf32){0};
        for (int l = 0; l < m; ++l) {
            const int64_t f = index[b + l];
            for (int64_t j = 0; j < T; ++j) { pr[j][l] = phases[2 * (j * F + f)]; pi[j][l] = phases[2 * (j * F + f) + 1]; }
            for (int64_t c = 0; c < C; ++c) { xr[c][l] = vectors[2 * (f * C + c)]; xi[c][l] = vectors[2 * (f * C + c) + 1]; }
        }
        int64_t k = 0;
        for (; k + 4 <= HC; k += 4) {   /* four (h, c) at once: independent chains */
            const float* wk = w + k * T;
            vf32 r0 = {0}, r1 = {0}, r2 = {0}, r3 = {0}, i0 = {0}, i1 = {0}, i2 = {0}, i3 = {0};
            for (int64_t j = 0; j < T; ++j) {
                const vf32 a = pr[j], q = pi[j];
                r0 += wk[j] * a; i0 += wk[j] * q;
                r1 += wk[T + j] * a; i1 += wk[T + j] * q;
                r2 += wk[2 * T + j] * a; i2 += wk[2 * T + j] * q;
                r3 += wk[3 * T + j] * a; i3 += wk[3 * T + j] * q;
            }
            ar[k] = r0; ar[k + 1] = r1; ar[k + 2] = r2; ar[k + 3] = r3;
            ai[k] = i0; ai[k + 1] = i1; ai[k + 2] = i2; ai[k + 3] = i3;
        }
        for (; k < HC; ++k) {
            vf32 r = {0}, i = {0};
            for (int64_t j = 0; j < T; ++j) { r += w[k * T + j] * pr[j]; i += w[k * T + j] * pi[j]; }
            ar[k] = r; ai[k] = i;
        }
        vf32 s = {0};
        for (int64_t step = 0; step < steps; ++step) {
            s = (vf32){0};
            for (int64_t h = 0; h < H; ++h) {   /* z = A x */
                const vf32 *rh = ar + h * C, *ih = ai + h * C;
                vf32 a = {0}, bb = {0}, c2 = {0}, d = {0};
                int64_t c = 0;
                for (; c + 2 <= C; c += 2) {
                    a += rh[c] * xr[c] - ih[c] * xi[c]; bb += rh[c] * xi[c] + ih[c] * xr[c];
                    c2 += rh[c + 1] * xr[c + 1] - ih[c + 1] * xi[c + 1]; d += rh[c + 1] * xi[c + 1] + ih[c + 1] * xr[c + 1];
                }
                for (; c < C; ++c) { a += rh[c] * xr[c] - ih[c] * xi[c]; bb += rh[c] * xi[c] + ih[c] * xr[c]; }
                zr[h] = a + c2; zi[h] = bb + d;
                s += zr[h] * zr[h] + zi[h] * zi[h];
            }
            for (int64_t c = 0; c < C; ++c) xr[c] = xi[c] = (vf32){0};
            for (int64_t h = 0; h < H; ++h) {   /* x = Aᴴ z */
                const vf32 *rh = ar + h * C, *ih = ai + h * C, a = zr[h], q = zi[h];
                for (int64_t c = 0; c < C; ++c) { xr[c] += rh[c] * a + ih[c] * q; xi[c] += rh[c] * q - ih[c] * a; }
            }
            vf32 u = {0};
            for (int64_t c = 0; c < C; ++c) u += xr[c] * xr[c] + xi[c] * xi[c];
            vf32 inv;
            for (int l = 0; l < L; ++l) { const float v = sqrtf(u[l]); inv[l] = 1.0f / (v > 1e-30f ? v : 1e-30f); }
            for (int64_t c = 0; c < C; ++c) { xr[c] *= inv; xi[c] *= inv; }
        }
        for (int l = 0; l < m; ++l) {
            const int64_t f = index[b + l];
            for (int64_t c = 0; c < C; ++c) { vectors[2 * (f * C + c)] = xr[c][l]; vectors[2 * (f * C + c) + 1] = xi[c][l]; }
            sigmas[f] = sqrtf(s[l]);
        }
    }
    free(raw);
    return 0;
}

DEFINE_SHIFT(float, shift_f32)
DEFINE_SHIFT(double, shift_f64)
DEFINE_POOL2(float, pool2_f32)
DEFINE_POOL2(double, pool2_f64)
DEFINE_POOL_ROUND(float, vf32, int32_t, vi32, poolround_f32)
DEFINE_POOL_ROUND(double, vf64, int64_t, vi64, poolround_f64)
DEFINE_FLUX(float, flux_f32)
DEFINE_FLUX(double, flux_f64)
DEFINE_TRIDIAGONAL(float, vf32, tridiagonal_f32)
DEFINE_TRIDIAGONAL(double, vf64, tridiagonal_f64)

/* The rational fluxes Φ(s) = g·s on rows [r0, r1) of s: [R, inner], λ = lam[(r mod C)·lam_stride]; kind 0: Perona–Malik,
   g = 1/(1 + s²/λ²); kind 1: Charbonnier, g = 1/√(1 + s²/λ²). The operations and their order are the torch expression's
   (s·s, λ·λ, the quotient, 1 + it, the reciprocal; no contraction), so Perona–Malik's values are bit-identical. The
   backward gives ∂L/∂s = grad·Φ'(s), Φ' = g(2g − 1) or g³, and adds Σ grad·c·s/λ over the row to gl[(r mod C)·lam_stride]
   (float64; lanes summed in T within the row), c = λ∂Φ/∂λ / s = 2(1 − g)g or (1 − g²)g. The row's tail is read
   zero-padded (g = 1 there, no NaN) and not written. */
#define DEFINE_RATFLUX(T, VT, SQRT, NAME)                                                                 \
enum { NAME##_LANES = VBYTES / sizeof(T) };                                                              \
static inline VT NAME##_g(VT x, T l2, int64_t kind) {                                                    \
    const VT d = (T)1 + x * x / l2;                                                                      \
    if (kind == 0) return (T)1 / d;                                                                      \
    VT r;                                                                                                \
    for (int j = 0; j < NAME##_LANES; ++j) r[j] = (T)1 / SQRT(d[j]);                                     \
    return r;                                                                                            \
}                                                                                                        \
int NAME##_forward(const T* restrict s, const T* restrict lam, T* restrict out, int64_t C, int64_t lam_stride, \
                   int64_t inner, int64_t kind, int64_t r0, int64_t r1) {                               \
    for (int64_t r = r0; r < r1; ++r) {                                                                  \
        const T l = lam[(r % C) * lam_stride], l2 = l * l;                                               \
        const T* restrict x = s + r * inner;                                                             \
        T* restrict o = out + r * inner;                                                                 \
        for (int64_t k = 0; k < inner; k += NAME##_LANES) {                                              \
            const int64_t n = inner - k < NAME##_LANES ? inner - k : NAME##_LANES;                       \
            VT v = {0};                                                                                  \
            if (n == NAME##_LANES) memcpy(&v, x + k, sizeof v); else memcpy(&v, x + k, n * sizeof(T));   \
            const VT y = NAME##_g(v, l2, kind) * v;                                                      \
            if (n == NAME##_LANES) memcpy(o + k, &y, sizeof y); else memcpy(o + k, &y, n * sizeof(T));   \
        }                                                                                                \
    }                                                                                                    \
    return 0;                                                                                            \
}                                                                                                        \
int NAME##_backward(const T* restrict s, const T* restrict lam, const T* restrict grad, T* restrict gs,      \
                    double* restrict gl, int64_t C, int64_t lam_stride, int64_t inner, int64_t kind, int64_t r0, \
                    int64_t r1) {                                                                        \
    for (int64_t r = r0; r < r1; ++r) {                                                                  \
        const T l = lam[(r % C) * lam_stride], l2 = l * l;                                               \
        const T* restrict x = s + r * inner;                                                             \
        const T* restrict gr = grad + r * inner;                                                         \
        T* restrict o = gs + r * inner;                                                                  \
        VT acc = {0};                                                                                    \
        for (int64_t k = 0; k < inner; k += NAME##_LANES) {                                              \
            const int64_t n = inner - k < NAME##_LANES ? inner - k : NAME##_LANES;                       \
            VT v = {0}, w = {0};                                                                         \
            if (n == NAME##_LANES) { memcpy(&v, x + k, sizeof v); memcpy(&w, gr + k, sizeof w); }         \
            else { memcpy(&v, x + k, n * sizeof(T)); memcpy(&w, gr + k, n * sizeof(T)); }               \
            const VT g = NAME##_g(v, l2, kind);                                                          \
            const VT slope = kind == 0 ? g * ((T)2 * g - (T)1) : g * g * g;                              \
            const VT c = kind == 0 ? (T)2 * ((T)1 - g) * g : ((T)1 - g * g) * g;                         \
            const VT y = w * slope;                                                                      \
            acc += w * c * v / l;                                                                        \
            if (n == NAME##_LANES) memcpy(o + k, &y, sizeof y); else memcpy(o + k, &y, n * sizeof(T));   \
        }                                                                                                \
        double sum = 0.0;                                                                                \
        for (int j = 0; j < NAME##_LANES; ++j) sum += (double)acc[j];                                    \
        gl[(r % C) * lam_stride] += sum;                                                                 \
    }                                                                                                    \
    return 0;                                                                                            \
}
DEFINE_RATFLUX(float, vf32, sqrtf, ratflux_f32)
DEFINE_RATFLUX(double, vf64, sqrt, ratflux_f64)

DEFINE_MINPLUS(float, vf32, int32_t, vi32, minplus_f32)
DEFINE_MINPLUS(double, vf64, int64_t, vi64, minplus_f64)

/* 9. The posterior mean of a piecewise-constant signal (pdeblocks.ops.segmentation), float64, rows [r0, r1) of
   x [R, n], per row a = 1/(2σ²) and c0 = log of the level prior's density times √(2πσ²) (rowp [R, 2]); prm = (log h,
   log(1 − h), prune). A segment [s, e) of length L ≤ W has the weight
       φ(s, e) = exp(−a·SS(s, e) − ½ log L + (L − 1) log(1 − h) + c0) · (h if e < n),
   SS its sum of squared deviations from its mean μ(s, e); α(e) = Σ_s α(s)φ(s, e), α(0) = 1, over a window [lo_e, e)
   that starts at max(lo_{e−1}, e − W) and whose oldest starts are dropped once their term falls below prune × the
   sum (the same window in both passes, so the result is the exact posterior mean of that restricted prior). In logs,
   with m_e the term of s = e − 1: T(s, e) = exp(log α(s) + log φ(s, e) − m_e), α(e) = e^{m_e}·Σ_s T(s, e), T kept
   for the backward pass (the ends e in reverse order). Backward,
   with G(e) = e^{m_e}β(e)/Z: P(s, e) = T(s, e)G(e) is the segment's posterior probability, P(s) = Σ_e P(s, e) that of
   a boundary at s and G(s) = P(s)/Σ_s' T(s', s); E[x_t] = Σ_{s ≤ t < e} P(s, e)μ(s, e) through a difference array,
   and (where bnd is not NULL) P(s) for s = 1 … n − 1 into bnd [R, n − 1]. Returns 1 if memory runs out. */
#if defined(__GNUC__) && !defined(__clang__)
#define SEG_FMA __attribute__((optimize("fp-contract=fast")))   /* fused multiply-adds where the ISA has them */
#else
#define SEG_FMA
#endif
static inline SEG_FMA vf64 vexp64_poly(vf64 t) {   /* t ∈ [−700, 700]: e^t = 2^k·e^r, |r| ≤ ln2/2, e^r by its Taylor polynomial of
                                              degree 9 (relative error below 1e−11) in Estrin's scheme: a short chain */
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
                 inv_ln2 = 1.44269504088896338700e+00;
    const vf64 magic = (vf64){0} + 6755399441055744.0;
    const vf64 kt = t * inv_ln2 + magic, dk = kt - magic;
    const vi64 k = (vi64)kt - (vi64)magic;
    const vf64 r = (t - dk * ln2_hi) - dk * ln2_lo, r2 = r * r, r4 = r2 * r2;
    const vf64 p01 = 1.0 + r, p23 = 0.5 + r * (1.0 / 6.0), p45 = 1.0 / 24.0 + r * (1.0 / 120.0),
               p67 = 1.0 / 720.0 + r * (1.0 / 5040.0), p89 = 1.0 / 40320.0 + r * (1.0 / 362880.0);
    const vf64 p = (p01 + r2 * p23) + r4 * ((p45 + r2 * p67) + r4 * p89);
    return (vf64)((vi64)p + (k << 52));
}
static inline double seg_hsum(vf64 v) {   /* pairwise: log2(L) dependent adds, not L − 1 */
    enum { L = VBYTES / sizeof(double) };
    double t[L];
    memcpy(t, &v, sizeof t);
    for (int w = L / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; ++i) t[i] += t[i + w];
    return t[0];
}

typedef struct {                 /* one row's state: see segment_posterior_mean */
    vf64 iota;                   /* 0, 1, …, L − 1: the lanes still inside a window */
    double *S1, *A2, *la, *P, *sm, *Bd, *D, *ar, *T;
    int64_t *lo, *off;
    size_t cap, used;
    int64_t start;
    double a, c0, lo_x, hi_x;
} seg_row;

static int seg_alloc(seg_row* q, int64_t n, int64_t W) {
    enum { L = VBYTES / sizeof(double) };
    const int64_t N = n + 1 + L;                         /* vectors read up to L − 1 past the last index */
    memset(q, 0, sizeof *q);
    for (int l = 0; l < L; ++l) q->iota[l] = (double)l;
    q->S1 = calloc((size_t)(7 * N + W + L), sizeof(double));
    q->lo = malloc(sizeof(int64_t) * (size_t)(2 * (n + 1)));
    q->cap = (size_t)n * 64 + (size_t)(W + L);           /* the terms T(s, e), row e at off[e]; grown as needed */
    q->T = malloc(sizeof(double) * q->cap);
    if (!q->S1 || !q->lo || !q->T) return 1;
    q->A2 = q->S1 + N; q->la = q->A2 + N; q->P = q->la + N; q->sm = q->P + N; q->Bd = q->sm + N; q->D = q->Bd + N;
    q->ar = q->D + N; q->off = q->lo + n + 1;
    return 0;
}

static void seg_free(seg_row* q) { free(q->S1); free(q->lo); free(q->T); }

static void seg_setup(seg_row* q, const double* xr, double a, double c0, int64_t n, int64_t W) {
    for (int64_t k = 1; k <= W; ++k) q->ar[W - k] = a / (double)k;
    double lo_x = xr[0], hi_x = xr[0], sq = 0.0;
    q->S1[0] = q->A2[0] = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        q->S1[i + 1] = q->S1[i] + xr[i]; sq += xr[i] * xr[i]; q->A2[i + 1] = a * sq;
        lo_x = xr[i] < lo_x ? xr[i] : lo_x; hi_x = xr[i] > hi_x ? xr[i] : hi_x;
    }
    q->a = a; q->c0 = c0; q->lo_x = lo_x; q->hi_x = hi_x;
    q->la[0] = 0.0; q->P[0] = 0.0; q->sm[0] = 1.0; q->lo[0] = 0; q->off[0] = 0; q->start = 0; q->used = 0;
}

/* forward at end e: s = start … e − 1; log φ(s, e) − c0 − log h = A2[s] − A2[e] + (a/k)·d² + hl[k], d = S1[e] − S1[s];
   m = the term of s = e − 1 (SS = 0), so T(s, e) = exp(P[s] + hl[k] + (a/k)d² − A2[e] − m) */
static inline SEG_FMA int seg_forward(seg_row* q, int64_t e, int64_t n, int64_t W, const double* hl, const double* hr,
                              double log_h, double prune) {
    enum { L = VBYTES / sizeof(double) };
    const vf64 iota = q->iota, zero = {0};
    const vf64 lim = zero - 700.0, top = zero + 700.0;   /* exponents clamped: no overflow, whatever rounding does */
    int64_t start = q->start;
    if (start < e - W) start = e - W;
    q->lo[e] = start;
    const int64_t cnt = e - start;
    if (q->used + (size_t)(cnt + L) > q->cap) {
        double* grown = realloc(q->T, sizeof(double) * (2 * q->cap + (size_t)(W + L)));
        if (!grown) return 1;
        q->T = grown; q->cap = 2 * q->cap + (size_t)(W + L);
    }
    q->off[e] = (int64_t)q->used;
    double* Te = q->T + q->used;
    const double s1 = q->S1[e], m = q->la[e - 1] + hl[1], base = q->A2[e] + m;
    const double *hre = hr + W - e, *are = q->ar + W - e, *S1 = q->S1, *P = q->P;
    vf64 acc = zero;
    for (int64_t j = 0; j < cnt; j += L) {
        const int64_t s = start + j;
        vf64 p1, pp, h, c;
        memcpy(&p1, S1 + s, sizeof p1); memcpy(&pp, P + s, sizeof pp);
        memcpy(&h, hre + s, sizeof h); memcpy(&c, are + s, sizeof c);
        const vf64 d = s1 - p1;
        vf64 t = (pp + h) + c * d * d - base;
        t = (vf64)(((vi64)t & ~(vi64)(t < lim)) | ((vi64)lim & (vi64)(t < lim)));
        t = (vf64)(((vi64)t & ~(vi64)(t > top)) | ((vi64)top & (vi64)(t > top)));
        t = (vf64)((vi64)vexp64_poly(t) & (vi64)(iota < (double)(cnt - j)));
        acc += t;
        memcpy(Te + j, &t, sizeof t);
    }
    const double sum = seg_hsum(acc);
    q->sm[e] = sum;
    q->used += (size_t)cnt;
    q->la[e] = m + q->c0 + (e < n ? log_h : 0.0) + log(sum);
    q->P[e] = q->la[e] + q->A2[e];
    while (start < e - 1 && Te[start - q->lo[e]] < prune * sum) ++start;
    q->start = start;
    return 0;
}

/* backward at end e (last first): every row e' > e has added its P(e, e') to Bd[e], so G(e) = Bd[e]/Σ_s T(s, e) is
   final; P(s, e) = T(s, e)·G(e) for the row's s goes to Bd[s], and P(s, e)·μ(s, e) to the difference array */
static inline SEG_FMA void seg_backward(seg_row* q, int64_t e, int64_t W, const double* ir) {
    enum { L = VBYTES / sizeof(double) };
    const vf64 iota = q->iota, zero = {0};
    const int64_t start = q->lo[e], cnt = e - start;
    const double g = q->Bd[e] / q->sm[e], s1 = q->S1[e];
    const double *Te = q->T + q->off[e], *ire = ir + W - e, *S1 = q->S1;
    double *Bd = q->Bd, *D = q->D;
    vf64 vacc = zero;
    for (int64_t j = 0; j < cnt; j += L) {
        const int64_t s = start + j;
        vf64 t, p1, iv, bd, dd;
        memcpy(&t, Te + j, sizeof t); memcpy(&p1, S1 + s, sizeof p1); memcpy(&iv, ire + s, sizeof iv);
        memcpy(&bd, Bd + s, sizeof bd); memcpy(&dd, D + s, sizeof dd);
        t = (vf64)((vi64)(t * g) & (vi64)(iota < (double)(cnt - j)));    /* P(s, e) */
        const vf64 pm = t * ((s1 - p1) * iv);
        bd += t; dd += pm; vacc += pm;
        memcpy(Bd + s, &bd, sizeof bd); memcpy(D + s, &dd, sizeof dd);
    }
    D[e] -= seg_hsum(vacc);
}

static void seg_finish(seg_row* q, double* o, double* b, int64_t n) {
    double run = 0.0;
    for (int64_t i = 0; i < n; ++i) {                    /* a convex combination of x: the clamp removes rounding only */
        run += q->D[i];
        o[i] = run < q->lo_x ? q->lo_x : (run > q->hi_x ? q->hi_x : run);
    }
    if (b)                                               /* P(a segment starts at s), s = 1 … n − 1 */
        for (int64_t s = 1; s < n; ++s) b[s - 1] = q->Bd[s] < 0.0 ? 0.0 : (q->Bd[s] > 1.0 ? 1.0 : q->Bd[s]);
}

/* SEG_ROWS rows at a time, step by step: the recursion is a chain of dependent exp / sum / log per sample, and
   independent chains keep the core busy where one waits */
#define SEG_ROWS 4
SEG_FMA int segment_posterior_mean(const double* x, const double* rowp, const double* prm, double* out, double* bnd,
                                   int64_t n, int64_t W, int64_t r0, int64_t r1) {
    enum { L = VBYTES / sizeof(double) };
    const double log_h = prm[0], log_q = prm[1], prune = prm[2];
    double* tab = calloc((size_t)(3 * (W + L)), sizeof(double));   /* per length k: hl, and reversed hr, ir */
    seg_row rows[SEG_ROWS];
    int status = !tab;
    for (int i = 0; i < SEG_ROWS; ++i) status |= seg_alloc(&rows[i], n, W);
    if (status) { for (int i = 0; i < SEG_ROWS; ++i) seg_free(&rows[i]); free(tab); return 1; }
    double *hl = tab, *hr = hl + W + L, *ir = hr + W + L;
    for (int64_t k = 1; k <= W; ++k) {
        hl[k] = -0.5 * log((double)k) + (double)(k - 1) * log_q;
        hr[W - k] = hl[k]; ir[W - k] = 1.0 / (double)k;
    }
    for (int64_t r = r0; r < r1 && !status; r += SEG_ROWS) {
        const int nq = r1 - r < SEG_ROWS ? (int)(r1 - r) : SEG_ROWS;
        for (int i = 0; i < nq; ++i)
            seg_setup(&rows[i], x + (r + i) * n, rowp[2 * (r + i)], rowp[2 * (r + i) + 1], n, W);
        for (int64_t e = 1; e <= n && !status; ++e)
            for (int i = 0; i < nq; ++i) status |= seg_forward(&rows[i], e, n, W, hl, hr, log_h, prune);
        if (status) break;
        for (int i = 0; i < nq; ++i) {
            memset(rows[i].D, 0, sizeof(double) * (size_t)(n + 1 + L));
            memset(rows[i].Bd, 0, sizeof(double) * (size_t)(n + 1 + L));
            rows[i].Bd[n] = 1.0;
        }
        for (int64_t e = n; e >= 1; --e)
            for (int i = 0; i < nq; ++i) seg_backward(&rows[i], e, W, ir);
        for (int i = 0; i < nq; ++i) seg_finish(&rows[i], out + (r + i) * n, bnd ? bnd + (r + i) * (n - 1) : 0, n);
    }
    for (int i = 0; i < SEG_ROWS; ++i) seg_free(&rows[i]);
    free(tab);
    return status;
}
#undef SEG_ROWS

/* 10. The posterior mean of a piecewise-polynomial signal (pieces of degree ≤ D, model-averaged over 0 … D), the same
   product-partition recursion as 9, one row at a time, scalar. For an end e the starts s = e − 1, e − 2, … add one
   sample each to the moments Σx, Σz·x, Σz²·x, Σx² (z = (e − 1 − t)/L after the division by L: the piece's own basis,
   exact, no prefix-sum cancellation); per length L the inverse Gram matrices and log-determinants of that basis are
   tables. log φ_d = c_d(L) − p·log R − RSS_d/2 with c_d holding the degrees' prior π_d (prm[3 + d] = log π_d), and
   φ = Σ_d φ_d · (1 − h)^(L−1) · (h if e < n). The forward pass stores T_d(s, e) = α(s)φ_d(s, e)/α(e), one exp each,
   pruned as 9; the backward pass needs no exp: P_d(s, e) = T_d(s, e)·P(a segment ends at e), accumulated from the
   last end down, and each piece's fitted polynomial, expanded in y = t/n, goes to three difference arrays. */
typedef struct { double c[3], g1[3], g2[6], hl, inv; } poly_len;

static void poly_tables(poly_len* tab, int64_t W, double log_q, int64_t degree, const double* log_prior) {
    const double two_pi = 6.283185307179586;
    for (int64_t L = 1; L <= W; ++L) {
        double m[5] = {0, 0, 0, 0, 0};
        for (int64_t t = 0; t < L; ++t) {
            const double z = (double)t / (double)L;
            m[0] += 1.0; m[1] += z; m[2] += z * z; m[3] += z * z * z; m[4] += z * z * z * z;
        }
        poly_len* q = &tab[L];
        q->hl = (double)(L - 1) * log_q;
        q->inv = 1.0 / (double)L;
        q->c[0] = 0.5 * log(two_pi) - 0.5 * log(m[0]) + log_prior[0];
        const double d1 = m[0] * m[2] - m[1] * m[1];
        q->c[1] = -INFINITY; q->c[2] = -INFINITY;
        if (degree >= 1 && L >= 2 && d1 > 0.0) {
            q->g1[0] = m[2] / d1; q->g1[1] = -m[1] / d1; q->g1[2] = m[0] / d1;
            q->c[1] = log(two_pi) - 0.5 * log(d1) + log_prior[1];
        }
        const double a = m[0], b = m[1], c = m[2], d = m[3], e = m[4];
        const double A11 = c * e - d * d, A12 = c * d - b * e, A13 = b * d - c * c;
        const double A22 = a * e - c * c, A23 = b * c - a * d, A33 = a * c - b * b;
        const double det = a * A11 + b * A12 + c * A13;
        if (degree >= 2 && L >= 3 && det > 0.0) {
            q->g2[0] = A11 / det; q->g2[1] = A12 / det; q->g2[2] = A13 / det;
            q->g2[3] = A22 / det; q->g2[4] = A23 / det; q->g2[5] = A33 / det;
            q->c[2] = 1.5 * log(two_pi) - 0.5 * log(det) + log_prior[2];
        }
    }
}

/* log φ_D of one piece from its moments (B1 = Σz·x, B2 = Σz²·x in the piece's basis); fitted coefficients in q0 … q2 */
static inline void poly_terms(const poly_len* q, double logR, double S0, double B1, double B2, double Sxx, double iL,
                              double* l, double* fit) {
    for (int j = 1; j < 6; ++j) fit[j] = 0.0;           /* a degree the piece is too short for weighs 0, its fit too */
    l[0] = q->c[0] - logR - 0.5 * (Sxx - S0 * S0 * iL);
    fit[0] = S0 * iL;
    l[1] = l[2] = -INFINITY;
    if (q->c[1] > -INFINITY) {
        const double a0 = q->g1[0] * S0 + q->g1[1] * B1, a1 = q->g1[1] * S0 + q->g1[2] * B1;
        l[1] = q->c[1] - 2.0 * logR - 0.5 * (Sxx - (a0 * S0 + a1 * B1));
        fit[1] = a0; fit[2] = a1;
    }
    if (q->c[2] > -INFINITY) {
        const double* g = q->g2;
        const double a0 = g[0] * S0 + g[1] * B1 + g[2] * B2, a1 = g[1] * S0 + g[3] * B1 + g[4] * B2,
                     a2 = g[2] * S0 + g[4] * B1 + g[5] * B2;
        l[2] = q->c[2] - 3.0 * logR - 0.5 * (Sxx - (a0 * S0 + a1 * B1 + a2 * B2));
        fit[3] = a0; fit[4] = a1; fit[5] = a2;
    }
}

int segment_poly_posterior(const double* x, const double* rowp, const double* prm, double* out,
                           int64_t n, int64_t W, int64_t degree, int64_t r0, int64_t r1) {
    const double log_h = prm[0], log_q = prm[1], prune = prm[2];
    const int64_t K = degree + 1;                        /* terms per segment: one per degree */
    poly_len* tab = calloc((size_t)(W + 1), sizeof(poly_len));
    double *la = malloc(sizeof(double) * (size_t)(n + 1)), *Bd = malloc(sizeof(double) * (size_t)(n + 1));
    double *acc = malloc(sizeof(double) * 3 * (size_t)(n + 1));
    int64_t *lo = malloc(sizeof(int64_t) * (size_t)(n + 1)), *off = malloc(sizeof(int64_t) * (size_t)(n + 1));
    size_t cap = (size_t)n * 64 * (size_t)K + (size_t)(W * K);
    double* T = malloc(sizeof(double) * cap);
    int status = !tab || !la || !Bd || !acc || !lo || !off || !T;
    if (!status) poly_tables(tab, W, log_q, degree, prm + 3);
    for (int64_t r = r0; r < r1 && !status; ++r) {
        const double* xr = x + r * n;
        const double logR = rowp[r];
        double l[3], fit[6];
        la[0] = 0.0;
        int64_t start = 0;
        size_t used = 0;
        /* forward: T_d(s, e) = α(s)φ_d(s, e)/α(e), the probability of start s and degree d given a segment ends at e */
        for (int64_t e = 1; e <= n && !status; ++e) {
            if (start < e - W) start = e - W;
            lo[e] = start; off[e] = (int64_t)used;
            const int64_t cnt = e - start;
            if (used + (size_t)(cnt * K) > cap) {
                double* grown = realloc(T, sizeof(double) * (2 * cap + (size_t)(W * K)));
                if (!grown) { status = 1; break; }
                T = grown; cap = 2 * cap + (size_t)(W * K);
            }
            double* Te = T + used;
            const double tail = e < n ? log_h : 0.0;
            double S0 = 0.0, S1 = 0.0, S2 = 0.0, Sxx = 0.0, top = -INFINITY;
            for (int64_t s = e - 1; s >= start; --s) {
                const int64_t L = e - s;
                const double xs = xr[s], tau = (double)(L - 1), iL = tab[L].inv;
                S0 += xs; S1 += tau * xs; S2 += tau * tau * xs; Sxx += xs * xs;
                poly_terms(&tab[L], logR, S0, S1 * iL, S2 * iL * iL, Sxx, iL, l, fit);
                const double base = la[s] + tab[L].hl + tail;
                for (int64_t d = 0; d < K; ++d) {
                    const double t = base + l[d];
                    Te[(e - 1 - s) * K + d] = t;
                    top = t > top ? t : top;
                }
            }
            double sum = 0.0;
            {                                                /* e^(t − top) by vexp64_poly, lanes of Te */
                enum { V = VBYTES / sizeof(double) };
                const vf64 zero = {0}, lim = zero - 700.0;
                vf64 vs = zero;
                int64_t j = 0;
                for (; j + V <= cnt * K; j += V) {
                    vf64 t;
                    memcpy(&t, Te + j, sizeof t);
                    t = t - top;
                    const vi64 under = (vi64)(t < lim);             /* e^t below 1e−304 (or a degree the piece */
                    t = (vf64)(((vi64)t & ~under) | ((vi64)lim & under));   /* cannot have): exactly 0 */
                    t = (vf64)((vi64)vexp64_poly(t) & ~under);
                    memcpy(Te + j, &t, sizeof t);
                    vs += t;
                }
                for (int l2 = 0; l2 < V; ++l2) sum += vs[l2];
                for (; j < cnt * K; ++j) { const double t = exp(Te[j] - top); Te[j] = t; sum += t; }
            }
            const double inv = 1.0 / sum;
            for (int64_t j = 0; j < cnt * K; ++j) Te[j] *= inv;
            la[e] = top + log(sum);
            used += (size_t)(cnt * K);
            for (;;) {                                       /* drop the oldest starts below prune of the sum */
                double w = 0.0;
                for (int64_t d = 0; d < K; ++d) w += Te[(e - 1 - start) * K + d];
                if (start >= e - 1 || w >= prune) break;
                ++start;
            }
        }
        if (status) break;
        /* backward (last end first): every e' > e has added its P(e, e') to Bd[e], the probability that a segment
           ends at e; P_d(s, e) = T_d(s, e)·Bd[e]; each piece's fitted polynomial, in y = t/n, to the difference arrays */
        double *D0 = acc, *D1 = acc + (n + 1), *D2 = acc + 2 * (n + 1);
        memset(acc, 0, sizeof(double) * 3 * (size_t)(n + 1));
        memset(Bd, 0, sizeof(double) * (size_t)(n + 1));
        Bd[n] = 1.0;
        for (int64_t e = n; e >= 1; --e) {
            const double* Te = T + off[e];
            const double G = Bd[e], u = (double)(e - 1) / (double)n;
            double S0 = 0.0, S1 = 0.0, S2 = 0.0, Sxx = 0.0;
            for (int64_t s = e - 1; s >= lo[e]; --s) {
                const int64_t L = e - s;
                const double xs = xr[s], tau = (double)(L - 1), iL = tab[L].inv;
                S0 += xs; S1 += tau * xs; S2 += tau * tau * xs; Sxx += xs * xs;
                const double* t = Te + (e - 1 - s) * K;
                double P = 0.0;
                for (int64_t d = 0; d < K; ++d) P += t[d];
                P *= G;
                Bd[s] += P;
                if (P == 0.0) continue;
                poly_terms(&tab[L], logR, S0, S1 * iL, S2 * iL * iL, Sxx, iL, l, fit);
                /* the piece's mean a0 + a1·z + a2·z², z = (e − 1 − t)/L = k(u − y), y = t/n, k = n/L */
                double a0 = t[0] * G * fit[0], a1 = 0.0, a2 = 0.0;
                if (K > 1) { a0 += t[1] * G * fit[1]; a1 += t[1] * G * fit[2]; }
                if (K > 2) { a0 += t[2] * G * fit[3]; a1 += t[2] * G * fit[4]; a2 = t[2] * G * fit[5]; }
                const double k = (double)n * iL;
                const double c0 = a0 + k * u * (a1 + a2 * k * u), c1 = -k * (a1 + 2.0 * a2 * k * u), c2 = a2 * k * k;
                D0[s] += c0; D0[e] -= c0; D1[s] += c1; D1[e] -= c1; D2[s] += c2; D2[e] -= c2;
            }
        }
        double q0 = 0.0, q1 = 0.0, q2 = 0.0;
        for (int64_t t = 0; t < n; ++t) {
            q0 += D0[t]; q1 += D1[t]; q2 += D2[t];
            const double y = (double)t / (double)n;
            out[r * n + t] = q0 + y * (q1 + y * q2);
        }
    }
    free(tab); free(la); free(Bd); free(acc); free(lo); free(off); free(T);
    return status;
}
"""

# the exported kernels ('*' is f32 or f64): (pointer arguments, int64 arguments), as declared in C_SOURCE
_SIGNATURES = {'minplus_*_forward': (4, 11), 'minplus_*_backward': (4, 11),
               'shift_*_forward': (6, 6), 'shift_*_backward': (10, 6),
               'pool2_*_forward': (3, 4), 'pool2_*_backward': (3, 4),
               'poolround_*_forward': (3, 4), 'poolround_*_backward': (3, 4),
               'flux_*_forward': (5, 6), 'flux_*_backward': (7, 6), 'tridiagonal_*_solve': (5, 3),
               'ratflux_*_forward': (3, 6), 'ratflux_*_backward': (5, 6)}
# float64 only
_SIGNATURES_F64 = {'tail_irls_weights': (4, 3), 'tail_knot_weights': (6, 4), 'segment_posterior_mean': (5, 4),
                   'segment_poly_posterior': (4, 5)}
# float32 and float64, named in full
_SIGNATURES_OTHER = {'tail_lag_features_f32': (4, 4), 'tail_lag_features_f64': (4, 4), 'symbol_apply_sumsq_f32': (4, 4),
                      'symbol_power_f32': (5, 7)}

_lock = threading.Lock()
_state = {'tried': False, 'lib': None, 'error': ''}


def _cache_dir() -> str:
    return os.environ.get('PDEBLOCKS_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'pdeblocks')


def _compiler() -> str:
    return os.environ.get('CC') or 'cc'


def _build(flags: List[str], path: str) -> None:
    """Compile ``C_SOURCE`` into ``path`` atomically (temporary file in the same folder, then rename)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src = os.path.join(tmp, 'morphology.c')
        with open(src, 'w') as f:
            f.write(C_SOURCE)
        out = os.path.join(tmp, 'lib.so')
        subprocess.run([_compiler(), *flags, src, '-o', out, '-lm'], check=True, capture_output=True, timeout=120)
        os.replace(out, path)


def _machine_tag() -> str:
    """Identifies the CPU for ``-march=native`` builds (a cache shared between machines must not mix them)."""
    tag = platform.machine() + platform.system()
    try:
        with open('/proc/cpuinfo') as f:
            tag += ''.join(line for line in f if line.startswith(('model name', 'flags')))[:4096]
    except OSError:
        pass
    return tag


def _load() -> Optional[ctypes.CDLL]:
    base = ['-O3', '-shared', '-fPIC', '-std=c99']
    errors = []
    # native ISA if the compiler knows it; auto-vectorised loops at 128 bits (x86 compilers), whose short rows
    # (10-wide planes) 512-bit vectors leave scalar: convection backward −31%, 2×2 pooling −65%, results
    # bit-identical (no reassociation); the explicit VBYTES vectors of the min-plus kernel are unaffected
    for flags in (base + ['-march=native', '-mprefer-vector-width=128'], base + ['-march=native'], base):
        key = hashlib.sha256('\0'.join([C_SOURCE, _compiler(), *flags, _machine_tag(), sys.platform]).encode())
        path = os.path.join(_cache_dir(), f'morphology_{key.hexdigest()[:16]}.so')
        try:
            if not os.path.exists(path):
                _build(flags, path)
            lib = ctypes.CDLL(path)
        except (OSError, subprocess.SubprocessError) as e:
            errors.append(f'{" ".join(flags)}: {e}')
            continue
        for name, (pointers, ints) in _SIGNATURES.items():
            for precision in ('f32', 'f64'):
                fn = getattr(lib, name.replace('*', precision))
                fn.argtypes = [ctypes.c_void_p] * pointers + [ctypes.c_int64] * ints
                fn.restype = ctypes.c_int
        for name, (pointers, ints) in {**_SIGNATURES_F64, **_SIGNATURES_OTHER}.items():
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.c_void_p] * pointers + [ctypes.c_int64] * ints
            fn.restype = ctypes.c_int
        return lib
    _state['error'] = '; '.join(errors)
    return None


def native_library() -> Optional[ctypes.CDLL]:
    """The compiled kernel (built and cached on first call), or None if disabled or no compiler works."""
    if os.environ.get('PDEBLOCKS_NATIVE', '1') == '0':
        return None
    if not _state['tried']:
        with _lock:
            if not _state['tried']:
                _state['lib'] = _load()
                _state['tried'] = True
    return _state['lib']


def native_available() -> bool:
    """True if the fused C kernel is in use on CPU (see the module docstring for when it is not)."""
    return native_library() is not None


_pool: dict = {}


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """One pool per (process, size): a pool inherited through fork has no threads in the child."""
    key = (os.getpid(), workers)
    if key not in _pool:
        _pool[key] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix='pdeblocks-native')
    return _pool[key]


def split_ranges(n: int, parts: int) -> List[Tuple[int, int]]:
    """[(begin, end)] covering range(n) in ≤ parts near-equal pieces."""
    parts = max(1, min(parts, n))
    step = math.ceil(n / parts)
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def run_ranges(fn, ranges) -> list:
    """fn(*r) for every r of ``ranges``, on the shared thread pool when there are several (ctypes frees the GIL)."""
    if len(ranges) == 1:
        return [fn(*ranges[0])]
    return list(_thread_pool(len(ranges)).map(lambda r: fn(*r), ranges))
