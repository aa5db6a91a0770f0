/*
 * cryptfs.core._blocks: the C block path.
 *
 * One call per read request: pread the ciphertext span, authenticate and decrypt every
 * AES-256-GCM chunk with a reused per-thread EVP context, and write the plaintext
 * straight into the caller's buffer (libfuse's, for the mount). The GIL is released
 * for the whole call; requests of SPLIT_MIN bytes or more are split at chunk
 * boundaries across a persistent worker pool.
 *
 * The layout is parametrised so other formats (the Sam package) reuse it unchanged:
 *   header_len, plain_bs, nonce_len (cipher_bs = plain_bs + nonce_len + 16),
 *   AAD = aad_pre || be64(chunk_no) || aad_post [|| 1 byte: 1 if last chunk else 0],
 *   zero_is_hole: a full-size all-zero chunk reads as zeros (gocryptfs holes) or is an error.
 * On-disk chunk: nonce | ciphertext | 16-byte tag.
 * seal_into() is the inverse for packers (the Sam package): same layout, GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define TAG_LEN 16
#define MAX_NONCE 32
#define MAX_AAD 256
#define SPLIT_MIN (256 * 1024)
#define MAX_WORKERS 16

enum { OK = 0, E_AUTH = 1, E_SHORT = 2, E_ZERO_NONCE = 3, E_IO = 4, E_NOMEM = 5, E_HOLE = 6 };

static const char *reasons[] = {
    "ok", "authentication failed", "block too short", "all-zero nonce", "I/O error",
    "out of memory", "all-zero block (holes are not allowed here)",
};

typedef struct {
    PyObject_HEAD
    unsigned char key[32];
    uint64_t id;             /* identifies the key for per-thread context caches */
    Py_ssize_t header_len, plain_bs, cipher_bs, nonce_len;
    int zero_is_hole, last_flag;
} Decryptor;

/* The parameters of one read, shared by the pieces a request is split into. */
typedef struct {
    const Decryptor *d;
    int fd;
    const unsigned char *aad_pre, *aad_post;
    Py_ssize_t pre_len, post_len;
    int64_t nchunks_total;      /* chunks in the file (for the last-chunk flag) */
} ReadCtx;

typedef struct {
    const ReadCtx *rc;
    int64_t first;      /* first chunk number */
    int64_t count;      /* number of chunks */
    unsigned char *out; /* plaintext of chunk `first` goes here */
    Py_ssize_t got;     /* plaintext bytes produced */
    int err;
    int64_t bad_chunk;
    int io_errno;
    int done;           /* set by the worker under pool_mu */
} Piece;

static uint64_t next_id = 1;

/* ---- per-thread cipher context --------------------------------------------------- */
/* One context per thread and direction (0 decrypt, 1 encrypt), re-keyed when the
 * Decryptor changes; `id` identifies the key the context holds. */
static __thread EVP_CIPHER_CTX *tl_ctx[2];
static __thread uint64_t tl_id[2];

static EVP_CIPHER_CTX *keyed_ctx(const Decryptor *d, int enc) {
    if (!tl_ctx[enc]) {
        tl_ctx[enc] = EVP_CIPHER_CTX_new();
        if (!tl_ctx[enc]) return NULL;
        tl_id[enc] = 0;
    }
    EVP_CIPHER_CTX *ctx = tl_ctx[enc];
    if (tl_id[enc] != d->id) {
        if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)d->nonce_len, NULL) != 1 ||
            EVP_CipherInit_ex(ctx, NULL, NULL, d->key, NULL, enc) != 1) {
            tl_id[enc] = 0;
            return NULL;
        }
        tl_id[enc] = d->id;
    }
    return ctx;
}

/* The ciphertext staging buffer, reused by each thread (a FUSE request would otherwise
 * malloc and free ~264 KiB per piece). */
static __thread unsigned char *tl_cbuf;
static __thread size_t tl_cbuf_size;

static unsigned char *thread_cbuf(size_t size) {
    if (tl_cbuf_size < size) {
        free(tl_cbuf);
        tl_cbuf = malloc(size);
        tl_cbuf_size = tl_cbuf ? size : 0;
    }
    return tl_cbuf;
}

