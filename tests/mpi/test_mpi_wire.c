/* test_mpi_wire.c: lib/mpi_wire.c without an MPI run: batches written and read back, every
 * kind of malformed message refused at the right place, the rank message rewrite, the registry
 * digest. (The traffic itself is tested end to end by mpi_scenarios under mpiexec.) */
#include <criterion/criterion.h>
#include <string.h>

#include "mpi/mpi_int.h"

static fpp__mpi_task_rec task_rec(uint64_t ticket, uint64_t len, uint32_t flags)
{
    return (fpp__mpi_task_rec){.ticket = ticket, .id = (int64_t)ticket * 10, .fn = 3, .timeout_ms = 7, .len = len,
                               .flags = flags};
}

Test(mpi_wire, task_batch_reads_back_what_was_written)
{
    fpp__mpi_buf b = {0};
    cr_assert_eq(fpp__mpi_batch_begin(&b, FPP__MT_TASKS), 0);
    static const char five[5] = "abcde";
    size_t off[3];
    fpp__mpi_task_rec r0 = task_rec(1, 0, 0), r1 = task_rec(2, 5, 0), r2 = task_rec(3, 1u << 20, FPP__REC_BULK);
    cr_assert_eq(fpp__mpi_batch_add_task(&b, &r0, NULL, &off[0]), 0);
    cr_assert_eq(fpp__mpi_batch_add_task(&b, &r1, five, &off[1]), 0);
    cr_assert_eq(fpp__mpi_batch_add_task(&b, &r2, NULL, &off[2]), 0);
    cr_assert_eq(fpp__mpi_batch_hdr(&b)->count, 3u);
    /* Inline bytes are padded to 8; a bulk record carries none. */
    cr_assert_eq(b.len, sizeof(fpp__mpi_hdr) + 3 * sizeof(fpp__mpi_task_rec) + 8);
    cr_assert_eq(off[0], sizeof(fpp__mpi_hdr));
    cr_assert_eq(off[2], off[1] + sizeof(fpp__mpi_task_rec) + 8);

    fpp__mpi_rd rd;
    fpp__mpi_hdr h;
    cr_assert_eq(fpp__mpi_msg_open(&rd, b.p, b.len, &h), 0);
    cr_assert_eq(h.type, FPP__MT_TASKS);
    fpp__mpi_task_rec r;
    const unsigned char *bytes;
    cr_assert_eq(fpp__mpi_next_task(&rd, &r, &bytes), 1);
    cr_assert(r.ticket == 1 && r.len == 0 && r.id == 10 && r.fn == 3 && r.timeout_ms == 7);
    cr_assert_eq(fpp__mpi_next_task(&rd, &r, &bytes), 1);
    cr_assert(r.ticket == 2 && r.len == 5 && memcmp(bytes, five, 5) == 0);
    cr_assert_eq(fpp__mpi_next_task(&rd, &r, &bytes), 1);
    cr_assert(r.ticket == 3 && r.len == 1u << 20 && (r.flags & FPP__REC_BULK) && bytes == NULL);
    cr_assert_eq(fpp__mpi_next_task(&rd, &r, &bytes), 0);
    fpp__mpi_buf_free(&b);
}

Test(mpi_wire, result_batch_reads_back_what_was_written)
{
    fpp__mpi_buf b = {0};
    fpp__mpi_batch_begin(&b, FPP__MT_RESULTS);
    fpp__mpi_result_rec a = {.ticket = 9, .len = 11, .status = FPP_CRASHED, .signo = 11};
    fpp__mpi_result_rec c = {.ticket = 10, .len = 8u << 20, .status = FPP_DONE, .flags = FPP__REC_BULK};
    cr_assert_eq(fpp__mpi_batch_add_result(&b, &a, "rank 1: boo"), 0);
    cr_assert_eq(fpp__mpi_batch_add_result(&b, &c, NULL), 0);
    fpp__mpi_rd rd;
    fpp__mpi_hdr h;
    cr_assert_eq(fpp__mpi_msg_open(&rd, b.p, b.len, &h), 0);
    fpp__mpi_result_rec r;
    const unsigned char *bytes;
    cr_assert_eq(fpp__mpi_next_result(&rd, &r, &bytes), 1);
    cr_assert(r.ticket == 9 && r.status == FPP_CRASHED && r.signo == 11 && memcmp(bytes, "rank 1: boo", 11) == 0);
    cr_assert_eq(fpp__mpi_next_result(&rd, &r, &bytes), 1);
    cr_assert(r.ticket == 10 && r.len == 8u << 20 && bytes == NULL);
    cr_assert_eq(fpp__mpi_next_result(&rd, &r, &bytes), 0);
    fpp__mpi_buf_free(&b);
}

