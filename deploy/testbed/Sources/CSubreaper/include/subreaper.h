#ifndef VMSYNC_SUBREAPER_H
#define VMSYNC_SUBREAPER_H

/// Makes the calling process the reaper of its orphaned descendants (prctl PR_SET_CHILD_SUBREAPER).
/// Returns 0 on success, -1 with errno set otherwise.
int vmsync_become_subreaper(void);

/// Makes SIGTERM, SIGINT and SIGHUP wake `vmsync_wait_stop` instead of killing the process. Returns 0, or -1.
int vmsync_install_stop_handlers(void);

/// Waits at most `milliseconds` for one of those signals: its number, or 0 if none came.
int vmsync_wait_stop(long milliseconds);

#endif