static int all_zero(const unsigned char *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* Decrypt one on-disk chunk into out; returns OK or an error code, *plain_len set. */
static int open_chunk(EVP_CIPHER_CTX *ctx, const ReadCtx *rc, int64_t chunk_no,
                      const unsigned char *in, Py_ssize_t in_len, unsigned char *out,
                      Py_ssize_t *plain_len) {
    const Decryptor *d = rc->d;
    if (in_len == d->cipher_bs && all_zero(in, d->nonce_len) && all_zero(in, in_len)) {
        if (!d->zero_is_hole) return E_HOLE;
        memset(out, 0, d->plain_bs);
        *plain_len = d->plain_bs;
        return OK;
    }
    if (in_len <= d->nonce_len + TAG_LEN) return E_SHORT;
    if (all_zero(in, d->nonce_len)) return E_ZERO_NONCE;
    unsigned char aad[MAX_AAD];
    Py_ssize_t a = 0;
    memcpy(aad, rc->aad_pre, rc->pre_len); a += rc->pre_len;
    for (int i = 7; i >= 0; i--) aad[a++] = (unsigned char)((uint64_t)chunk_no >> (8 * i));
    memcpy(aad + a, rc->aad_post, rc->post_len); a += rc->post_len;
    if (d->last_flag) aad[a++] = (chunk_no == rc->nchunks_total - 1) ? 1 : 0;
    Py_ssize_t ct_len = in_len - d->nonce_len - TAG_LEN;
    int len = 0;
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, in) != 1) return E_AUTH;
    if (EVP_DecryptUpdate(ctx, NULL, &len, aad, (int)a) != 1) return E_AUTH;
    if (EVP_DecryptUpdate(ctx, out, &len, in + d->nonce_len, (int)ct_len) != 1) return E_AUTH;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                            (void *)(in + d->nonce_len + ct_len)) != 1) return E_AUTH;
    if (EVP_DecryptFinal_ex(ctx, out + len, &len) != 1) return E_AUTH;
    *plain_len = ct_len;
    return OK;
}

/* Read and decrypt a run of whole chunks; the piece's output must hold count*plain_bs. */
#define IO_STEP_CHUNKS 64
static void run_piece(Piece *p) {
    const ReadCtx *rc = p->rc;
    const Decryptor *d = rc->d;
    p->got = 0; p->err = OK;
    EVP_CIPHER_CTX *ctx = keyed_ctx(d, 0);
    if (!ctx) { p->err = E_NOMEM; p->bad_chunk = p->first; return; }
    unsigned char *cbuf = thread_cbuf((size_t)d->cipher_bs * IO_STEP_CHUNKS);
    if (!cbuf) { p->err = E_NOMEM; p->bad_chunk = p->first; return; }
    int64_t done = 0;
    while (done < p->count) {
        int64_t n = p->count - done < IO_STEP_CHUNKS ? p->count - done : IO_STEP_CHUNKS;
        off_t off = (off_t)d->header_len + (off_t)(p->first + done) * d->cipher_bs;
        size_t want = (size_t)n * d->cipher_bs;
        size_t have = 0;
        while (have < want) {
            ssize_t r = pread(rc->fd, cbuf + have, want - have, off + (off_t)have);
            if (r < 0) {
                if (errno == EINTR) continue;
                p->err = E_IO; p->io_errno = errno; p->bad_chunk = p->first + done;
                return;
            }
            if (r == 0) break;
            have += (size_t)r;
        }
        for (int64_t i = 0; i < n && (Py_ssize_t)(i * d->cipher_bs) < (Py_ssize_t)have; i++) {
            Py_ssize_t in_len = (Py_ssize_t)have - i * d->cipher_bs;
            if (in_len > d->cipher_bs) in_len = d->cipher_bs;
            Py_ssize_t plen = 0;
            int e = open_chunk(ctx, rc, p->first + done + i, cbuf + i * d->cipher_bs, in_len,
                               p->out + (done + i) * d->plain_bs, &plen);
            if (e) { p->err = e; p->bad_chunk = p->first + done + i; return; }
            p->got += plen;
        }
        if (have < want) break; /* EOF */
        done += n;
    }
}

