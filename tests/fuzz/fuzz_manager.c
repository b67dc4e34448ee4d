/* fuzz_manager.c - libFuzzer target for the Manager server's frame handling.
 *
 * Drives pool__mgr_srv_feed (every byte a client can send reaches the server through
 * it) on a fresh in-memory server per input, with up to four fake connections
 * (output dropped), some sharing a client session, some starting in the
 * handshake. Besides bytes, an input can close a connection (releasing its locks,
 * returning its queue items, cancelling its parked request) and expire every
 * deadline, so the cleanup and timeout paths are fuzzed too.
 *
 * INPUT FORMAT: byte 0 = flags (bit 0: server has an authkey; bit 1: connection 0
 * starts in the handshake; bits 2-3: connections - 1). Then commands; command byte
 * c: connection c & 3 (mod count), action c >> 2:
 *   0..59  feed: one length byte L, then L bytes
 *   60     close the connection (a fresh one takes its place)
 *   61     expire every deadline
 *   62     feed: two length bytes (little-endian), then that many bytes
 *   63     the connection's peer read everything (clear its output)
 *
 * Builds:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -Itests tests/fuzz/fuzz_manager.c
 *   (see build_and_run.sh); with -DFUZZ_STANDALONE it has its own main() that writes
 *   the seed corpus (--write-seeds DIR) or runs the inputs named on its command line.
 *   tests/test_manager_fuzz.c includes this file to run the seeds, every input in
 *   tests/fuzz/crashes/, and a few thousand mutations under ctest.
 */
#define POOL_IMPLEMENTATION
#include "pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CONNS 4

static pool__mgr_sconn *fuzz_conn(pool__mgr_srv *s, int slot, int handshake)
{
    pool__mgr_sconn *c = pool__mgr_srv_conn_new(s, -1);
    if (!c) return NULL;
    if (!handshake) {
        c->state = POOL__MGR_S_READY;
        c->sess = pool__mgr_sess_get(s, (uint64_t)(1 + slot % 2)); /* slots 0 and 2 share a client */
        if (!c->sess) { pool__mgr_srv_kill(s, c); pool__mgr_srv_reap(s); return NULL; }
    }
    return c;
}

/* Frees dead connections, forgetting them first (their slots are refilled on use). */
static void fuzz_reap(pool__mgr_srv *s, pool__mgr_sconn **conns, int n)
{
    int i;
    for (i = 0; i < n; i++)
        if (conns[i] && conns[i]->state == POOL__MGR_S_DEAD) conns[i] = NULL;
    pool__mgr_srv_reap(s);
}

/* Runs one input; always returns 0 (libFuzzer's convention). */
static int fuzz_manager_one(const uint8_t *data, size_t size)
{
    pool_manager_config cfg;
    pool__mgr_srv *s;
    pool__mgr_sconn *conns[FUZZ_CONNS];
    size_t pos = 1;
    int n, i;
    if (size < 1) return 0;
    memset(&cfg, 0, sizeof cfg);
    cfg.max_frame = 4096; /* small, so length limits are reachable */
    if (data[0] & 1) { cfg.authkey = "fuzz"; cfg.authkey_len = 4; }
    if (pool__mgr_srv_init(&s, &cfg) != POOL_OK) return 0;
    n = 1 + ((data[0] >> 2) & 3);
    for (i = 0; i < n; i++) conns[i] = fuzz_conn(s, i, i == 0 && (data[0] & 2));
    while (pos < size) {
        uint8_t cmd = data[pos++];
        int slot = (cmd & 3) % n, action = cmd >> 2;
        pool__mgr_sconn *c = conns[slot];
        size_t len;
        if (action == 60) {
            if (c) pool__mgr_srv_kill(s, c);
            fuzz_reap(s, conns, n);
            conns[slot] = fuzz_conn(s, slot, 0);
            continue;
        }
        if (!c) { /* closed by an earlier error: a fresh connection takes the slot */
            c = conns[slot] = fuzz_conn(s, slot, 0);
            if (!c) break;
        }
        if (action == 61) { pool__mgr_srv_expire(s, INT64_MAX); fuzz_reap(s, conns, n); continue; }
        if (action == 63) { c->out.n = 0; c->out_off = 0; continue; }
        if (action == 62) {
            if (size - pos < 2) break;
            len = (size_t)data[pos] | (size_t)data[pos + 1] << 8;
            pos += 2;
        } else {
            if (size - pos < 1) break;
            len = data[pos++];
        }
        if (len > size - pos) len = size - pos;
        if (len > 0 && pool__mgr_buf_reserve(&c->in, len) == POOL_OK) {
            memcpy(c->in.p + c->in.n, data + pos, len);
            c->in.n += len;
            /* as the event loop does: an error closes this connection only */
            if (pool__mgr_srv_feed(s, c) != POOL_OK) pool__mgr_srv_kill(s, c);
            else c->out.n = c->out_off = 0; /* the peer reads its replies */
        }
        pos += len;
        fuzz_reap(s, conns, n);
    }
#ifdef FUZZ_VERBOSE
    fprintf(stderr, "fuzz: %u objects, %zu connections left\n", s->nobjs, s->nconns);
#endif
    pool__mgr_srv_free(s, 0);
    return 0;
}

