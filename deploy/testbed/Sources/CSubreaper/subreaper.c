#include "subreaper.h"
#include <sys/prctl.h>

// prctl is variadic, which Swift cannot call directly.
int vmsync_become_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

#include <signal.h>
#include <time.h>

int vmsync_wait_signal(const void *set, long milliseconds) {
    struct timespec timeout = { .tv_sec = milliseconds / 1000, .tv_nsec = (milliseconds % 1000) * 1000000L };
    return sigtimedwait((const sigset_t *)set, NULL, &timeout);
}
