"""OpenCL C source of the native engine's kernels (float32 math; weights float32 or float16).

Activations are row views: element (r, c) of an input lives at `buf[off + r * stride + c]`.
Outputs are written contiguously. `LS` (the work-group size of the reducing kernels) and
`WHALF` (weights stored as half, read with the core `vload_half*` functions, so no cl_khr_fp16
is needed) are set when the program is built.
"""

SOURCE = r"""
#ifdef WHALF
  typedef half wtype;
  #define LOADW(p, i) vload_half((i), (p))
  #define LOADW4(p, i) vload_half4(0, (p) + (i))
#else
  typedef float wtype;
  #define LOADW(p, i) ((p)[i])
  #define LOADW4(p, i) vload4(0, (p) + (i))
#endif

/* Sum `v` over the work-group (LS lanes); every lane gets the result. */
inline float group_sum(float v, __local float* scratch) {
    int lane = get_local_id(0);
    scratch[lane] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int half_n = LS / 2; half_n > 0; half_n >>= 1) {
        if (lane < half_n) scratch[lane] += scratch[lane + half_n];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float out = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return out;
}

inline float group_max(float v, __local float* scratch) {
    int lane = get_local_id(0);
    scratch[lane] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int half_n = LS / 2; half_n > 0; half_n >>= 1) {
        if (lane < half_n) scratch[lane] = fmax(scratch[lane], scratch[lane + half_n]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float out = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return out;
}

/* y[r, o] = x[r, :] . W[o, :] (+ b[o]); one work-group per (o, r); lanes split the K axis. */
__kernel void linear_rows(__global const float* x, int xoff, int xstride,
                          __global const wtype* W, __global const float* bias, int has_bias,
                          __global float* y, int K, int N) {
    __local float scratch[LS];
    int o = get_group_id(0);
    int r = get_group_id(1);
    int lane = get_local_id(0);
    const __global float* xr = x + xoff + (size_t)r * xstride;
    const __global wtype* wr = W + (size_t)o * K;
    float acc = 0.0f;
    int k4 = K & ~3;
    for (int k = lane * 4; k < k4; k += LS * 4) {
        acc += dot(vload4(0, xr + k), LOADW4(wr, k));
    }
    for (int k = k4 + lane; k < K; k += LS) acc += xr[k] * LOADW(wr, k);
    acc = group_sum(acc, scratch);
    if (lane == 0) y[(size_t)r * N + o] = acc + (has_bias ? bias[o] : 0.0f);
}

/* y[r, o] for a few rows on CPU devices: OB outputs of one row per work-item, lane-wise
   float4 accumulators, no barriers (PoCL runs work-group barriers slowly). */
__kernel void linear_vec(__global const float* x, int xoff, int xstride,
                         __global const wtype* W, __global const float* bias, int has_bias,
                         __global float* y, int K, int N) {
    int o0 = get_global_id(0) * 4;
    int r = get_global_id(1);
    if (o0 >= N) return;
    const __global float* xr = x + xoff + (size_t)r * xstride;
    const __global wtype* wr[4];
    for (int j = 0; j < 4; ++j) wr[j] = W + (size_t)min(o0 + j, N - 1) * K;
    float4 acc[4];
    for (int j = 0; j < 4; ++j) acc[j] = (float4)(0.0f);
    int k4 = K & ~3;
    for (int k0 = 0; k0 < k4; k0 += 64) {
        int kend = min(k0 + 64, k4);
        float4 part[4];
        for (int j = 0; j < 4; ++j) part[j] = (float4)(0.0f);
        for (int k = k0; k < kend; k += 4) {
            float4 a = vload4(0, xr + k);
            for (int j = 0; j < 4; ++j) part[j] += a * LOADW4(wr[j], k);
        }
        for (int j = 0; j < 4; ++j) acc[j] += part[j];
    }
    for (int j = 0; j < 4; ++j) {
        int o = o0 + j;
        if (o >= N) break;
        float4 s = acc[j];
        float sum = (s.x + s.y) + (s.z + s.w);
        for (int k = k4; k < K; ++k) sum += xr[k] * LOADW(wr[j], k);
        y[(size_t)r * N + o] = sum + (has_bias ? bias[o] : 0.0f);
    }
}

/* The same product for many rows, RB rows x OB outputs per work-item in registers (no local
   memory: fast on CPU devices such as PoCL, fair on GPUs). Lane-wise float4 accumulators
   (summed across lanes at the end) vectorise well; partial sums over CH elements keep the
   rounding error near that of a pairwise sum. Rows/outputs past the end are clamped on read
   and skipped on write. */
#define RB 4
#define OB 4
#define CH 64
__kernel void linear_block(__global const float* x, int xoff, int xstride,
                           __global const wtype* W, __global const float* bias, int has_bias,
                           __global float* y, int K, int N, int T) {
    int o0 = get_global_id(0) * OB;
    int r0 = get_global_id(1) * RB;
    if (o0 >= N || r0 >= T) return;
    const __global float* xr[RB];
    const __global wtype* wr[OB];
    for (int i = 0; i < RB; ++i) xr[i] = x + xoff + (size_t)min(r0 + i, T - 1) * xstride;
    for (int j = 0; j < OB; ++j) wr[j] = W + (size_t)min(o0 + j, N - 1) * K;
    float4 acc[RB][OB];
    for (int i = 0; i < RB; ++i)
        for (int j = 0; j < OB; ++j) acc[i][j] = (float4)(0.0f);
    int k4 = K & ~3;
    for (int k0 = 0; k0 < k4; k0 += CH) {
        int kend = min(k0 + CH, k4);
        float4 part[RB][OB];
        for (int i = 0; i < RB; ++i)
            for (int j = 0; j < OB; ++j) part[i][j] = (float4)(0.0f);
        for (int k = k0; k < kend; k += 4) {
            float4 a[RB], b[OB];
            for (int i = 0; i < RB; ++i) a[i] = vload4(0, xr[i] + k);
            for (int j = 0; j < OB; ++j) b[j] = LOADW4(wr[j], k);
            for (int i = 0; i < RB; ++i)
                for (int j = 0; j < OB; ++j) part[i][j] += a[i] * b[j];
        }
        for (int i = 0; i < RB; ++i)
            for (int j = 0; j < OB; ++j) acc[i][j] += part[i][j];
    }
    for (int i = 0; i < RB; ++i) {
        int r = r0 + i;
        if (r >= T) break;
        for (int j = 0; j < OB; ++j) {
            int o = o0 + j;
            if (o >= N) break;
            float4 s = acc[i][j];
            float sum = (s.x + s.y) + (s.z + s.w);
            for (int k = k4; k < K; ++k) sum += xr[i][k] * LOADW(wr[j], k);
            y[(size_t)r * N + o] = sum + (has_bias ? bias[o] : 0.0f);
        }
    }
}

/* The same product for many rows: TS x TS output tiles through local memory. */
__kernel void linear_tiled(__global const float* x, int xoff, int xstride,
                           __global const wtype* W, __global const float* bias, int has_bias,
                           __global float* y, int K, int N, int T) {
    __local float xs[TS][TS + 1];
    __local float ws[TS][TS + 1];
    int lo = get_local_id(0), lr = get_local_id(1);
    int o = get_group_id(0) * TS + lo;
    int r = get_group_id(1) * TS + lr;
    int wrow = get_group_id(0) * TS + lr;   /* the W row this lane loads */
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TS) {
        int k = k0 + lo;
        xs[lr][lo] = (r < T && k < K) ? x[xoff + (size_t)r * xstride + k] : 0.0f;
        ws[lr][lo] = (wrow < N && k < K) ? LOADW(W, (size_t)wrow * K + k) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        float part = 0.0f;  /* blocked summation: rounding error grows with TS + K / TS */
        for (int j = 0; j < TS; ++j) part += xs[lr][j] * ws[lo][j];
        acc += part;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (r < T && o < N) y[(size_t)r * N + o] = acc + (has_bias ? bias[o] : 0.0f);
}

/* LLaMA RMSNorm, one work-group per row. */
__kernel void rms_norm(__global const float* x, int xoff, int xstride,
                       __global const float* w, __global float* y, int D, float eps) {
    __local float scratch[LS];
    int r = get_group_id(0);
    int lane = get_local_id(0);
    const __global float* xr = x + xoff + (size_t)r * xstride;
    float ss = 0.0f;
    for (int c = lane; c < D; c += LS) ss += xr[c] * xr[c];
    ss = group_sum(ss, scratch);
    float scale = 1.0f / sqrt(ss / (float)D + eps);
    for (int c = lane; c < D; c += LS) y[(size_t)r * D + c] = (xr[c] * scale) * w[c];
}

/* LayerNorm (biased variance), one work-group per row. */
__kernel void layer_norm(__global const float* x, int xoff, int xstride,
                         __global const float* w, __global const float* b,
                         __global float* y, int D, float eps) {
    __local float scratch[LS];
    int r = get_group_id(0);
    int lane = get_local_id(0);
    const __global float* xr = x + xoff + (size_t)r * xstride;
    float s = 0.0f;
    for (int c = lane; c < D; c += LS) s += xr[c];
    float mean = group_sum(s, scratch) / (float)D;
    float v = 0.0f;
    for (int c = lane; c < D; c += LS) { float d = xr[c] - mean; v += d * d; }
    float scale = 1.0f / sqrt(group_sum(v, scratch) / (float)D + eps);
    for (int c = lane; c < D; c += LS) y[(size_t)r * D + c] = (xr[c] - mean) * scale * w[c] + b[c];
}

__kernel void add(__global const float* a, int aoff, int astride,
                  __global const float* b, int boff, int bstride,
                  __global float* y, int C) {
    int c = get_global_id(0), r = get_global_id(1);
    y[(size_t)r * C + c] = a[aoff + (size_t)r * astride + c] + b[boff + (size_t)r * bstride + c];
}

__kernel void copy_rows(__global const float* a, int aoff, int astride,
                        __global float* y, int C) {
    int c = get_global_id(0), r = get_global_id(1);
    y[(size_t)r * C + c] = a[aoff + (size_t)r * astride + c];
}

/* silu(gate) * up on a fused [gate | up] row of width 2 H. */
__kernel void swiglu(__global const float* x, int xoff, int xstride, __global float* y, int H) {
    int c = get_global_id(0), r = get_global_id(1);
    const __global float* xr = x + xoff + (size_t)r * xstride;
    float g = xr[c];
    y[(size_t)r * H + c] = g / (1.0f + exp(-g)) * xr[H + c];
}

/* GELU, tanh approximation (GPT-2's "gelu_new"). */
__kernel void gelu(__global const float* x, int xoff, int xstride, __global float* y, int C) {
    int c = get_global_id(0), r = get_global_id(1);
    float v = x[xoff + (size_t)r * xstride + c];
    float inner = tanh(0.7978845608028654f * (v + 0.044715f * v * v * v));
    y[(size_t)r * C + c] = 0.5f * v * (1.0f + inner);
}

/* Rotary embedding ("rotate half") of a (T, heads, hd) view; cos/sin rows start at pos0. */
__kernel void rope(__global const float* x, int xoff, int xstride,
                   __global const float* cosb, __global const float* sinb, int pos0,
                   __global float* y, int heads, int hd) {
    int i = get_global_id(0), h = get_global_id(1), r = get_global_id(2);
    int half_d = hd / 2;
    const __global float* xr = x + xoff + (size_t)r * xstride + h * hd;
    float c = cosb[(size_t)(pos0 + r) * half_d + i];
    float s = sinb[(size_t)(pos0 + r) * half_d + i];
    float x1 = xr[i], x2 = xr[half_d + i];
    __global float* yr = y + ((size_t)r * heads + h) * hd;
    yr[i] = x1 * c - x2 * s;
    yr[half_d + i] = x2 * c + x1 * s;
}

/* Write (T, kv_heads, hd) keys and values at positions start.. of one layer's cache,
   laid out [kv_heads, max_ctx, hd]. */
__kernel void store_kv(__global const float* k, int koff, int kstride,
                       __global const float* v, int voff, int vstride,
                       __global float* K, __global float* V, long layer_off,
                       int max_ctx, int start, int hd) {
    int d = get_global_id(0), h = get_global_id(1), r = get_global_id(2);
    size_t dst = layer_off + ((size_t)h * max_ctx + start + r) * hd + d;
    K[dst] = k[koff + (size_t)r * kstride + h * hd + d];
    V[dst] = v[voff + (size_t)r * vstride + h * hd + d];
}

/* Causal grouped-query attention: one work-group per (head, query row). Query row r sits at
   position start + r and sees positions 0 .. start + r. `scores` is scratch (T, heads, end). */
__kernel void attention(__global const float* q, int qoff, int qstride,
                        __global const float* K, __global const float* V, long layer_off,
                        __global float* scores, __global float* y,
                        int heads, int group, int hd, int max_ctx, int start, int end,
                        float scale) {
    __local float scratch[LS];
    int h = get_group_id(0), r = get_group_id(1);
    int lane = get_local_id(0);
    int limit = start + r + 1;
    const __global float* qr = q + qoff + (size_t)r * qstride + h * hd;
    const __global float* Kh = K + layer_off + (size_t)(h / group) * max_ctx * hd;
    const __global float* Vh = V + layer_off + (size_t)(h / group) * max_ctx * hd;
    __global float* sc = scores + ((size_t)r * heads + h) * end;
    float m = -INFINITY;
    for (int p = lane; p < limit; p += LS) {
        const __global float* kp = Kh + (size_t)p * hd;
        float s = 0.0f;
        int d = 0;
        for (; d + 3 < hd; d += 4) s += dot(vload4(0, qr + d), vload4(0, kp + d));
        for (; d < hd; ++d) s += qr[d] * kp[d];
        s *= scale;
        sc[p] = s;
        m = fmax(m, s);
    }
    m = group_max(m, scratch);
    float total = 0.0f;
    for (int p = lane; p < limit; p += LS) {
        float e = exp(sc[p] - m);
        sc[p] = e;
        total += e;
    }
    total = group_sum(total, scratch);
    barrier(CLK_GLOBAL_MEM_FENCE);
    float inv = 1.0f / total;
    __global float* yr = y + ((size_t)r * heads + h) * hd;
    for (int d = lane; d < hd; d += LS) {
        float acc = 0.0f;
        for (int p = 0; p < limit; ++p) acc += sc[p] * Vh[(size_t)p * hd + d];
        yr[d] = acc * inv;
    }
}
"""
