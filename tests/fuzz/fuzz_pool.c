/* fuzz_pool.c: libFuzzer target over everything the parent decodes from memory a worker can
 * write: completion records (ticket, status, lengths, arena offsets), completion indices,
 * ring cell states, worker block phase/ticket (crash recovery) and the audit. The input is a
 * little program of such writes, run against a real pool (lib/pool.c, lib/ring.c,
 * lib/arena.c) in private memory with no worker running. Checks: no sanitizer report, and
 * every task handed to the pool leaves it exactly once (fpp__tm_finished, defined here).
 *
 * Build: cmake -DFPP_BUILD_FUZZ=ON -DCMAKE_C_COMPILER=clang; run: fuzz_pool tests/fuzz/corpus */
#include <stdlib.h>
#include <string.h>

#include "../../lib/fpp_internal.h"

#define NT 24
static fpp_task tasks[NT];
static int finished[NT];

void fpp__tm_finished(fpp_tm *tm, fpp_task *t)
{
    (void)tm;
    int i = (int)t->id;
    if (i < 0 || i >= NT || ++finished[i] > 1)
        abort(); /* a task left the pool twice, or a task that is not ours */
    t->arg = NULL; /* points at the harness's static buffer */
    fpp__task_clear(t);
}

typedef struct reader { const uint8_t *p; size_t n; } reader;
static uint64_t take(reader *r, size_t k)
{
    uint64_t v = 0;
    for (size_t i = 0; i < k && r->n; i++, r->p++, r->n--)
        v |= (uint64_t)*r->p << (8 * i);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char argbuf[2048];
    fpp_log_set(NULL, NULL, FPP_LOG_OFF);
    fpp_executor ex;
    memset(&ex, 0, sizeof ex);
    ex.opts = (fpp_executor_opts){.workers = 2, .queue_capacity = 8, .max_arg_size = 1024, .max_result_size = 4096};
    fpp__pool pool;
    if (fpp__pool_create(&pool, &ex.opts, false) != 0)
        return 0;
    pool.ex = &ex;
    for (uint32_t w = 0; w < pool.lay.nworkers; w++)
        pool.wp[w].alive = true;
    reader r = {data, size};
    memset(finished, 0, sizeof finished);
    int dispatched = 0;
    for (int i = 0; i < NT; i++) {
        memset(&tasks[i], 0, sizeof tasks[i]);
        tasks[i].id = i;
        tasks[i].arg_len = (size_t)(take(&r, 1) * 5) % 1025;
        tasks[i].arg = argbuf;
        if (fpp__pool_dispatch(&pool, &tasks[i]) == 0)
            dispatched++;
        else
            break;
    }
    while (r.n) {
        uint32_t w = (uint32_t)take(&r, 1) % pool.lay.nworkers;
        fpp__wblock *b = fpp__wblock_of(pool.base, &pool.lay, w);
        switch (take(&r, 1) % 7) {
        case 0: { /* a completion record, then publish it */
            fpp__crec c;
            memset(&c, 0, sizeof c);
            uint64_t ct = atomic_load(&b->ctail);
            c.ticket = take(&r, 8);
            if (take(&r, 1) & 1) /* often a real ticket, so that deeper checks are reached */
                c.ticket = ((uint64_t)pool.fl[c.ticket % pool.nfl].gen << 32) | (c.ticket % pool.nfl);
            c.status = (uint32_t)take(&r, 1) % 4;
            c.len = (uint32_t)take(&r, 4);
            c.off = take(&r, 8);
            for (size_t k = 0; k < sizeof c.data; k++)
                c.data[k] = (unsigned char)take(&r, 1);
            b->ring[ct & (FPP__CRING - 1)] = c;
            atomic_store(&b->ctail, ct + 1);
            break;
        }
        case 1: fpp__pool_collect(&pool); break;
        case 2: atomic_store(&b->ctail, take(&r, 8)); break;
        case 3: atomic_store(&pool.cells[take(&r, 1) % pool.lay.ncells].state, take(&r, 8)); break;
        case 4: /* the worker dies with whatever its block says */
            atomic_store(&b->phase, (uint32_t)take(&r, 1) % 4);
            if (take(&r, 1) & 1)
                atomic_store(&b->ticket, take(&r, 8));
            else {
                uint32_t tag = (uint32_t)take(&r, 1) % pool.nfl;
                atomic_store(&b->ticket, ((uint64_t)pool.fl[tag].gen << 32) | tag);
            }
            fpp__pool_recover(&pool, w, FPP_CRASHED, 9, "worker killed by SIGKILL");
            break;
        case 5: fpp__pool_audit(&pool); break;
        case 6: { /* a worker claims the next cell for real */
            uint64_t pos;
            if (fpp__ring_claim_worker(pool.hdr, pool.cells, pool.lay.ncells, w, &pos) && (take(&r, 1) & 1)) {
                atomic_store(&b->ticket, pool.cells[pos & (pool.lay.ncells - 1)].ticket);
                atomic_store(&b->phase, FPP__PH_RUNNING);
                fpp__ring_release_worker(pool.cells, pool.lay.ncells, pos, w);
            }
            break;
        }
        }
    }
    /* Everything still in the pool leaves it now, once. */
    bool kill[2] = {false, false};
    fpp__pool_cancel(&pool, kill);
    for (uint32_t w = 0; w < pool.lay.nworkers; w++)
        fpp__pool_recover(&pool, w, FPP_CRASHED, 9, "end");
    for (int i = 0; i < dispatched; i++)
        if (finished[i] != 1)
            abort(); /* lost: never left the pool */
    fpp__pool_destroy(&pool);
    return 0;
}