Test(mpi_wire, refuses_a_header_that_lies)
{
    fpp__mpi_buf b = {0};
    fpp__mpi_batch_begin(&b, FPP__MT_RESULTS);
    fpp__mpi_rd rd;
    fpp__mpi_hdr h;
    cr_assert_eq(fpp__mpi_msg_open(&rd, b.p, sizeof h - 1, &h), FPP_EINVAL, "shorter than a header");
    fpp__mpi_batch_hdr(&b)->magic ^= 1;
    cr_assert_eq(fpp__mpi_msg_open(&rd, b.p, b.len, &h), FPP_EINVAL, "wrong magic");
    fpp__mpi_batch_hdr(&b)->magic ^= 1;
    fpp__mpi_batch_hdr(&b)->type = 99;
    cr_assert_eq(fpp__mpi_msg_open(&rd, b.p, b.len, &h), FPP_EINVAL, "unknown type");
    fpp__mpi_batch_hdr(&b)->type = FPP__MT_RESULTS;
    fpp__mpi_batch_hdr(&b)->count = 1000;
    cr_assert_eq(fpp__mpi_msg_open(&rd, b.p, b.len, &h), FPP_EINVAL, "more records than bytes");
    fpp__mpi_buf_free(&b);
}

Test(mpi_wire, refuses_records_that_do_not_fit)
{
    fpp__mpi_buf b = {0};
    fpp__mpi_batch_begin(&b, FPP__MT_TASKS);
    fpp__mpi_task_rec r0 = task_rec(1, 16, 0);
    fpp__mpi_batch_add_task(&b, &r0, "0123456789abcdef", NULL);
    fpp__mpi_rd rd;
    fpp__mpi_hdr h;
    fpp__mpi_task_rec r;
    const unsigned char *bytes;
    /* Cut in the record's bytes, then in the record itself. */
    cr_assert_eq(fpp__mpi_msg_open(&rd, b.p, b.len - 8, &h), 0);
    cr_assert_eq(fpp__mpi_next_task(&rd, &r, &bytes), FPP_EINVAL);
    cr_assert_eq(fpp__mpi_msg_open(&rd, b.p, sizeof h + 8, &h), 0);
    cr_assert_eq(fpp__mpi_next_task(&rd, &r, &bytes), FPP_EINVAL);
    /* A length near 2^64 must not wrap the bounds check. */
    ((fpp__mpi_task_rec *)(b.p + sizeof h))->len = UINT64_MAX - 3;
    cr_assert_eq(fpp__mpi_msg_open(&rd, b.p, b.len, &h), 0);
    cr_assert_eq(fpp__mpi_next_task(&rd, &r, &bytes), FPP_EINVAL);
    fpp__mpi_buf_free(&b);
}

Test(mpi_wire, reads_tickets_of_a_cancel)
{
    uint64_t msg[3];
    fpp__mpi_hdr h = {.magic = FPP__MPI_MAGIC, .type = FPP__MT_CANCEL, .count = 2};
    unsigned char buf[sizeof h + 2 * sizeof(uint64_t)];
    memcpy(buf, &h, sizeof h);
    msg[0] = 42;
    msg[1] = (uint64_t)7 << 32 | 3;
    memcpy(buf + sizeof h, msg, 2 * sizeof(uint64_t));
    fpp__mpi_rd rd;
    cr_assert_eq(fpp__mpi_msg_open(&rd, buf, sizeof buf, &h), 0);
    uint64_t t;
    cr_assert_eq(fpp__mpi_next_ticket(&rd, &t), 1);
    cr_assert_eq(t, 42u);
    cr_assert_eq(fpp__mpi_next_ticket(&rd, &t), 1);
    cr_assert_eq(t, msg[1]);
    cr_assert_eq(fpp__mpi_next_ticket(&rd, &t), 0);
}

Test(mpi_wire, rank_message_names_the_rank_and_rank_0s_task_id)
{
    char out[128];
    size_t n = fpp__mpi_rank_message(out, sizeof out, 2, "worker 4312 killed by SIGSEGV while running task 17", 17,
                                     123456);
    cr_assert_str_eq(out, "rank 2: worker 4312 killed by SIGSEGV while running task 123456");
    cr_assert_eq(n, strlen(out));
    fpp__mpi_rank_message(out, sizeof out, 1, "task 17 exceeded its timeout of 300 ms; worker 9 killed", 17, 5);
    cr_assert_str_eq(out, "rank 1: task 5 exceeded its timeout of 300 ms; worker 9 killed");
    /* Only the id as a whole word: not task 170, not subtask 17. */
    fpp__mpi_rank_message(out, sizeof out, 1, "task 170 and subtask 17 (task 17)", 17, 5);
    cr_assert_str_eq(out, "rank 1: task 170 and subtask 17 (task 5)");
    fpp__mpi_rank_message(out, 12, 3, "worker 1 killed", 0, 0);
    cr_assert_str_eq(out, "rank 3: wor");
}

Test(mpi_wire, rename_task_gives_rank_0s_name_to_the_task_as_a_whole_word)
{
    char out[128];
    const char *m = "rank 2: worker 9 killed by SIGSEGV while running task 17";
    size_t n = fpp__mpi_rename_task(out, sizeof out, m, strlen(m), 17, "task 17 \"in/0042.bin\"");
    cr_assert_str_eq(out, "rank 2: worker 9 killed by SIGSEGV while running task 17 \"in/0042.bin\"");
    cr_assert_eq(n, strlen(out));
    /* Not task 170; only len bytes are read (no NUL needed); cut at cap. */
    fpp__mpi_rename_task(out, sizeof out, "task 170, task 17xyz", 17, 17, "X");
    cr_assert_str_eq(out, "task 170, X");
    fpp__mpi_rename_task(out, 8, "task 17 crashed", 15, 17, "task 17 \"long label\"");
    cr_assert_str_eq(out, "task 17");
}

