// Fireside's binding over ggml's CPU kernels: quantized (and fp16/bf16/fp32) weight matrices held
// in ggml's layout, multiplied by fp32 activations written straight into the caller's memory.
//
// One matmul = one two-node ggml graph (x, W -> y) computed with ggml_graph_compute on a
// persistent threadpool and a persistent work buffer, so a call allocates nothing big and starts
// no threads. Weights of the types ggml repacks on this CPU (Q4_0, Q4_K, ... on AVX2: the
// "CPU_REPACK" extra buffer type, rows interleaved 8 at a time) are repacked at load; the rest
// live in a plain CPU buffer, which also serves row lookups (embeddings) through ggml's
// to_float. Errors never abort: every input is checked here before ggml can assert on it, and
// the message is kept per thread for fs_ggml_last_error().
//
// Loaded from Python with ctypes (fireside/kernels/ggml.py). Only the fs_ggml_* symbols are
// exported; the static ggml inside is hidden (CMakeLists.txt), so another ggml in the process
// (llama-cpp-python, say) cannot clash with it.

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

#define FS_API __attribute__((visibility("default")))

// Bumped when a signature below changes; ggml.py refuses a library of another version.
#define FS_GGML_ABI 3

enum { FS_FLAG_PLAIN = 1 };  // keep the plain layout (row lookups, dequantize): no repack

struct fs_matrix {
    struct ggml_context * ctx;  // holds the weight tensor's header
    struct ggml_tensor * w;     // ne = [n_in, n_out]
    ggml_backend_buffer_t buf;  // the weight bytes (CPU or CPU_REPACK)
    int repacked;
};

static _Thread_local char fs_error[512];

static void fs_set_error(const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fs_error, sizeof fs_error, fmt, ap);
    va_end(ap);
}