/* ---- persistent worker pool ------------------------------------------------------- */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER;
static Piece *queue[MAX_WORKERS * 8];
static int q_len = 0;
static int pool_size = 0;    /* started workers */
static int pool_target = -1; /* -1: not configured yet (defaults to ncpu - 1) */
static pid_t pool_pid = 0;   /* threads do not survive fork(): start anew in a child */

static void *worker(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&pool_mu);
        while (q_len == 0) pthread_cond_wait(&pool_work, &pool_mu);
        Piece *p = queue[--q_len];
        pthread_mutex_unlock(&pool_mu);
        run_piece(p);
        pthread_mutex_lock(&pool_mu);
        p->done = 1;
        pthread_cond_broadcast(&pool_done);
        pthread_mutex_unlock(&pool_mu);
    }
    return NULL;
}

/* Called with the GIL released. Returns the number of workers available. */
static int ensure_pool(void) {
    pthread_mutex_lock(&pool_mu);
    if (pool_pid != getpid()) { /* first use in this process, or a forked child */
        pool_size = 0;
        q_len = 0;
        pool_pid = getpid();
    }
    if (pool_target < 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        pool_target = ncpu > 1 ? (int)(ncpu - 1 < MAX_WORKERS ? ncpu - 1 : MAX_WORKERS) : 0;
    }
    while (pool_size < pool_target) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        pool_size++;
    }
    int n = pool_size;
    pthread_mutex_unlock(&pool_mu);
    return n;
}

