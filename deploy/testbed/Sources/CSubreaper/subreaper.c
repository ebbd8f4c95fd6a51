#include "subreaper.h"
#include <sys/prctl.h>

// prctl is variadic, which Swift cannot call directly.
int vmsync_become_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}