// ggml's log goes to stderr by default; keep warnings and errors only.
static void fs_log(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

// State shared by every matmul: the threadpool, the work buffer and the graph arena. One mutex:
// ggml_graph_compute runs one graph at a time on a threadpool anyway.
static pthread_mutex_t fs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fs_once = PTHREAD_ONCE_INIT;
static struct ggml_threadpool * fs_pool;
static int fs_pool_threads;
static uint8_t * fs_work;
static size_t fs_work_size;
static uint8_t * fs_arena;
static size_t fs_arena_size;
static ggml_backend_buffer_type_t fs_repack_buft;  // NULL when this build/CPU has none

static void fs_init(void) {
    ggml_log_set(fs_log, NULL);
    ggml_cpu_init();
    // The repack buffer type is reached the way llama.cpp reaches it: the CPU device's extra
    // buffer types. (Not ggml_backend_cpu_repack_buffer_type(): an internal C++ symbol.)
    ggml_backend_reg_t reg = ggml_backend_cpu_reg();
    ggml_backend_dev_t dev = ggml_backend_reg_dev_get(reg, 0);
    ggml_backend_dev_get_extra_bufts_t get_extra =
        (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    if (get_extra != NULL) {
        for (ggml_backend_buffer_type_t * b = get_extra(dev); b != NULL && *b != NULL; b++) {
            if (strcmp(ggml_backend_buft_name(*b), "CPU_REPACK") == 0) {
                fs_repack_buft = *b;
            }
        }
    }
    fs_arena_size = 8 * ggml_tensor_overhead() + ggml_graph_overhead_custom(8, false) + 1024;
    fs_arena = malloc(fs_arena_size);
}

static bool fs_type_ok(int type) {
    switch (type) {
        case GGML_TYPE_F32:
        case GGML_TYPE_F16:
        case GGML_TYPE_BF16:
        case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q4_0:
        case GGML_TYPE_Q4_1:
        case GGML_TYPE_Q5_0:
        case GGML_TYPE_Q5_1:
        case GGML_TYPE_Q2_K:
        case GGML_TYPE_Q3_K:
        case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q5_K:
        case GGML_TYPE_Q6_K:
        case GGML_TYPE_IQ4_NL:
            return true;
        default:
            return false;
    }
}

FS_API int fs_ggml_abi(void) { return FS_GGML_ABI; }

FS_API const char * fs_ggml_last_error(void) { return fs_error; }

// A short description of the build, for logs: "ggml 0.x openmp=1 repack=1 avx512=1 ...".
FS_API const char * fs_ggml_info(void) {
    pthread_once(&fs_once, fs_init);
    static char info[256];
#ifndef FS_OPENMP
#define FS_OPENMP 0
#endif
    const int openmp = FS_OPENMP;
    snprintf(info, sizeof info, "ggml %s openmp=%d repack=%d avx2=%d avx512=%d avx512_vnni=%d",
             ggml_version(), openmp, fs_repack_buft != NULL, ggml_cpu_has_avx2(), ggml_cpu_has_avx512(),
             ggml_cpu_has_avx512_vnni());
    return info;
}

FS_API int fs_ggml_type_supported(int type) { return fs_type_ok(type); }

FS_API int64_t fs_ggml_block_size(int type) { return fs_type_ok(type) ? ggml_blck_size((enum ggml_type) type) : 0; }

// Bytes of one row of n values, 0 when n does not divide into the type's blocks.
FS_API size_t fs_ggml_row_size(int type, int64_t n) {
    if (!fs_type_ok(type) || n <= 0 || n % ggml_blck_size((enum ggml_type) type) != 0) {
        return 0;
    }
    return ggml_row_size((enum ggml_type) type, n);
}

FS_API int fs_ggml_requires_imatrix(int type) {
    return fs_type_ok(type) && ggml_quantize_requires_imatrix((enum ggml_type) type);
}

static bool fs_check_shape(int type, int64_t n_out, int64_t n_in) {
    if (!fs_type_ok(type)) {
        fs_set_error("ggml type %d is not supported", type);
        return false;
    }
    const char * name = ggml_type_name((enum ggml_type) type);
    if (n_out <= 0 || n_in <= 0) {
        fs_set_error("a %s matrix needs positive dimensions, got %lld x %lld", name, (long long) n_out,
                     (long long) n_in);
        return false;
    }
    const int64_t blck = ggml_blck_size((enum ggml_type) type);
    if (n_in % blck != 0) {
        fs_set_error("%s stores rows in blocks of %lld values: in_features %lld is not a multiple", name,
                     (long long) blck, (long long) n_in);
        return false;
    }
    return true;
}

// Quantize rows [row0, row0 + nrows) of an fp32 [*, n_per_row] matrix into dst, which points at
// the start of the whole destination (row r's blocks go at r * row_size). Row ranges can run on
// several threads at once. Returns the bytes written, 0 on error.
FS_API size_t fs_ggml_quantize(int type, const float * src, int64_t row0, int64_t nrows, int64_t n_per_row, void * dst) {
    pthread_once(&fs_once, fs_init);
    if (!fs_check_shape(type, nrows, n_per_row) || row0 < 0) {
        return 0;
    }
    if (ggml_quantize_requires_imatrix((enum ggml_type) type)) {
        fs_set_error("%s needs an importance matrix to quantize", ggml_type_name((enum ggml_type) type));
        return 0;
    }
    return ggml_quantize_chunk((enum ggml_type) type, src, dst, row0 * n_per_row, nrows, n_per_row, NULL);
}

// A matrix from raw row blocks in GGUF layout (n_out rows of n_in values). Repacked for the
// kernel unless flags has FS_FLAG_PLAIN or ggml has no repacked layout for the type and shape.
FS_API struct fs_matrix * fs_ggml_matrix_new(int type, int64_t n_out, int64_t n_in, const void * data, size_t nbytes,
                                            int flags) {
    pthread_once(&fs_once, fs_init);
    if (!fs_check_shape(type, n_out, n_in)) {
        return NULL;
    }
    const enum ggml_type t = (enum ggml_type) type;
    const size_t want = ggml_row_size(t, n_in) * (size_t) n_out;
    if (nbytes != want) {
        fs_set_error("a %s matrix of %lld x %lld takes %zu bytes, got %zu", ggml_type_name(t), (long long) n_out,
                     (long long) n_in, want, nbytes);
        return NULL;
    }
    // NaN/inf scales (or values, for float types) would poison every product silently.
    if (!ggml_validate_row_data(t, data, nbytes)) {
        fs_set_error("the %s data holds NaN or infinite values (or invalid block scales)", ggml_type_name(t));
        return NULL;
    }

    struct fs_matrix * m = calloc(1, sizeof *m);
    if (m == NULL) {
        fs_set_error("out of memory");
        return NULL;
    }
    struct ggml_init_params ip = { ggml_tensor_overhead() + 64, NULL, true };
    m->ctx = ggml_init(ip);
    if (m->ctx == NULL) {
        fs_set_error("out of memory");
        free(m);
        return NULL;
    }
    m->w = ggml_new_tensor_2d(m->ctx, t, n_in, n_out);

    if (!(flags & FS_FLAG_PLAIN) && fs_repack_buft != NULL) {
        m->buf = ggml_backend_buft_alloc_buffer(fs_repack_buft, ggml_backend_buft_get_alloc_size(fs_repack_buft, m->w));
        if (m->buf != NULL) {
            ggml_backend_tensor_alloc(m->buf, m->w, ggml_backend_buffer_get_base(m->buf));
            // init_tensor leaves extra NULL when ggml has no repacked layout for this type on this
            // CPU (Q8_0 on x86, or rows not a multiple of 8); setting it then would crash.
            if (m->w->extra != NULL) {
                m->repacked = 1;
            } else {
                ggml_backend_buffer_free(m->buf);
                m->buf = NULL;
                m->w->data = NULL;
                m->w->buffer = NULL;
            }
        }
    }
    if (!m->repacked) {
        ggml_backend_buffer_type_t cpu = ggml_backend_cpu_buffer_type();
        m->buf = ggml_backend_buft_alloc_buffer(cpu, ggml_backend_buft_get_alloc_size(cpu, m->w));
        if (m->buf == NULL) {
            fs_set_error("out of memory for a %zu-byte %s matrix", nbytes, ggml_type_name(t));
            ggml_free(m->ctx);
            free(m);
            return NULL;
        }
        ggml_backend_tensor_alloc(m->buf, m->w, ggml_backend_buffer_get_base(m->buf));
    }
    // Marks the buffer as weights (the CPU backend's scheduling hint) and copies or repacks.
    ggml_backend_buffer_set_usage(m->buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    ggml_backend_tensor_set(m->w, data, 0, nbytes);
    return m;
}

FS_API void fs_ggml_matrix_free(struct fs_matrix * m);

// One matrix of the parts' rows stacked in order (q, k and v as one qkv matrix), without
// going back to the raw blocks: the parts' bytes are copied as they are. That is the layout
// repacking the stacked blocks would give, because ggml repacks each group of 8 (4, 16) rows on
// its own and a repacked part's rows are a whole number of groups; the parts must share the
// type, in_features and layout (the same repack traits, checked). Returns NULL on error.
FS_API struct fs_matrix * fs_ggml_matrix_concat(struct fs_matrix * const * parts, int n) {
    if (n < 1) {
        fs_set_error("concat needs at least one matrix");
        return NULL;
    }
    const struct ggml_tensor * w0 = parts[0]->w;
    int64_t n_out = 0;
    for (int i = 0; i < n; i++) {
        const struct ggml_tensor * w = parts[i]->w;
        if (w->type != w0->type || w->ne[0] != w0->ne[0] || parts[i]->repacked != parts[0]->repacked ||
            w->extra != w0->extra) {
            fs_set_error("concat: matrix %d is %s %lld x %lld (%s), matrix 0 is %s %lld x %lld (%s)", i,
                         ggml_type_name(w->type), (long long) w->ne[1], (long long) w->ne[0],
                         parts[i]->repacked ? "repacked" : "plain", ggml_type_name(w0->type), (long long) w0->ne[1],
                         (long long) w0->ne[0], parts[0]->repacked ? "repacked" : "plain");
            return NULL;
        }
        n_out += w->ne[1];
    }
    struct fs_matrix * m = calloc(1, sizeof *m);
    if (m == NULL) {
        fs_set_error("out of memory");
        return NULL;
    }
    struct ggml_init_params ip = { ggml_tensor_overhead() + 64, NULL, true };
    m->ctx = ggml_init(ip);
    m->w = ggml_new_tensor_2d(m->ctx, w0->type, w0->ne[0], n_out);
    ggml_backend_buffer_type_t buft = ggml_backend_buffer_get_type(parts[0]->buf);
    m->buf = ggml_backend_buft_alloc_buffer(buft, ggml_backend_buft_get_alloc_size(buft, m->w));
    if (m->buf == NULL) {
        fs_set_error("out of memory for a %s matrix of %lld rows", ggml_type_name(w0->type), (long long) n_out);
        ggml_free(m->ctx);
        free(m);
        return NULL;
    }
    ggml_backend_tensor_alloc(m->buf, m->w, ggml_backend_buffer_get_base(m->buf));
    ggml_backend_buffer_set_usage(m->buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    m->repacked = parts[0]->repacked;
    if (m->w->extra != w0->extra) {
        // The stacked shape gets another repacked layout than the parts (not seen on x86).
        fs_set_error("concat: the stacked %s matrix has another repacked layout than its parts",
                     ggml_type_name(w0->type));
        fs_ggml_matrix_free(m);
        return NULL;
    }
    char * dst = m->w->data;
    for (int i = 0; i < n; i++) {
        const size_t size = ggml_nbytes(parts[i]->w);
        memcpy(dst, parts[i]->w->data, size);
        dst += size;
    }
    return m;
}

FS_API void fs_ggml_matrix_free(struct fs_matrix * m) {
    if (m == NULL) {
        return;
    }
    ggml_backend_buffer_free(m->buf);
    ggml_free(m->ctx);
    free(m);
}

FS_API int fs_ggml_matrix_repacked(const struct fs_matrix * m) { return m->repacked; }

FS_API size_t fs_ggml_matrix_nbytes(const struct fs_matrix * m) {
    return m->buf != NULL ? ggml_backend_buffer_get_size(m->buf) : ggml_nbytes(m->w);
}

// Computes g on the shared threadpool (made, or remade for another thread count, here) with the
// shared work buffer. The caller holds fs_lock. Returns 0, or -1 with the error set.
static int fs_compute(struct ggml_cgraph * g, int n_threads) {
    if (fs_pool == NULL || fs_pool_threads != n_threads) {
        if (fs_pool != NULL) {
            ggml_threadpool_free(fs_pool);
        }
        struct ggml_threadpool_params tp = ggml_threadpool_params_default(n_threads);
        fs_pool = ggml_threadpool_new(&tp);
        fs_pool_threads = n_threads;
    }
    struct ggml_cplan plan = ggml_graph_plan(g, n_threads, fs_pool);
    if (plan.work_size > fs_work_size) {
        free(fs_work);
        size_t size = plan.work_size + plan.work_size / 4;
        if (posix_memalign((void **) &fs_work, 64, size) != 0) {
            fs_work = NULL;
            fs_work_size = 0;
            fs_set_error("out of memory for a %zu-byte work buffer", size);
            return -1;
        }
        fs_work_size = size;
    }
    plan.work_data = fs_work;
    enum ggml_status st = ggml_graph_compute(g, &plan);
    if (st != GGML_STATUS_SUCCESS) {
        fs_set_error("ggml_graph_compute failed: %s", ggml_status_to_string(st));
        return -1;
    }
    return 0;
}

// y[rows, n_out] = x[rows, n_in] @ W.T for any rows >= 1, both row-major fp32 in the caller's
// memory. Returns 0, or -1 with fs_ggml_last_error() set.
FS_API int fs_ggml_matmul(struct fs_matrix * m, const float * x, int64_t rows, float * y, int n_threads) {
    if (rows <= 0 || n_threads <= 0) {
        fs_set_error("matmul needs rows >= 1 and threads >= 1, got %lld and %d", (long long) rows, n_threads);
        return -1;
    }
    pthread_mutex_lock(&fs_lock);

    // The graph's tensor headers live in the arena; their data is the caller's memory.
    struct ggml_init_params ip = { fs_arena_size, fs_arena, true };
    struct ggml_context * ctx = ggml_init(ip);
    const int64_t n_in = m->w->ne[0];
    struct ggml_tensor * xt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_in, rows);
    xt->data = (void *) x;
    struct ggml_tensor * yt = ggml_mul_mat(ctx, m->w, xt);
    yt->data = y;
    struct ggml_cgraph * g = ggml_new_graph_custom(ctx, 8, false);
    ggml_build_forward_expand(g, yt);

    const int rc = fs_compute(g, n_threads);
    ggml_free(ctx);
    pthread_mutex_unlock(&fs_lock);
    return rc;
}

// out[i, :] = row ids[i] of W in fp32, for a matrix in the plain layout. Returns 0, or -1.
FS_API int fs_ggml_rows(const struct fs_matrix * m, const int64_t * ids, int64_t n, float * out) {
    if (m->repacked) {
        fs_set_error("this matrix is repacked for matmul; row lookups need the plain layout (lookup=True)");
        return -1;
    }
    const int64_t n_out = m->w->ne[1], n_in = m->w->ne[0];
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= n_out) {
            fs_set_error("row %lld is out of range for a matrix of %lld rows", (long long) ids[i], (long long) n_out);
            return -1;
        }
    }
    const enum ggml_type t = m->w->type;
    const char * base = m->w->data;
    ggml_to_float_t to_float = ggml_get_type_traits(t)->to_float;
    for (int64_t i = 0; i < n; i++) {
        const char * row = base + ids[i] * m->w->nb[1];
        if (t == GGML_TYPE_F32) {
            memcpy(out + i * n_in, row, n_in * sizeof(float));
        } else {
            to_float(row, out + i * n_in, n_in);
        }
    }
    return 0;
}

// A dense fp32 matrix [n_out, n_in] in the caller's memory, used where it lies (nothing copied):
// the caller keeps the memory alive and unchanged while the matrix exists. Returns NULL on error.
FS_API struct fs_matrix * fs_ggml_matrix_wrap_f32(float * data, int64_t n_out, int64_t n_in) {
    pthread_once(&fs_once, fs_init);
    if (data == NULL || !fs_check_shape(GGML_TYPE_F32, n_out, n_in)) {
        if (data == NULL) {
            fs_set_error("wrap_f32 needs the matrix's memory");
        }
        return NULL;
    }
    struct fs_matrix * m = calloc(1, sizeof *m);
    if (m == NULL) {
        fs_set_error("out of memory");
        return NULL;
    }
    struct ggml_init_params ip = { ggml_tensor_overhead() + 64, NULL, true };
    m->ctx = ggml_init(ip);
    if (m->ctx == NULL) {
        fs_set_error("out of memory");
        free(m);
        return NULL;
    }
    m->w = ggml_new_tensor_2d(m->ctx, GGML_TYPE_F32, n_in, n_out);
    m->w->data = data;
    return m;  // m->buf stays NULL: the memory is the caller's
}

// ---- One decode step of one sequence as one graph -------------------------------------------
//
// The one-row decoder (fireside/engine/one_row.py) otherwise calls the kernels once per matrix,
// ~30 times a token for the bundled model, with numpy's small ops between: each call wakes the
// threadpool and each op costs Python a microsecond or more, and at 24M parameters that overhead
// rivals the time the weights take to stream. Here the whole step (every layer, the final norm
// and the head) is one ggml graph computed in one call: the threads wake once and meet at a
// barrier between nodes. The graph is the Llama family's as fireside.model.transformer computes
// it: RMSNorm, fused qkv (optional bias), optional per-head q/k RMSNorm (Qwen3), RoPE (rotating
// halves, as HF does; the model's own inverse frequencies through freq_factors), attention of the
// one query over the sequence's history in the caller's paged KV pool (one consecutive stretch
// of slots; the caller falls back to its own path otherwise), SwiGLU.

struct fs_step_layer {
    struct fs_matrix * qkv, * o, * gate_up, * down;
    const float * in_norm, * post_norm, * q_norm, * k_norm, * qkv_bias;  // NULL: absent
    float * keys, * values;  // the pool's [slots, n_kv, head_dim] for this layer
};

struct fs_stepper {
    int n_layers, hidden, n_head, n_kv, head_dim, inter;
    float eps, rope_base;
    int64_t slots, vocab;
    float * freq_factors;  // [head_dim / 2]
    const float * final_norm;
    struct fs_matrix * head;
    struct fs_step_layer * layers;
    uint8_t * mem;  // the graph's arena: headers and intermediates, grown with the history
    size_t mem_size;
};

FS_API void fs_ggml_stepper_free(struct fs_stepper * s) {
    if (s == NULL) {
        return;
    }
    free(s->freq_factors);
    free(s->layers);
    free(s->mem);
    free(s);
}

// freq_factors[i] = rope_base^(-2i/head_dim) / inv_freq[i] (all 1 for plain RoPE): ggml divides
// its own angle by it, which gives the model's angle whatever its RoPE scaling.
FS_API struct fs_stepper * fs_ggml_stepper_new(int n_layers, int hidden, int n_head, int n_kv, int head_dim,
                                              int inter, float eps, float rope_base, const float * freq_factors,
                                              int64_t slots, const float * final_norm, struct fs_matrix * head) {
    pthread_once(&fs_once, fs_init);
    if (n_layers < 1 || hidden < 1 || n_head < 1 || n_kv < 1 || n_head % n_kv != 0 || head_dim < 2 ||
        head_dim % 2 != 0 || inter < 1 || slots < 1 || final_norm == NULL || head == NULL || freq_factors == NULL) {
        fs_set_error("stepper: bad shape (layers %d, hidden %d, heads %d/%d, head_dim %d, inter %d, slots %lld)",
                     n_layers, hidden, n_head, n_kv, head_dim, inter, (long long) slots);
        return NULL;
    }
    if (head->w->ne[0] != hidden) {
        fs_set_error("stepper: the head takes %lld features, the model has %d", (long long) head->w->ne[0], hidden);
        return NULL;
    }
    struct fs_stepper * s = calloc(1, sizeof *s);
    if (s == NULL) {
        fs_set_error("out of memory");
        return NULL;
    }
    *s = (struct fs_stepper){ n_layers, hidden, n_head, n_kv, head_dim, inter, eps, rope_base, slots,
                              head->w->ne[1], NULL, final_norm, head, NULL, NULL, 0 };
    s->freq_factors = malloc(sizeof(float) * (size_t) (head_dim / 2));
    s->layers = calloc((size_t) n_layers, sizeof *s->layers);
    if (s->freq_factors == NULL || s->layers == NULL) {
        fs_ggml_stepper_free(s);
        fs_set_error("out of memory");
        return NULL;
    }
    memcpy(s->freq_factors, freq_factors, sizeof(float) * (size_t) (head_dim / 2));
    return s;
}

static bool fs_takes(const struct fs_matrix * m, int64_t n_in, int64_t n_out, const char * what) {
    if (m == NULL || m->w->ne[0] != n_in || m->w->ne[1] != n_out) {
        fs_set_error("stepper: %s must be %lld x %lld", what, (long long) n_out, (long long) n_in);
        return false;
    }
    return true;
}

FS_API int fs_ggml_stepper_layer(struct fs_stepper * s, int i, struct fs_matrix * qkv, struct fs_matrix * o,
                                 struct fs_matrix * gate_up, struct fs_matrix * down, const float * in_norm,
                                 const float * post_norm, const float * q_norm, const float * k_norm,
                                 const float * qkv_bias, float * keys, float * values) {
    if (i < 0 || i >= s->n_layers) {
        fs_set_error("stepper: layer %d of %d", i, s->n_layers);
        return -1;
    }
    const int64_t D = s->head_dim, qkv_out = (int64_t) (s->n_head + 2 * s->n_kv) * D;
    if (!fs_takes(qkv, s->hidden, qkv_out, "qkv") || !fs_takes(o, (int64_t) s->n_head * D, s->hidden, "o") ||
        !fs_takes(gate_up, s->hidden, 2 * (int64_t) s->inter, "gate_up") ||
        !fs_takes(down, s->inter, s->hidden, "down")) {
        return -1;
    }
    if (in_norm == NULL || post_norm == NULL || keys == NULL || values == NULL || (q_norm == NULL) != (k_norm == NULL)) {
        fs_set_error("stepper: layer %d lacks its norms or its KV memory", i);
        return -1;
    }
    s->layers[i] = (struct fs_step_layer){ qkv, o, gate_up, down, in_norm, post_norm, q_norm, k_norm, qkv_bias,
                                           keys, values };
    return 0;
}

// A tensor header over the caller's fp32 memory (no data allocated).
static struct ggml_tensor * fs_external(struct ggml_context * hdr, const float * data, int64_t n) {
    struct ggml_tensor * t = ggml_new_tensor_1d(hdr, GGML_TYPE_F32, n);
    t->data = (void *) data;
    return t;
}

static struct ggml_tensor * fs_norm(struct ggml_context * ctx, struct ggml_context * hdr, struct ggml_tensor * x,
                                    const float * weight, int64_t n, float eps) {
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, eps), fs_external(hdr, weight, n));
}