/* ---- seeds: valid conversations the mutator starts from ---- */

typedef struct fuzz_seed { uint8_t b[8192]; size_t n; } fuzz_seed;

static void seed_bytes(fuzz_seed *sd, int slot, const uint8_t *p, size_t n)
{
    if (sd->n + 3 + n > sizeof sd->b) return;
    sd->b[sd->n++] = (uint8_t)(62 << 2 | slot);
    sd->b[sd->n++] = (uint8_t)n;
    sd->b[sd->n++] = (uint8_t)(n >> 8);
    memcpy(sd->b + sd->n, p, n);
    sd->n += n;
}

/* One request frame of one op, as the client builds it. */
static void seed_op(fuzz_seed *sd, int slot, uint8_t op, uint8_t kind, uint32_t id, int32_t timeout,
                    uint32_t aux, int64_t num, int nb, const char *b0, const char *b1, const char *b2)
{
    pool__mgr_buf b = {NULL, 0, 0};
    pool__mgr_req_begin(&b, 1, (uint64_t)(slot + 1));
    pool__mgr_req_op(&b, op, kind, id, timeout, aux, num, (uint16_t)nb);
    if (nb > 0) pool__mgr_req_blob(&b, b0, strlen(b0));
    if (nb > 1) pool__mgr_req_blob(&b, b1, strlen(b1));
    if (nb > 2) pool__mgr_req_blob(&b, b2, strlen(b2));
    pool__mgr_put32(b.p, (uint32_t)(b.n - 4));
    seed_bytes(sd, slot, b.p, b.n);
    pool__mgr_buf_free(&b);
}

