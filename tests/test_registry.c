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