/* pieces[0] runs on the calling thread, the others on the pool; returns when all are done. */
static void run_split(Piece *pieces, int npieces) {
    pthread_mutex_lock(&pool_mu);
    int queued = 0;
    for (int i = 1; i < npieces; i++) {
        pieces[i].done = 0;
        if (q_len < (int)(sizeof queue / sizeof queue[0])) {
            queue[q_len++] = &pieces[i];
            queued = 1;
        } else {
            pieces[i].done = -1; /* queue full: run it here */
        }
    }
    if (queued) pthread_cond_broadcast(&pool_work);
    pthread_mutex_unlock(&pool_mu);
    run_piece(&pieces[0]);
    /* Work stealing: take back our pieces that no worker has started (a busy worker would
     * otherwise make this request wait for another request's work). */
    pthread_mutex_lock(&pool_mu);
    for (int i = 1; i < npieces; i++) {
        for (int q = 0; q < q_len; q++) {
            if (queue[q] == &pieces[i]) {
                queue[q] = queue[--q_len];
                pieces[i].done = -1;
                break;
            }
        }
    }
    pthread_mutex_unlock(&pool_mu);
    for (int i = 1; i < npieces; i++)
        if (pieces[i].done == -1) { run_piece(&pieces[i]); pieces[i].done = 1; }
    pthread_mutex_lock(&pool_mu);
    for (int i = 1; i < npieces; i++)
        while (!pieces[i].done) pthread_cond_wait(&pool_done, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
}

/* ---- Python API -------------------------------------------------------------------- */
static PyObject *BlockError;

static int Decryptor_init(Decryptor *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"key", "header_len", "plain_bs", "nonce_len", "zero_is_hole",
                             "last_flag", NULL};
    Py_buffer key;
    self->header_len = 18; self->plain_bs = 4096; self->nonce_len = 16;
    self->zero_is_hole = 1; self->last_flag = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|nnnpp", kwlist, &key, &self->header_len,
                                     &self->plain_bs, &self->nonce_len, &self->zero_is_hole,
                                     &self->last_flag))
        return -1;
    if (key.len != 32) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "key must be 32 bytes (AES-256)");
        return -1;
    }
    memcpy(self->key, key.buf, 32);
    PyBuffer_Release(&key);
    if (self->header_len < 0 || self->plain_bs <= 0 || self->plain_bs > (1 << 24) ||
        self->nonce_len < 12 || self->nonce_len > MAX_NONCE) {
        PyErr_SetString(PyExc_ValueError, "invalid layout parameters");
        return -1;
    }
    self->cipher_bs = self->plain_bs + self->nonce_len + TAG_LEN;
    self->id = __atomic_fetch_add(&next_id, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void Decryptor_dealloc(Decryptor *self) {
    memset(self->key, 0, sizeof self->key);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *raise_piece(const Piece *p) {
    if (p->err == E_IO) {
        errno = p->io_errno;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (p->err == E_NOMEM) return PyErr_NoMemory();
    PyObject *exc = PyObject_CallFunction(BlockError, "Ls", (long long)p->bad_chunk, reasons[p->err]);
    if (exc) { PyErr_SetObject(BlockError, exc); Py_DECREF(exc); }
    return NULL;
}

/*
 * read_into(fd, out, plain_off, plain_size, aad_post=b"", aad_pre=b"") -> int
 * `out` is a writable buffer or an integer address paired with out_len.
 */
static PyObject *Decryptor_read_into(Decryptor *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"fd", "out", "plain_off", "plain_size", "aad_post", "aad_pre",
                             "out_len", NULL};
    int fd;
    PyObject *out_obj;
    long long plain_off, plain_size;
    Py_buffer post = {0}, pre = {0};
    Py_ssize_t out_len = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iOLL|y*y*n", kwlist, &fd, &out_obj, &plain_off,
                                     &plain_size, &post, &pre, &out_len))
        return NULL;
    Py_buffer outb = {0};
    unsigned char *out;
    PyObject *result = NULL;
    if (PyLong_Check(out_obj)) {
        out = (unsigned char *)PyLong_AsVoidPtr(out_obj);
        if ((!out && PyErr_Occurred()) || out_len < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "an address needs out_len");
            goto done;
        }
    } else {
        if (PyObject_GetBuffer(out_obj, &outb, PyBUF_WRITABLE) < 0) goto done;
        out = outb.buf;
        out_len = outb.len;
    }
    if (pre.len + post.len + 9 > MAX_AAD || plain_off < 0 || plain_size < 0) {
        PyErr_SetString(PyExc_ValueError, "invalid read arguments");
        goto done;
    }
    const Decryptor *d = self;
    long long end = plain_off + out_len < plain_size ? plain_off + out_len : plain_size;
    if (plain_off >= end) { result = PyLong_FromLong(0); goto done; }
    int64_t first = plain_off / d->plain_bs, last = (end - 1) / d->plain_bs;
    int64_t count = last - first + 1;
    ReadCtx rc = {d, fd, pre.buf ? pre.buf : (void *)"", post.buf ? post.buf : (void *)"",
                  pre.len, post.len, (plain_size + d->plain_bs - 1) / d->plain_bs};
    Py_ssize_t skip = (Py_ssize_t)(plain_off - first * d->plain_bs);
    Py_ssize_t want = (Py_ssize_t)(end - plain_off);
    /* Write straight into `out` only when it starts on a chunk edge and holds every chunk
     * whole: the file on disk may be longer than plain_size says (it grew after the caller
     * looked), and a chunk is always decrypted whole. Otherwise use a temporary buffer. */
    int direct = skip == 0 && (int64_t)out_len >= count * d->plain_bs;
    unsigned char *dst = out;
    unsigned char *tmp = NULL;
    if (!direct) {
        tmp = malloc((size_t)count * d->plain_bs);
        if (!tmp) { PyErr_NoMemory(); goto done; }
        dst = tmp;
    }
    Piece pieces[MAX_WORKERS + 1];
    int npieces = 1;
    Py_BEGIN_ALLOW_THREADS
    int workers = (count * d->plain_bs) >= SPLIT_MIN ? ensure_pool() : 0;
    if (workers > 0 && workers > pool_target) /* set_threads() may have lowered it */
        workers = pool_target > 0 ? pool_target : 0;
    npieces = workers + 1;
    if (npieces > count) npieces = (int)count;
    int64_t per = count / npieces, extra = count % npieces, at = first;
    for (int i = 0; i < npieces; i++) {
        int64_t c = per + (i < extra ? 1 : 0);
        pieces[i] = (Piece){&rc, at, c, dst + (at - first) * d->plain_bs, 0, OK, 0, 0, 0};
        at += c;
    }
    if (npieces == 1)
        run_piece(&pieces[0]);
    else
        run_split(pieces, npieces);
    Py_END_ALLOW_THREADS
    /* In chunk order: the first failing piece raises; a short piece (EOF) ends the data. */
    Py_ssize_t got = 0;
    for (int i = 0; i < npieces; i++) {
        if (pieces[i].err) {
            raise_piece(&pieces[i]);
            free(tmp);
            goto done;
        }
        got += pieces[i].got;
        if (pieces[i].got < pieces[i].count * d->plain_bs) break;
    }
    Py_ssize_t n = got - skip;
    if (n > want) n = want;
    if (n < 0) n = 0;
    if (tmp) { memcpy(out, tmp + skip, (size_t)n); free(tmp); }
    result = PyLong_FromSsize_t(n);
