"""Fused C kernels for M₂ = ℝ² ⋊ S¹, built on first use with the system C compiler.

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

The shared library is compiled from the source below (``cc -O3 -shared -fPIC``, plus ``-march=native``
when the compiler accepts it) into ``$PDEBLOCKS_CACHE`` (default ``~/.cache/pdeblocks``), keyed by a
hash of source, flags, compiler and machine, and loaded with ``ctypes`` (calls release the GIL, so
plane ranges run in parallel threads). If no compiler works, or ``PDEBLOCKS_NATIVE=0``,
:func:`native_library` returns None and callers use torch ops, which give the same values (and,
for the min-plus convolution, the same winners).

One module of about 400 lines because 288 of them are the C source (:data:`C_SOURCE`), which is hashed,
compiled and loaded as one unit; the Python that caches, builds and loads it is about 100 lines.
"""
import ctypes
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
from typing import List, Optional

__all__ = ['native_library', 'native_available', 'C_SOURCE']


C_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

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

#define DEFINE_MINPLUS(T, VT, IT, MT, NAME)                                                              \
enum { NAME##_LANES = VBYTES / sizeof(T), NAME##_BLOCK = NV * (VBYTES / sizeof(T)) };                           \
/* flat positions [m0, m0 + BLOCK) of one plane through all J offsets; src[j] points at offset j's      \
   source. The running minimum and winner of the block stay in registers. */                           \
static void NAME##_block(const T* const* src, const T* kk, int64_t J, int64_t m0, T* best, IT* arg) {   \
    VT bv[NV];                                                                                          \
    MT av[NV];                                                                                          \
    for (int q = 0; q < NV; ++q) { bv[q] = (VT){0} + (T)INFINITY; av[q] = (MT){0}; }                    \
    for (int64_t j = 0; j < J; ++j) {                                                                   \
        const T* s = src[j] + m0;                                                                       \
        const VT kv = (VT){0} + kk[j];                                                                  \
        const MT jv = (MT){0} + (IT)j;                                                                  \
        for (int q = 0; q < NV; ++q) {                                                                  \
            VT v;                                                                                       \
            memcpy(&v, s + q * NAME##_LANES, sizeof v);                                                 \
            v += kv;                                                                                    \
            const MT m = v < bv[q]; /* lanes: -1 where strictly better */                               \
            bv[q] = (VT)(((MT)v & m) | ((MT)bv[q] & ~m));                                               \
            av[q] = (jv & m) | (av[q] & ~m);                                                            \
        }                                                                                               \
    }                                                                                                   \
    memcpy(best + m0, bv, sizeof bv);                                                                   \
    memcpy(arg + m0, av, sizeof av);                                                                    \
}                                                                                                       \
static void NAME##_tail(const T* const* src, const T* kk, int64_t J, int64_t m0, int64_t m1,            \
                        T* restrict best, IT* restrict arg) {                                      \
    for (int64_t m = m0; m < m1; ++m) { best[m] = (T)INFINITY; arg[m] = 0; }                            \
    for (int32_t j = 0; j < J; ++j) {                                                                   \
        const T* restrict s = src[j];                                                                   \
        const T kv = kk[j];                                                                             \
        for (int64_t m = m0; m < m1; ++m) {                                                             \
            const T v = s[m] + kv;                                                                      \
            if (v < best[m]) { best[m] = v; arg[m] = (IT)j; }                                               \
        }                                                                                               \
    }                                                                                                   \
}                                                                                                       \
/* (b, c) blocks q in [q0, q1) of x: [B, C, Or, H, W]; k: [C, Or, kt, kh, kw]; out, win: [B, C, Or, H, W].  \
   sign = +1: out = min_h x(h) + k (erosion); sign = -1: out = -min_h (-x(h) + k) = max_h x(h) - k      \
   (dilation). Each block is copied once, times sign, into a buffer padded with +inf by (rh, rw); an     \
   output plane is computed in that buffer's row stride Wp (columns x >= W discarded), so the offset    \
   (i, l) is the constant shift i*Wp + l of a flat index. */                                           \
