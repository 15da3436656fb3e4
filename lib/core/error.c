/* core/error.c: the names and messages of the FPP_E* codes, generated from FPP_ERRNO_MAP so that a
 * code without a message cannot exist. Both functions are total: every int gets a constant
 * string, and nothing is allocated. */
#include "core/core.h"

const char *fpp_strerror(int code)
{
    if (code == 0)
        return "success";
    switch ((fpp_errno)code) {
#define FPP__ERR_MSG(name, val, msg) \
    case FPP_##name:                 \
        return msg;
        FPP_ERRNO_MAP(FPP__ERR_MSG)
#undef FPP__ERR_MSG
    }
    return "unknown error";
}

const char *fpp_err_name(int code)
{
    if (code == 0)
        return "FPP_OK";
    switch ((fpp_errno)code) {
#define FPP__ERR_NAME(name, val, msg) \
    case FPP_##name:                  \
        return "FPP_" #name;
        FPP_ERRNO_MAP(FPP__ERR_NAME)
#undef FPP__ERR_NAME
    }
    return "FPP_UNKNOWN";
}