done:
    if (outb.buf) PyBuffer_Release(&outb);
    if (post.buf) PyBuffer_Release(&post);
    if (pre.buf) PyBuffer_Release(&pre);
    return result;
}


/* ---- sealing (the Sam packer) ------------------------------------------------------ */

/* Seal `count` chunks of `plain` (chunk `first` onwards) into `out`; fresh random nonces. */
static int seal_chunks(const Decryptor *d, const ReadCtx *rc, int64_t first, const unsigned char *plain,
                       Py_ssize_t plain_len, unsigned char *out) {
    EVP_CIPHER_CTX *ctx = keyed_ctx(d, 1);
    if (!ctx) return E_NOMEM;
    Py_ssize_t pos = 0;
    for (int64_t c = first; pos < plain_len; c++) {
        Py_ssize_t n = plain_len - pos < d->plain_bs ? plain_len - pos : d->plain_bs;
        unsigned char *o = out + (c - first) * d->cipher_bs;
        do {
            if (RAND_bytes(o, (int)d->nonce_len) != 1) return E_NOMEM;
        } while (all_zero(o, d->nonce_len));
        unsigned char aad[MAX_AAD];
        Py_ssize_t a = 0;
        memcpy(aad, rc->aad_pre, rc->pre_len); a += rc->pre_len;
        for (int i = 7; i >= 0; i--) aad[a++] = (unsigned char)((uint64_t)c >> (8 * i));
        memcpy(aad + a, rc->aad_post, rc->post_len); a += rc->post_len;
        if (d->last_flag) aad[a++] = (c == rc->nchunks_total - 1) ? 1 : 0;
        int len = 0;
        if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, o) != 1 ||
            EVP_EncryptUpdate(ctx, NULL, &len, aad, (int)a) != 1 ||
            EVP_EncryptUpdate(ctx, o + d->nonce_len, &len, plain + pos, (int)n) != 1 ||
            EVP_EncryptFinal_ex(ctx, o + d->nonce_len + n, &len) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, o + d->nonce_len + n) != 1)
            return E_AUTH;
        pos += n;
    }
    return OK;
}

/*
 * seal_into(plain, out, first_chunk, plain_size, aad_post=b"", aad_pre=b"") -> int
 * Encrypt whole chunks (only the file's last chunk may be short); returns cipher bytes written.
 */
static PyObject *Decryptor_seal_into(Decryptor *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"plain", "out", "first_chunk", "plain_size", "aad_post", "aad_pre", NULL};
    Py_buffer plain = {0}, outb = {0}, post = {0}, pre = {0};
    long long first, plain_size;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*w*LL|y*y*", kwlist, &plain, &outb, &first,
                                     &plain_size, &post, &pre))
        return NULL;
    const Decryptor *d = self;
    int64_t nchunks = (plain.len + d->plain_bs - 1) / d->plain_bs;
    int64_t total = (plain_size + d->plain_bs - 1) / d->plain_bs;
    Py_ssize_t need = plain.len + nchunks * (d->nonce_len + TAG_LEN);
    if (pre.len + post.len + 9 > MAX_AAD || first < 0 || plain_size < 0 || outb.len < need ||
        (first + nchunks < total && plain.len % d->plain_bs) ||
        first * d->plain_bs + plain.len > plain_size) {
        PyErr_SetString(PyExc_ValueError, "invalid seal arguments");
        goto done;
    }
    ReadCtx rc = {d, -1, pre.buf ? pre.buf : (void *)"", post.buf ? post.buf : (void *)"",
                  pre.len, post.len, total};
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = seal_chunks(d, &rc, first, plain.buf, plain.len, outb.buf);
    Py_END_ALLOW_THREADS
    if (err == E_NOMEM) { PyErr_NoMemory(); goto done; }
    if (err) { PyErr_SetString(PyExc_RuntimeError, "OpenSSL AES-GCM encryption failed"); goto done; }
    result = PyLong_FromSsize_t(need);