static int fuzz_seeds(fuzz_seed *out, int max)
{
    int k = 0, kind;
    fuzz_seed *sd;
    if (max < 4) return 0;
    /* 1: open one object of every kind (ids 0..10), then an op on each */
    sd = &out[k++];
    sd->n = 0;
    sd->b[sd->n++] = 3 << 2; /* 4 connections, no key */
    for (kind = 1; kind < POOL__MGR_K_COUNT; kind++) {
        char name[8];
        snprintf(name, sizeof name, "o%d", kind);
        seed_op(sd, 0, POOL__MGR_OP_OPEN, (uint8_t)kind, 0, 0, 0, kind == POOL__MGR_K_BARRIER ? 2 : 1, 1,
                name, NULL, NULL);
    }
    seed_op(sd, 0, POOL__MGR_OP_D_SET, POOL__MGR_K_DICT, 0, 0, 0, 0, 2, "k", "v", NULL);
    seed_op(sd, 1, POOL__MGR_OP_D_ADD, POOL__MGR_K_DICT, 0, 0, 0, 5, 1, "n", NULL, NULL);
    seed_op(sd, 1, POOL__MGR_OP_D_CAS, POOL__MGR_K_DICT, 0, 0, 0, 0, 3, "k", "v", "w");
    seed_op(sd, 2, POOL__MGR_OP_D_ITER, POOL__MGR_K_DICT, 0, 0, 0, 0, 0, NULL, NULL, NULL);
    seed_op(sd, 0, POOL__MGR_OP_L_APPEND, POOL__MGR_K_LIST, 1, 0, 0, 0, 1, "x", NULL, NULL);
    seed_op(sd, 0, POOL__MGR_OP_L_POP, POOL__MGR_K_LIST, 1, 0, 100, -1, 0, NULL, NULL, NULL);
    seed_op(sd, 1, POOL__MGR_OP_Q_GET, POOL__MGR_K_QUEUE, 2, -1, 100, 0, 0, NULL, NULL, NULL); /* parks */
    seed_op(sd, 0, POOL__MGR_OP_Q_PUT, POOL__MGR_K_QUEUE, 2, 0, 0, 0, 1, "item", NULL, NULL);
    seed_op(sd, 0, POOL__MGR_OP_K_ACQ, POOL__MGR_K_LOCK, 3, -1, 0, 0, 0, NULL, NULL, NULL);
    seed_op(sd, 3, POOL__MGR_OP_K_ACQ, POOL__MGR_K_LOCK, 3, 1000, 0, 0, 0, NULL, NULL, NULL); /* parks */
    seed_op(sd, 2, POOL__MGR_OP_K_ACQ, POOL__MGR_K_RLOCK, 4, -1, 0, 0, 0, NULL, NULL, NULL);
    seed_op(sd, 2, POOL__MGR_OP_S_ACQ, POOL__MGR_K_SEM, 5, -1, 0, 0, 0, NULL, NULL, NULL);
    seed_op(sd, 2, POOL__MGR_OP_E_WAIT, POOL__MGR_K_EVENT, 7, -1, 0, 0, 0, NULL, NULL, NULL);
    seed_op(sd, 1, POOL__MGR_OP_E_SET, POOL__MGR_K_EVENT, 7, 0, 0, 0, 0, NULL, NULL, NULL);
    seed_op(sd, 1, POOL__MGR_OP_C_ACQ, POOL__MGR_K_COND, 8, -1, 0, 0, 0, NULL, NULL, NULL);
    seed_op(sd, 1, POOL__MGR_OP_C_WAIT, POOL__MGR_K_COND, 8, 50, 0, 0, 0, NULL, NULL, NULL);
    seed_op(sd, 2, POOL__MGR_OP_B_WAIT, POOL__MGR_K_BARRIER, 9, 100, 0, 0, 0, NULL, NULL, NULL);
    seed_op(sd, 0, POOL__MGR_OP_V_ADD, POOL__MGR_K_VALUE, 10, 0, 0, 3, 0, NULL, NULL, NULL);
    sd->b[sd->n++] = 61 << 2;     /* expire */
    sd->b[sd->n++] = 60 << 2 | 0; /* close connection 0: releases the lock, returns "item" */
    /* 2: a handshake (no key) then a request */
    sd = &out[k++];
    sd->n = 0;
    sd->b[sd->n++] = 2;
    {
        uint8_t hello[84];
        memset(hello, 0, sizeof hello);
        pool__mgr_put32(hello, POOL__MGR_HELLO_LEN);
        hello[4] = POOL__MGR_T_HELLO;
        hello[5] = POOL__MGR_WIRE_VERSION;
        pool__mgr_put64(hello + 12, 77);
        seed_bytes(sd, 0, hello, sizeof hello);
    }
    seed_op(sd, 0, POOL__MGR_OP_PING, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL);
    /* 3: a batch of two ops, and an ACK frame */
    sd = &out[k++];
    sd->n = 0;
    sd->b[sd->n++] = 0;
    seed_op(sd, 0, POOL__MGR_OP_OPEN, POOL__MGR_K_DICT, 0, 0, 0, 0, 1, "d", NULL, NULL);
    {
        pool__mgr_buf b = {NULL, 0, 0};
        uint8_t ack[16];
        pool__mgr_req_begin(&b, 2, 1);
        pool__mgr_req_op(&b, POOL__MGR_OP_D_SET, POOL__MGR_K_DICT, 0, 0, 0, 0, 2);
        pool__mgr_req_blob(&b, "a", 1);
        pool__mgr_req_blob(&b, "b", 1);
        pool__mgr_req_op(&b, POOL__MGR_OP_D_GET, POOL__MGR_K_DICT, 0, 0, 0, 0, 1);
        pool__mgr_req_blob(&b, "a", 1);
        pool__mgr_put32(b.p, (uint32_t)(b.n - 4));
        seed_bytes(sd, 0, b.p, b.n);
        pool__mgr_buf_free(&b);
        memset(ack, 0, sizeof ack);
        pool__mgr_put32(ack, POOL__MGR_REQ_HDR);
        ack[4] = POOL__MGR_T_ACK;
        seed_bytes(sd, 0, ack, sizeof ack);
    }
    /* 4: a queue item delivered, then its connection drops before the ack */
    sd = &out[k++];
    sd->n = 0;
    sd->b[sd->n++] = 1 << 2;
    seed_op(sd, 0, POOL__MGR_OP_OPEN, POOL__MGR_K_QUEUE, 0, 0, 0, 1, 1, "q", NULL, NULL);
    seed_op(sd, 0, POOL__MGR_OP_Q_PUT, POOL__MGR_K_QUEUE, 0, 0, 0, 0, 1, "one", NULL, NULL);
    seed_op(sd, 0, POOL__MGR_OP_Q_PUT, POOL__MGR_K_QUEUE, 0, 100, 0, 0, 1, "two", NULL,
            NULL); /* parks: full */
    seed_op(sd, 1, POOL__MGR_OP_Q_GET, POOL__MGR_K_QUEUE, 0, 0, 100, 0, 0, NULL, NULL, NULL);
    sd->b[sd->n++] = 60 << 2 | 1;
    seed_op(sd, 1, POOL__MGR_OP_Q_JOIN, POOL__MGR_K_QUEUE, 0, 10, 0, 0, 0, NULL, NULL, NULL);
    sd->b[sd->n++] = 61 << 2;
    return k;
}

