#ifndef VMSYNC_SUBREAPER_H
#define VMSYNC_SUBREAPER_H

/// Makes the calling process the reaper of its orphaned descendants (prctl PR_SET_CHILD_SUBREAPER).
/// Returns 0 on success, -1 with errno set otherwise.
int vmsync_become_subreaper(void);

/// sigtimedwait on `set` (a sigset_t) for at most `milliseconds`: the signal number, or -1 (errno EAGAIN on timeout).
/// (Swift cannot build a timespec unambiguously on Linux when CoreFoundation is in the import graph.)
int vmsync_wait_signal(const void *set, long milliseconds);

#endif
