/* test_ec.c: the event count (lib/ec.c), the one way anything in fpp sleeps: no post is ever
 * lost, whatever the interleaving of arm / check / wait against store / post (issue 8, item 5).
 * 0.1 had four hand-rolled sleep sites; the one on result space announced itself after its
 * check, with no fence on the parent's side, and lost wake-ups there (up to 2 ms each, the
 * parent spinning meanwhile). Here a lost post would sleep until a 5 s deadline: no round may
 * reach it. */
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include "common.h"
#include "core/ec.h"

#define DEADLINE_NS 5000000000LL /* a lost post sleeps this long: no round may get there */

/* Shared with the poster (a thread, or a process: the words are in MAP_SHARED memory). */
typedef struct shared {
    fpp__ec ec[3];
    _Atomic uint64_t cond[3]; /* the condition for round r: cond[i] >= r for the word posted */
    _Atomic uint64_t acked;   /* the waiter finished round r */
    _Atomic uint64_t which;   /* the word the poster posts in round r (waitv) */
} shared;

static shared *S;

static void map_shared(void)
{
    void *m = mmap(NULL, sizeof *S, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    S = m;
}

/* A pseudo-random pause of 0 to a few microseconds (sometimes a yield), so that posts land
 * before the arm, between arm and check, between check and wait, and during the wait. */
static void jiggle(unsigned *seed)
{
    unsigned r = rand_r(seed);
    if (r % 16 == 0) {
        sched_yield();
        return;
    }
    for (unsigned i = 0; i < r % 2048; i++)
        fpp__cpu_relax();
}

enum { POST, BUMP };

/* Posts round r once the waiter has finished round r - 1, after a pause; words: how many the
 * waiter sleeps on (1: fpp__ec_wait, 3: fpp__ec_waitv), the poster picks one. */
static void post_rounds(uint64_t rounds, int words, int how)
{
    unsigned seed = 12345;
    for (uint64_t r = 1; r <= rounds; r++) {
        while (atomic_load(&S->acked) < r - 1)
            fpp__cpu_relax();
        jiggle(&seed);
        uint64_t i = words > 1 ? rand_r(&seed) % (unsigned)words : 0;
        atomic_store(&S->which, i);
        atomic_store(&S->cond[i], r);
        if (how == BUMP)
            fpp__ec_bump(&S->ec[i]);
        else
            fpp__ec_post(&S->ec[i]);
    }
}

typedef struct post_job { uint64_t rounds; int words, how; } post_job;

static void *poster_thread(void *arg)
{
    post_job *j = arg;
    post_rounds(j->rounds, j->words, j->how);
    return NULL;
}

static bool ready(uint64_t r, int words)
{
    for (int i = 0; i < words; i++)
        if (atomic_load(&S->cond[i]) >= r)
            return true;
    return false;
}

/* The waiter's side: for each round, arm, check, wait (until the deadline) as every sleep site
 * in fpp does. Returns the rounds that reached their deadline; *sleeps gets how many waits
 * were entered, *max_ms the longest. */
static int wait_rounds(uint64_t rounds, int words, long *sleeps, double *max_ms)
{
    int late = 0;
    unsigned seed = 777;
    *sleeps = 0;
    *max_ms = 0;
    for (uint64_t r = 1; r <= rounds; r++) {
        jiggle(&seed); /* so that the post also lands before the arm, or between arm and check */
        for (;;) {
            uint32_t v[3];
            fpp__ec *e[3];
            for (int i = 0; i < words; i++) {
                e[i] = &S->ec[i];
                v[i] = fpp__ec_arm(e[i]);
            }
            if (ready(r, words))
                break;
            int64_t t0 = fpp__now_ns(), deadline = t0 + DEADLINE_NS;
            if (words == 1 || fpp__ec_waitv(e, v, words, deadline, NULL) != 0)
                fpp__ec_wait(e[0], v[0], words == 1 ? deadline : t0 + 1000000);
            int64_t t1 = fpp__now_ns();
            (*sleeps)++;
            *max_ms = FPP__MAX(*max_ms, (t1 - t0) / 1e6);
            if (t1 >= deadline)
                late++;
        }
        atomic_store(&S->acked, r);
    }
    return late;
}

static void run(uint64_t rounds, int words, int how, bool process)
{
    map_shared();
    post_job j = {rounds, words, how};
    pthread_t th;
    pid_t kid = -1;
    if (process) {
        kid = fork();
        cr_assert_geq(kid, 0);
        if (kid == 0) {
            post_rounds(rounds, words, how);
            _exit(0);
        }
    } else {
        pthread_create(&th, NULL, poster_thread, &j);
    }
    long sleeps;
    double max_ms;
    int64_t t0 = fpp__now_ns();
    int late = wait_rounds(rounds, words, &sleeps, &max_ms);
    double s = (fpp__now_ns() - t0) / 1e9;
    if (process) {
        int st;
        cr_assert_eq(waitpid(kid, &st, 0), kid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    } else {
        pthread_join(th, NULL);
    }
    cr_log_info("%llu rounds on %d word(s) (%s, poster in a %s): %ld waits entered, the longest %.2f ms, %.2f s in all",
                (unsigned long long)rounds, words, how == BUMP ? "bump" : "post", process ? "process" : "thread", sleeps,
                max_ms, s);
    cr_expect_eq(late, 0, "%d round(s) slept until their deadline: a lost wake-up", late);
    cr_expect_gt(sleeps, 0, "some rounds really slept");
    cr_expect_lt(sleeps, (long)rounds, "some rounds found the post before sleeping");
    munmap(S, sizeof *S);
}

Test(ec, no_post_is_lost_between_arm_check_and_wait, .fini = assert_clean, .timeout = 120)
{
    run(20000, 1, POST, false);
}

Test(ec, no_bump_is_lost_between_arm_check_and_wait, .fini = assert_clean, .timeout = 120)
{
    run(20000, 1, BUMP, false);
}

Test(ec, no_post_is_lost_across_processes, .fini = assert_clean, .timeout = 120)
{
    run(20000, 1, POST, true);
}

/* The parent sleeps on several words at once (its workers' bells, the fork server's mailbox,
 * the poke): a post to any one of them ends the sleep. */
Test(ec, no_post_is_lost_on_any_of_several_words, .fini = assert_clean, .timeout = 120)
{
    run(20000, 3, POST, false);
}

/* A word a worker scribbles over costs at most an early wake-up or a wait until the deadline:
 * never a crash, never a spin (every wait below either sleeps or returns because the word
 * moved). */
Test(ec, a_scribbled_word_costs_spurious_wakeups_only, .fini = assert_clean, .timeout = 60)
{
    map_shared();
    atomic_store(&S->acked, 0);
    pid_t kid = fork();
    cr_assert_geq(kid, 0);
    if (kid == 0) {
        /* The scribbler: a random word every 100 us for 0.5 s, the waiter bit included. */
        unsigned seed = 99;
        int64_t until = fpp__now_ns() + 500000000;
        while (fpp__now_ns() < until) {
            atomic_store(&S->ec[0].w, (uint32_t)rand_r(&seed));
            atomic_fetch_add(&S->acked, 1);
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
        _exit(0);
    }
    long waits = 0;
    int64_t until = fpp__now_ns() + 700000000;
    while (fpp__now_ns() < until) {
        uint32_t v = fpp__ec_arm(&S->ec[0]);
        fpp__ec_wait(&S->ec[0], v, fpp__now_ns() + 10000000);
        waits++;
    }
    waitpid(kid, NULL, 0);
    long scribbles = atomic_load(&S->acked);
    cr_log_info("scribbled word: %ld scribbles, %ld waits in 0.7 s", scribbles, waits);
    /* Each wait ends because the word moved (a scribble) or at its 10 ms deadline (70 of
     * those in 0.7 s), with a little slack for a scribble landing between arm and wait. */
    cr_expect_leq(waits, 2 * scribbles + 70 + 10, "the waiter spun: %ld waits for %ld scribbles", waits, scribbles);
    munmap(S, sizeof *S);
}