/* A tiny deterministic mutator for runs without libFuzzer. */
static uint64_t fuzz_rng(uint64_t *x)
{
    *x ^= *x << 13; *x ^= *x >> 7; *x ^= *x << 17;
    return *x;
}

static size_t fuzz_mutate(uint8_t *b, size_t n, size_t cap, uint64_t *rng)
{
    int k, rounds = 1 + (int)(fuzz_rng(rng) % 4);
    for (k = 0; k < rounds; k++) {
        size_t at = n ? (size_t)(fuzz_rng(rng) % n) : 0;
        switch (fuzz_rng(rng) % 5) {
        case 0: if (n) b[at] ^= (uint8_t)(1u << (fuzz_rng(rng) % 8)); break;
        case 1: if (n) b[at] = (uint8_t)fuzz_rng(rng); break;
        case 2: if (n > 1) { memmove(b + at, b + at + 1, n - at - 1); n--; } break;
        case 3:
            if (n < cap) {
                memmove(b + at + 1, b + at, n - at);
                b[at] = (uint8_t)fuzz_rng(rng);
                n++;
            }
            break;
        default: if (n > 8) { size_t len = 1 + fuzz_rng(rng) % 8, from = fuzz_rng(rng) % (n - len);
                     if (at + len <= n) memmove(b + at, b + from, len); } break;
        }
    }
    return n;
}

/* Seeds, then `iterations` mutations of them. Returns the number of inputs run. */
static long fuzz_run_mutations(long iterations, uint64_t seed)
{
    static fuzz_seed seeds[8];
    static uint8_t buf[8192];
    int ns = fuzz_seeds(seeds, 8), i;
    long it, runs = 0;
    uint64_t rng = seed | 1;
    for (i = 0; i < ns; i++, runs++) fuzz_manager_one(seeds[i].b, seeds[i].n);
    for (it = 0; it < iterations; it++, runs++) {
        fuzz_seed *sd = &seeds[fuzz_rng(&rng) % (uint64_t)ns];
        size_t n = sd->n;
        memcpy(buf, sd->b, n);
        n = fuzz_mutate(buf, n, sizeof buf, &rng);
        fuzz_manager_one(buf, n);
    }
    return runs;
}

/* Runs one file as an input; -1 if unreadable. */
static int fuzz_run_file(const char *path)
{
    static uint8_t buf[1 << 20];
    FILE *f = fopen(path, "rb");
    size_t n;
    if (!f) return -1;
    n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    fuzz_manager_one(buf, n);
    return 0;
}

#ifdef FUZZ_STANDALONE
int main(int argc, char **argv)
{
    int i;
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) {
        static fuzz_seed seeds[8];
        int ns = fuzz_seeds(seeds, 8);
        for (i = 0; i < ns; i++) {
            char path[4096];
            FILE *f;
            snprintf(path, sizeof path, "%s/seed-%d", argv[2], i);
            f = fopen(path, "wb");
            if (!f || fwrite(seeds[i].b, 1, seeds[i].n, f) != seeds[i].n) { perror(path); return 1; }
            fclose(f);
        }
        return 0;
    }
    if (argc == 1) {
        printf("%ld inputs run\n", fuzz_run_mutations(20000, 1));
        return 0;
    }
    for (i = 1; i < argc; i++)
        if (fuzz_run_file(argv[i]) != 0) { perror(argv[i]); return 1; }
    return 0;
}
#elif !defined(FUZZ_NO_ENTRY)
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_manager_one(data, size); }
#endif