static int noop(const void *a, size_t n, fpp_out *o) { return fpp_out_set(o, a, n); }

Test(mpi_wire, registry_digest_changes_with_the_table)
{
    uint32_t n0, n1, n2;
    uint64_t h0, h1, h2;
    fpp__mpi_fns_digest(&n0, &h0);
    fpp_register("a", noop);
    fpp_register("b", noop);
    fpp__mpi_fns_digest(&n1, &h1);
    cr_assert_eq(n1, n0 + 2);
    cr_assert_neq(h1, h0);
    fpp__mpi_fns_digest(&n2, &h2);
    cr_assert(n2 == n1 && h2 == h1, "the same table, the same digest");
}

Test(mpi_wire, heartbeat_and_lost_notice_are_messages_and_nothing_past_them)
{
    fpp__mpi_buf b = {0};
    fpp__mpi_rd rd;
    fpp__mpi_hdr h;
    for (uint16_t t = FPP__MT_BEAT; t <= FPP__MT_LOST; t++) {
        cr_assert_eq(fpp__mpi_batch_begin(&b, t), 0);
        cr_assert_eq(fpp__mpi_msg_open(&rd, b.p, b.len, &h), 0, "type %u", t);
        cr_assert_eq(h.type, t);
    }
    fpp__mpi_batch_hdr(&b)->type = FPP__MT_LAST + 1;
    cr_assert_eq(fpp__mpi_msg_open(&rd, b.p, b.len, &h), FPP_EINVAL, "a type past the last");
    fpp__mpi_buf_free(&b);
}

/* Abandoning a peer (a lost rank): every request of that peer leaves the link at once, whether
 * MPI could complete it or not (here, to this process itself on MPI_COMM_SELF: bulk receives
 * nobody sends, and a 2 MiB message nobody receives); a bulk receive's owner hears once per
 * transfer, its bytes taken; done() is never called; another peer's requests stay. */
static int done_calls, dropped_calls;
static fpp__mpi_bulk *dropped_last;
static void on_done(void *owner, fpp__mpi_bulk *b) { done_calls++; }
static void on_dropped(void *owner, fpp__mpi_bulk *b)
{
    dropped_calls++;
    dropped_last = b;
}

Test(mpi_wire, abandon_leaves_every_request_of_a_peer_to_mpi)
{
    cr_assert_eq(MPI_Init(NULL, NULL), MPI_SUCCESS);
    fpp__mpi_link l;
    const size_t chunk = (size_t)1 << 20;
    fpp__mpi_link_init(&l, MPI_COMM_SELF, chunk, on_done, NULL);
    fpp__mpi_bulk in = {.dst = malloc(3 * chunk + 5), .len = 3 * chunk + 5, .cookie = 7};
    fpp__mpi_bulk other = {.dst = malloc(100), .len = 100, .cookie = 8};
    cr_assert_eq(fpp__mpi_recv_bulk(&l, 0, &in), 0);             /* 4 chunks from rank 0 */
    cr_assert_eq(fpp__mpi_recv_bulk(&l, MPI_ANY_SOURCE, &other), 0); /* another "peer" */
    fpp__mpi_buf big = fpp__mpi_buf_get(&l);
    cr_assert_eq(fpp__mpi_batch_begin(&big, FPP__MT_LOST), 0);
    cr_assert_eq(fpp__mpi_buf_reserve(&big, 2 * chunk), 0);
    memset(big.p + big.len, 1, 2 * chunk);
    big.len += 2 * chunk;
    cr_assert_eq(fpp__mpi_send(&l, 0, &big), 0); /* 2 MiB on TAG_CTL, which nobody receives */
    cr_assert_geq(fpp__mpi_link_progress(&l), 0);
    int before = l.n;
    cr_assert_eq(before, 1 + 4 + 1, "the receives and the large send are in flight (%d)", before);
    int left = fpp__mpi_link_abandon(&l, 0, on_dropped);
    cr_assert_eq(left, before - 1, "every request of rank 0 left (%d of %d)", left, before);
    cr_assert_eq(l.n, 1, "the other peer's receive stays");
    cr_assert(dropped_calls == 1 && dropped_last == &in && in.dst == NULL,
              "the bulk's owner told once (%d), its bytes taken", dropped_calls);
    cr_assert_eq(fpp__mpi_link_abandon(&l, 0, on_dropped), 0, "nothing of rank 0 left");
    cr_assert_eq(fpp__mpi_link_abandon(&l, MPI_ANY_SOURCE, on_dropped), 1);
    cr_assert(fpp__mpi_link_idle(&l) && done_calls == 0 && dropped_calls == 2 && other.dst == NULL);
    fpp__mpi_link_fini(&l);
    cr_assert_eq(MPI_Finalize(), MPI_SUCCESS);
}
