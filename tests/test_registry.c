/* test_registry.c: names, ids, and the freeze while an executor exists. */
#include "common.h"

static int nop(const void *a, size_t l, fpp_out *o) { (void)a; (void)l; (void)o; return 0; }

Test(registry, ids_count_from_zero_in_registration_order)
{
    cr_expect_eq(F_ECHO, 0);
    cr_expect_eq(F_SQUARE, 1);
    cr_expect_eq(fpp_lookup("square"), F_SQUARE);
    cr_expect_str_eq(fpp_fn_name(F_SQUARE), "square");
    cr_expect_null(fpp_fn_name(9999));
}

Test(registry, rejects_null_empty_and_duplicate_names)
{
    cr_expect_eq(fpp_register(NULL, nop), FPP_EINVAL);
    cr_expect_eq(fpp_register("", nop), FPP_EINVAL);
    cr_expect_eq(fpp_register("x", NULL), FPP_EINVAL);
    cr_expect_eq(fpp_register("echo", nop), FPP_EINVAL);
    int id = fpp_register("fresh", nop);
    cr_expect_geq(id, 0);
    cr_expect_eq(fpp_lookup("fresh"), id);
}

Test(registry, lookup_of_unknown_name_is_enofn)
{
    cr_expect_eq(fpp_lookup("no such function"), FPP_ENOFN);
    cr_expect_eq(fpp_lookup(NULL), FPP_EINVAL);
}

Test(registry, refuses_registration_while_an_executor_exists, .fini = assert_clean)
{
    fpp_executor *ex = mk_exec(THR, NULL);
    cr_expect_eq(fpp_register("late", nop), FPP_ESTATE);
    fpp_executor_free(ex);
    cr_expect_geq(fpp_register("late", nop), 0, "allowed again once no executor exists");
}

/* Issue 16 item 13: a log sink that looks a name up while fpp_register logs its refusal. On 0.2
 * the refusal was logged with the registry's lock held, and the sink's fpp_lookup waited for it
 * for ever. */
static _Atomic int sink_lookups, sink_found;
static void lookup_sink(fpp_log_level level, const char *msg, void *user)
{
    (void)level; (void)msg; (void)user;
    atomic_fetch_add(&sink_lookups, 1);
    if (fpp_lookup("first") >= 0)
        atomic_fetch_add(&sink_found, 1);
}

Test(registry, a_log_sink_that_looks_names_up_never_deadlocks_a_refused_registration, .fini = assert_clean,
     .timeout = 20)
{
    fpp_register("first", nop);
    fpp_executor *ex = mk_exec(THR, NULL);
    fpp_log_set(lookup_sink, NULL, FPP_LOG_ERROR);
    cr_expect_eq(fpp_register("refused", nop), FPP_ESTATE);   /* an executor exists */
    fpp_executor_free(ex);
    cr_expect_eq(fpp_register("first", nop), FPP_EINVAL);     /* a duplicate */
    fpp_log_set(NULL, NULL, FPP_LOG_WARN);
    cr_expect_eq(atomic_load(&sink_lookups), 2, "each refusal logged once, through the sink");
    cr_expect_eq(atomic_load(&sink_found), 2, "and the sink's lookups answered");
}
