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
#define FS_GGML_ABI 2

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

FS_API size_t fs_ggml_matrix_nbytes(const struct fs_matrix * m) { return ggml_backend_buffer_get_size(m->buf); }

// y[rows, n_out] = x[rows, n_in] @ W.T for any rows >= 1, both row-major fp32 in the caller's
// memory. Returns 0, or -1 with fs_ggml_last_error() set.
FS_API int fs_ggml_matmul(struct fs_matrix * m, const float * x, int64_t rows, float * y, int n_threads) {
    if (rows <= 0 || n_threads <= 0) {
        fs_set_error("matmul needs rows >= 1 and threads >= 1, got %lld and %d", (long long) rows, n_threads);
        return -1;
    }
    pthread_mutex_lock(&fs_lock);
    if (fs_pool == NULL || fs_pool_threads != n_threads) {
        if (fs_pool != NULL) {
            ggml_threadpool_free(fs_pool);
        }
        struct ggml_threadpool_params tp = ggml_threadpool_params_default(n_threads);
        fs_pool = ggml_threadpool_new(&tp);
        fs_pool_threads = n_threads;
    }

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

    struct ggml_cplan plan = ggml_graph_plan(g, n_threads, fs_pool);
    if (plan.work_size > fs_work_size) {
        free(fs_work);
        size_t size = plan.work_size + plan.work_size / 4;
        if (posix_memalign((void **) &fs_work, 64, size) != 0) {
            fs_work = NULL;
            fs_work_size = 0;
            ggml_free(ctx);
            pthread_mutex_unlock(&fs_lock);
            fs_set_error("out of memory for a %zu-byte work buffer", size);
            return -1;
        }
        fs_work_size = size;
    }
    plan.work_data = fs_work;
    enum ggml_status st = ggml_graph_compute(g, &plan);
    ggml_free(ctx);
    pthread_mutex_unlock(&fs_lock);
    if (st != GGML_STATUS_SUCCESS) {
        fs_set_error("ggml_graph_compute failed: %s", ggml_status_to_string(st));
        return -1;
    }
    return 0;
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