int NAME##_forward(const T* x, const T* k, T* out, int16_t* win, int64_t C, int64_t Or, int64_t H,      \
                   int64_t W, int64_t kt, int64_t kh, int64_t kw, int64_t sign, int64_t q0, int64_t q1) { \
    const int64_t J = kt * kh * kw, rt = kt / 2, rh = kh / 2, rw = kw / 2;                              \
    const int64_t Hp = H + kh - 1, Wp = W + kw - 1, HW = H * W, P = Hp * Wp;                            \
    const int64_t n = H * Wp - (kw - 1); /* last needed flat position + 1 */                            \
    const T sg = sign < 0 ? (T)-1 : (T)1;                                                               \
    T* xb = (T*)malloc(sizeof(T) * (size_t)(Or * P));                                                   \
    T* best = (T*)malloc(sizeof(T) * (size_t)(n > 0 ? n : 1));                                          \
    IT* arg = (IT*)malloc(sizeof(IT) * (size_t)(n > 0 ? n : 1));                                        \
    const T** src = (const T**)malloc(sizeof(T*) * (size_t)J);                                          \
    if (!xb || !best || !arg || !src) { free(xb); free(best); free(arg); free(src); return 1; }         \
    for (int64_t m = 0; m < Or * P; ++m) xb[m] = (T)INFINITY;                                           \
    for (int64_t q = q0; q < q1; ++q) {                                                                 \
        const int64_t c = q % C;                                                                        \
        for (int64_t t = 0; t < Or; ++t)                                                                \
            for (int64_t y = 0; y < H; ++y) {                                                           \
                const T* xr = x + (q * Or + t) * HW + y * W;                                            \
                T* br = xb + t * P + (y + rh) * Wp + rw;                                                \
                for (int64_t xx = 0; xx < W; ++xx) br[xx] = sg * xr[xx];                                \
            }                                                                                           \
        for (int64_t o = 0; o < Or; ++o) {                                                              \
            const T* kk = k + (c * Or + o) * J;                                                         \
            int64_t j = 0;                                                                              \
            for (int64_t d = 0; d < kt; ++d) {                                                          \
                const T* plane = xb + (((o + d - rt) % Or + Or) % Or) * P;                              \
                for (int64_t i = 0; i < kh; ++i)                                                        \
                    for (int64_t l = 0; l < kw; ++l) src[j++] = plane + i * Wp + l;                     \
            }                                                                                           \
            const int64_t full = n / NAME##_BLOCK * NAME##_BLOCK;                                       \
            for (int64_t m0 = 0; m0 < full; m0 += NAME##_BLOCK) NAME##_block(src, kk, J, m0, best, arg); \
            NAME##_tail(src, kk, J, full, n, best, arg);                                                \
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
    free(xb);                                                                                           \
    free(best);                                                                                         \
    free(arg);                                                                                          \
    free(src);                                                                                          \
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
    if (!delta) return 1;                                                                               \
    for (int64_t o = 0; o < Or; ++o)                                                                    \
        for (int64_t j = 0; j < J; ++j) {                                                               \
            const int64_t d = j / (kh * kw), i = (j / kw) % kh, l = j % kw;                             \
            const int64_t q = ((o + d - rt) % Or + Or) % Or;                                            \
            delta[o * J + j] = (q - o) * HW + (i - rh) * W + (l - rw);                                  \
        }                                                                                               \
    for (int64_t b = 0; b < B; ++b) {                                                                   \
        for (int64_t c = c0; c < c1; ++c) {                                                             \
            for (int64_t o = 0; o < Or; ++o) {                                                          \
                const int64_t p = (b * C + c) * Or + o;                                                 \
                const T* gp = g + p * HW;                                                               \
                const int16_t* wp = win + p * HW;                                                       \
                if (gk) {                                                                               \
                    double* gkp = gk + (c * Or + o) * J;                                                \
                    const double sg = sign < 0 ? -1.0 : 1.0;                                            \
                    for (int64_t n = 0; n < HW; ++n) gkp[wp[n]] += sg * (double)gp[n];                  \
                }                                                                                       \
                if (gx) {                                                                               \
                    T* gxp = gx + p * HW;                                                               \
                    const int64_t* dp = delta + o * J;                                                  \
                    for (int64_t n = 0; n < HW; ++n) gxp[n + dp[wp[n]]] += gp[n];                       \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    free(delta);                                                                                        \
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
/* gradients for blocks [q0, q1): gx (owned by the block), and partial sums over these blocks of       \
   dat[c] = Σ g ∂out/∂at, dsx[c, o] = Σ g ∂out/∂sx, dsy[c, o] = Σ g ∂out/∂sy (float64, caller sums) */  \
int NAME##_backward(const T* x, const T* g, T* gx, const int64_t* nt, const T* at, const T* sx,         \
                    const T* sy, double* dat, double* dsx, double* dsy, int64_t C, int64_t Or,          \
                    int64_t H, int64_t W, int64_t q0, int64_t q1) {                                     \
    const int64_t HW = H * W, Wp = W + 2, Hp = H + 2;                                                   \
    T* gp = (T*)calloc((size_t)(Hp * Wp), sizeof(T));                                                   \
    T* gg = (T*)calloc((size_t)(Hp * Wp), sizeof(T));                                                   \
    if (!gp || !gg) { free(gp); free(gg); return 1; }                                                   \
    for (int64_t q = q0; q < q1; ++q) {                                                                 \
        const int64_t c = q % C;                                                                        \
        for (int64_t o = 0; o < Or; ++o) {                                                              \
            const int64_t p0 = ((o + nt[c]) % Or + Or) % Or, p1 = (p0 + 1) % Or;                        \
            const T* f0 = x + (q * Or + p0) * HW;                                                       \
            const T* f1 = x + (q * Or + p1) * HW;                                                       \
            NAME##_blend(f0, f1, at[c], gp, H, W);                                                      \
            for (int64_t m = 0; m < Hp * Wp; ++m) gg[m] = 0;                                            \
            const NAME##_geom ge = NAME##_geometry(sx[c * Or + o], sy[c * Or + o], H, W);                \
            const T wy0 = 1 - ge.ay, wy1 = ge.ay, wx0 = 1 - ge.ax, wx1 = ge.ax;                         \
            const T* gop = g + (q * Or + o) * HW;                                                       \
            double ssx = 0, ssy = 0;                                                                    \
            for (int64_t y = 0; y < H; ++y) {                                                           \
                const int64_t ys = y + ge.ny + 1;                                                       \
                const T* grow = gop + y * W;                                                            \
                const int in0 = ys >= 0 && ys < Hp, in1 = ys + 1 >= 0 && ys + 1 < Hp;                   \
                if (!in0 && !in1) continue;                                                             \
                const T* r0 = in0 ? gp + ys * Wp + ge.nx + 1 : 0;                                       \
                const T* r1 = in1 ? gp + (ys + 1) * Wp + ge.nx + 1 : 0;                                 \
                T* s0 = in0 ? gg + ys * Wp + ge.nx + 1 : 0;                                             \
                T* s1 = in1 ? gg + (ys + 1) * Wp + ge.nx + 1 : 0;                                       \
                T ax_acc = 0, ay_acc = 0;                                                               \
                for (int64_t xx = ge.lo; xx < ge.hi; ++xx) {                                            \
                    const T gv = grow[xx];                                                              \
                    const T a0 = in0 ? r0[xx] : 0, b0 = in0 ? r0[xx + 1] : 0;                           \
                    const T a1 = in1 ? r1[xx] : 0, b1 = in1 ? r1[xx + 1] : 0;                           \
                    ax_acc += gv * (wy0 * (b0 - a0) + wy1 * (b1 - a1));                                 \
                    ay_acc += gv * ((wx0 * a1 + wx1 * b1) - (wx0 * a0 + wx1 * b0));                     \
                }                                                                                       \
                if (in0) for (int64_t xx = ge.lo; xx < ge.hi; ++xx) s0[xx] += wy0 * wx0 * grow[xx];     \
                if (in0) for (int64_t xx = ge.lo; xx < ge.hi; ++xx) s0[xx + 1] += wy0 * wx1 * grow[xx]; \
                if (in1) for (int64_t xx = ge.lo; xx < ge.hi; ++xx) s1[xx] += wy1 * wx0 * grow[xx];     \
                if (in1) for (int64_t xx = ge.lo; xx < ge.hi; ++xx) s1[xx + 1] += wy1 * wx1 * grow[xx]; \
                ssx += ax_acc;                                                                          \
                ssy += ay_acc;                                                                          \
            }                                                                                           \
            dsx[c * Or + o] += ssx;                                                                     \
            dsy[c * Or + o] += ssy;                                                                     \
            /* G = f0 + at (f1 - f0): interior of gg to gx and to dat */                                \
            T* g0 = gx + (q * Or + p0) * HW;                                                            \
            T* g1 = gx + (q * Or + p1) * HW;                                                            \
            const T a = at[c];                                                                          \
            double sat = 0;                                                                             \
            for (int64_t y = 0; y < H; ++y) {                                                           \
                const T* r = gg + (y + 1) * Wp + 1;                                                     \
                const T* u0 = f0 + y * W;                                                               \
                const T* u1 = f1 + y * W;                                                               \
                T* v0 = g0 + y * W;                                                                     \
                T* v1 = g1 + y * W;                                                                     \
                T acc = 0;                                                                              \
                for (int64_t xx = 0; xx < W; ++xx) {                                                    \
                    v0[xx] += (1 - a) * r[xx];                                                          \
                    v1[xx] += a * r[xx];                                                                \
                    acc += r[xx] * (u1[xx] - u0[xx]);                                                   \
                }                                                                                       \
                sat += acc;                                                                             \
            }                                                                                           \
            dat[c] += sat;                                                                              \
        }                                                                                               \
    }                                                                                                   \
    free(gp);                                                                                           \
    free(gg);                                                                                           \
    return 0;                                                                                           \
}

DEFINE_SHIFT(float, shift_f32)
DEFINE_SHIFT(double, shift_f64)

DEFINE_MINPLUS(float, vf32, int32_t, vi32, minplus_f32)
DEFINE_MINPLUS(double, vf64, int64_t, vi64, minplus_f64)
"""

# the exported kernels ('*' is f32 or f64): (pointer arguments, int64 arguments), as declared in C_SOURCE
_SIGNATURES = {'minplus_*_forward': (4, 10), 'minplus_*_backward': (4, 11),
               'shift_*_forward': (6, 6), 'shift_*_backward': (10, 6)}

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
    for flags in (base + ['-march=native'], base):  # native ISA if the compiler knows it
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