// logits[vocab] for the token whose embedding is x_in[hidden] at `position`; its key and value go
// to pool slot `slot`, and it attends over slots [kv_first, kv_first + kv_len) (its own slot the
// last of them). Returns 0, or -1 with the error set.
FS_API int fs_ggml_stepper_step(struct fs_stepper * s, const float * x_in, int32_t position, int64_t slot,
                                int64_t kv_first, int64_t kv_len, float * logits, int n_threads) {
    if (kv_len < 1 || kv_first < 0 || kv_first + kv_len > s->slots || slot != kv_first + kv_len - 1 ||
        n_threads < 1) {
        fs_set_error("stepper: slot %lld, history [%lld, +%lld) outside the pool's %lld slots", (long long) slot,
                     (long long) kv_first, (long long) kv_len, (long long) s->slots);
        return -1;
    }
    for (int i = 0; i < s->n_layers; i++) {
        if (s->layers[i].qkv == NULL) {
            fs_set_error("stepper: layer %d was never set", i);
            return -1;
        }
    }
    const int64_t D = s->head_dim, H = s->n_head, Hkv = s->n_kv, S = kv_len;
    const size_t row = sizeof(float) * (size_t) (Hkv * D);  // one slot of one layer's keys
    const int n_nodes = s->n_layers * 48 + 32;
    // Intermediates per layer, in floats, with room to spare: activations and the attention
    // scores (S x H, before and after the softmax), and a tensor header per node. Every node
    // has its own memory (no allocator reusing it), which the scores make grow with S.
    const size_t floats = (size_t) (8 * s->hidden + 6 * H * D + 4 * Hkv * D + 4 * s->inter + 3 * S * H);
    const size_t need = (size_t) s->n_layers * (floats * sizeof(float) + 64 * (ggml_tensor_overhead() + 64)) +
                        (size_t) (4 * s->hidden + s->vocab) * sizeof(float) + ggml_graph_overhead_custom(n_nodes, false) +
                        (size_t) (4 * n_nodes) * (ggml_tensor_overhead() + 64) + (1 << 16);
    if (need > s->mem_size) {
        free(s->mem);
        s->mem_size = need + need / 2;
        s->mem = malloc(s->mem_size);
        if (s->mem == NULL) {
            s->mem_size = 0;
            fs_set_error("out of memory for a %zu-byte step arena", need);
            return -1;
        }
    }
    const size_t hdr_size = (size_t) (s->n_layers * 16 + 16) * (ggml_tensor_overhead() + 64);
    struct ggml_init_params hp = { hdr_size, s->mem, true };
    struct ggml_init_params cp = { s->mem_size - hdr_size, s->mem + hdr_size, false };
    struct ggml_context * hdr = ggml_init(hp);
    struct ggml_context * ctx = ggml_init(cp);
    struct ggml_cgraph * g = ggml_new_graph_custom(ctx, n_nodes, false);

    struct ggml_tensor * x = fs_external(hdr, x_in, s->hidden);
    struct ggml_tensor * pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, 1);
    ((int32_t *) pos->data)[0] = position;
    struct ggml_tensor * ff = fs_external(hdr, s->freq_factors, D / 2);
    const float scale = 1.0f / sqrtf((float) D);

    for (int i = 0; i < s->n_layers; i++) {
        const struct fs_step_layer * L = &s->layers[i];
        struct ggml_tensor * h = fs_norm(ctx, hdr, x, L->in_norm, s->hidden, s->eps);
        struct ggml_tensor * qkv = ggml_mul_mat(ctx, L->qkv->w, h);
        if (L->qkv_bias != NULL) {
            qkv = ggml_add(ctx, qkv, fs_external(hdr, L->qkv_bias, (H + 2 * Hkv) * D));
        }
        const size_t f = sizeof(float);
        struct ggml_tensor * q = ggml_view_3d(ctx, qkv, D, H, 1, D * f, H * D * f, 0);
        struct ggml_tensor * k = ggml_view_3d(ctx, qkv, D, Hkv, 1, D * f, Hkv * D * f, H * D * f);
        struct ggml_tensor * v = ggml_view_2d(ctx, qkv, D, Hkv, D * f, (H + Hkv) * D * f);
        if (L->q_norm != NULL) {
            q = fs_norm(ctx, hdr, q, L->q_norm, D, s->eps);
            k = fs_norm(ctx, hdr, k, L->k_norm, D, s->eps);
        }
        q = ggml_rope_ext(ctx, q, pos, ff, (int) D, GGML_ROPE_TYPE_NEOX, 0, s->rope_base, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f);
        k = ggml_rope_ext(ctx, k, pos, ff, (int) D, GGML_ROPE_TYPE_NEOX, 0, s->rope_base, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f);

        // This token's key and value into its slot first: the graph runs its nodes in order, so
        // the attention below (built after) reads them.
        struct ggml_tensor * keys = fs_external(hdr, L->keys, s->slots * Hkv * D);
        struct ggml_tensor * values = fs_external(hdr, L->values, s->slots * Hkv * D);
        ggml_build_forward_expand(g, ggml_cpy(ctx, k, ggml_view_2d(ctx, keys, D, Hkv, D * f, (size_t) slot * row)));
        ggml_build_forward_expand(g, ggml_cpy(ctx, v, ggml_view_2d(ctx, values, D, Hkv, D * f, (size_t) slot * row)));

        // [D, S, Hkv] views of the history; query head h reads kv head h / (H / Hkv), ggml's
        // broadcast over dimension 2.
        struct ggml_tensor * K = ggml_view_3d(ctx, keys, D, S, Hkv, row, D * f, (size_t) kv_first * row);
        struct ggml_tensor * V = ggml_view_3d(ctx, values, D, S, Hkv, row, D * f, (size_t) kv_first * row);
        struct ggml_tensor * q3 = ggml_reshape_3d(ctx, q, D, 1, H);
        struct ggml_tensor * probs = ggml_soft_max_ext(ctx, ggml_mul_mat(ctx, K, q3), NULL, scale, 0.0f);  // [S, 1, H]
        // y[d, h] = sum_s V[d, s, h / G] probs[s, h]: an outer product summed over dimension 1,
        // which reads V as it lies (no transposed copy of the history every step).
        struct ggml_tensor * p3 = ggml_reshape_3d(ctx, probs, 1, S, H);
        struct ggml_tensor * y = ggml_reshape_1d(ctx, ggml_out_prod(ctx, V, p3), H * D);  // [D, 1, H]
        x = ggml_add(ctx, x, ggml_mul_mat(ctx, L->o->w, y));

        h = fs_norm(ctx, hdr, x, L->post_norm, s->hidden, s->eps);
        struct ggml_tensor * gu = ggml_mul_mat(ctx, L->gate_up->w, h);
        struct ggml_tensor * gate = ggml_view_1d(ctx, gu, s->inter, 0);
        struct ggml_tensor * up = ggml_view_1d(ctx, gu, s->inter, (size_t) s->inter * f);
        x = ggml_add(ctx, x, ggml_mul_mat(ctx, L->down->w, ggml_swiglu_split(ctx, gate, up)));
    }
    struct ggml_tensor * out = ggml_mul_mat(ctx, s->head->w, fs_norm(ctx, hdr, x, s->final_norm, s->hidden, s->eps));
    ggml_build_forward_expand(g, out);

    pthread_mutex_lock(&fs_lock);
    int rc = fs_compute(g, n_threads);
    pthread_mutex_unlock(&fs_lock);
    if (rc == 0) {
        memcpy(logits, out->data, sizeof(float) * (size_t) s->vocab);
    }
    ggml_free(ctx);
    ggml_free(hdr);
    return rc;
}
