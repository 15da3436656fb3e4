/* core/fork_hooks.c: the hooks a language runtime gives fpp to run around every fork fpp makes
 * (fpp_set_fork_hooks; the Python binding's PyOS_BeforeFork and friends). Process-wide, under a
 * mutex that is a leaf: read once by each fork server when it starts. */
#include <pthread.h>

#include "core/core.h"

static pthread_mutex_t hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static fpp__fork_hooks hooks;

int fpp_set_fork_hooks(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
    pthread_mutex_lock(&hooks_lock);
    hooks = (fpp__fork_hooks){prepare, parent, child};
    pthread_mutex_unlock(&hooks_lock);
    return 0;
}

fpp__fork_hooks fpp__fork_hooks_get(void)
{
    pthread_mutex_lock(&hooks_lock);
    fpp__fork_hooks h = hooks;
    pthread_mutex_unlock(&hooks_lock);
    return h;
}
