#define _GNU_SOURCE
#include "subreaper.h"
#include <sys/prctl.h>

// prctl is variadic, which Swift cannot call directly.
int vmsync_become_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

// `vmsync-testbed up` tears the bed down on SIGTERM, SIGINT and SIGHUP. Blocking them and waiting synchronously
// does not work in a Swift program: the runtime's threads exist before the command runs, and the main thread ends up
// with nothing blocked, so the default action would kill the launcher without a teardown. A handler that writes the
// signal to a pipe works on whichever thread gets it.
static int stop_pipe[2] = { -1, -1 };

static void on_stop(int signal) {
    char byte = (char)signal;
    ssize_t written = write(stop_pipe[1], &byte, 1);
    (void)written;
}

int vmsync_install_stop_handlers(void) {
    if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_stop;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGHUP, &action, NULL);
    return 0;
}

int vmsync_wait_stop(long milliseconds) {
    struct pollfd entry = { .fd = stop_pipe[0], .events = POLLIN, .revents = 0 };
    if (poll(&entry, 1, (int)milliseconds) > 0) {
        char byte = 0;
        if (read(stop_pipe[0], &byte, 1) == 1) return byte;
    }
    return 0;
}
