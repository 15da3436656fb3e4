/* test_error.c: fpp_strerror and fpp_err_name are total and match FPP_ERRNO_MAP. */
#include "common.h"

Test(error, every_code_has_its_own_message)
{
#define CHECK(name, val, msg)                                    \
    cr_expect_str_eq(fpp_strerror(FPP_##name), msg);            \
    cr_expect_str_eq(fpp_err_name(FPP_##name), "FPP_" #name);   \
    cr_expect_eq(FPP_##name, val);
    FPP_ERRNO_MAP(CHECK)
#undef CHECK
}

Test(error, unknown_codes_get_a_constant_string)
{
    cr_expect_str_eq(fpp_strerror(0), "success");
    cr_expect_str_eq(fpp_strerror(-1000), "unknown error");
    cr_expect_str_eq(fpp_strerror(12345), "unknown error");
    cr_expect_str_eq(fpp_err_name(-99), "FPP_UNKNOWN");
    cr_expect_eq(fpp_strerror(-1000), fpp_strerror(-2000), "the same static string");
}
