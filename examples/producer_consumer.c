/* producer_consumer.c - producer/consumer done right.
 *
 * The Python version needs a Queue, consumer threads, poison pills to stop them,
 * and care so that an exception in a consumer does not hang the producer. Here:
 * the pool's workers are the consumers; `max_queued` bounds the queue (a fast
 * producer then helps instead of filling memory); pool_close + pool_join is the
 * clean shutdown; a consumer's failure is a code, counted, never a hang.
 *
 *   cc -O2 -pthread producer_consumer.c -lm && ./a.out
 */
#define POOL_IMPLEMENTATION
#include "../pool.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct item { int id; int value; } item;

typedef struct totals {
    pthread_mutex_t mu;
    long sum;       /* under mu */
    int consumed;   /* under mu */
} totals;

/* The consumer: handles one item. Items with value % 97 == 0 are "bad". */
static int consume(const void *in, void *out, void *ctx)
{
    const item *it = (const item *)in;
    totals *t = (totals *)ctx;
    (void)out;
    if (it->value % 97 == 0) return 1; /* a failure: counted by the pool, nothing hangs */
    pthread_mutex_lock(&t->mu);
    t->sum += it->value;
    t->consumed++;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

typedef struct producer_arg { pool_t *pool; totals *t; int n; int refused; } producer_arg;

static void *produce(void *arg)
{
    producer_arg *pa = (producer_arg *)arg;
    int i;
    for (i = 0; i < pa->n; i++) {
        item it;
        it.id = i;
        it.value = i + 1;
        /* the item is copied into the pool: `it` may go out of scope */
        if (pool_submit(pa->pool, consume, &it, sizeof it, pa->t) != POOL_OK) pa->refused++;
    }
    return NULL;
}

int main(void)
{
    pool_t *p;
    pool_config cfg;
    pool_stats st;
    totals t;
    producer_arg pa;
    pthread_t producer;
    long expect = 0;
    int i, bad = 0;

    memset(&cfg, 0, sizeof cfg);
    cfg.workers = 3;
    cfg.max_queued = 64; /* a bounded queue */
    if (pool_create(&p, &cfg) != POOL_OK) return 1;
    pthread_mutex_init(&t.mu, NULL);
    t.sum = 0;
    t.consumed = 0;
    pa.pool = p;
    pa.t = &t;
    pa.n = 100000;
    pa.refused = 0;

    pthread_create(&producer, NULL, produce, &pa);
    pthread_join(producer, NULL);
    pool_close(p); /* no more items: this is the "sentinel" */
    pool_join(p);  /* every queued item is consumed */

    pool_get_stats(p, &st);
    for (i = 1; i <= pa.n; i++) {
        if (i % 97 == 0) bad++;
        else expect += i;
    }
    printf("produced %d, consumed %d, failed %llu, refused %d, sum %ld\n", pa.n, t.consumed,
           (unsigned long long)st.failed, pa.refused, t.sum);
    pool_destroy(p);
    pthread_mutex_destroy(&t.mu);
    return t.sum == expect && (int)st.failed == bad && pa.refused == 0 ? 0 : 1;
}