done:
    PyBuffer_Release(&plain);
    PyBuffer_Release(&outb);
    if (post.buf) PyBuffer_Release(&post);
    if (pre.buf) PyBuffer_Release(&pre);
    return result;
}

static PyObject *Decryptor_get(Decryptor *self, void *which) {
    switch ((intptr_t)which) {
    case 0: return PyLong_FromSsize_t(self->header_len);
    case 1: return PyLong_FromSsize_t(self->plain_bs);
    case 2: return PyLong_FromSsize_t(self->cipher_bs);
    default: return PyLong_FromSsize_t(self->nonce_len);
    }
}

static PyGetSetDef Decryptor_getset[] = {
    {"header_len", (getter)Decryptor_get, NULL, NULL, (void *)0},
    {"plain_bs", (getter)Decryptor_get, NULL, NULL, (void *)1},
    {"cipher_bs", (getter)Decryptor_get, NULL, NULL, (void *)2},
    {"nonce_len", (getter)Decryptor_get, NULL, NULL, (void *)3},
    {NULL},
};

static PyMethodDef Decryptor_methods[] = {
    {"read_into", (PyCFunction)(void (*)(void))Decryptor_read_into, METH_VARARGS | METH_KEYWORDS,
     "read_into(fd, out, plain_off, plain_size, aad_post=b'', aad_pre=b'', out_len=-1) -> int\n"
     "Decrypt plaintext [plain_off, plain_off+len(out)) of an open ciphertext file into out."},
    {"seal_into", (PyCFunction)(void (*)(void))Decryptor_seal_into, METH_VARARGS | METH_KEYWORDS,
     "seal_into(plain, out, first_chunk, plain_size, aad_post=b'', aad_pre=b'') -> int\n"
     "Encrypt whole chunks of plain (fresh random nonces) into out; returns the bytes written."},
    {NULL},
};

static PyTypeObject DecryptorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cryptfs.core._blocks.Decryptor",
    .tp_basicsize = sizeof(Decryptor),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "AES-256-GCM chunk decryptor for one key and one on-disk layout.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decryptor_init,
    .tp_dealloc = (destructor)Decryptor_dealloc,
    .tp_methods = Decryptor_methods,
    .tp_getset = Decryptor_getset,
};

static PyObject *set_threads(PyObject *mod, PyObject *arg) {
    (void)mod;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0 || n > MAX_WORKERS) {
        PyErr_SetString(PyExc_ValueError, "threads must be 0..16");
        return NULL;
    }
    pthread_mutex_lock(&pool_mu);
    pool_target = (int)n; /* started workers beyond the target stay idle */
    pthread_mutex_unlock(&pool_mu);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_threads", set_threads, METH_O,
     "set_threads(n): worker threads used besides the caller for large reads (default ncpu-1)."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "cryptfs.core._blocks",
    "C block path: AES-256-GCM chunk decryption over OpenSSL EVP, GIL released.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__blocks(void) {
    if (PyType_Ready(&DecryptorType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    BlockError = PyErr_NewException("cryptfs.core._blocks.BlockError", PyExc_Exception, NULL);
    Py_INCREF(&DecryptorType);
    if (!BlockError || PyModule_AddObject(m, "Decryptor", (PyObject *)&DecryptorType) < 0 ||
        PyModule_AddObject(m, "BlockError", BlockError) < 0 ||
        PyModule_AddStringConstant(m, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
