#ifndef VMSYNC_SUBREAPER_H
#define VMSYNC_SUBREAPER_H

/// Makes the calling process the reaper of its orphaned descendants (prctl PR_SET_CHILD_SUBREAPER).
/// Returns 0 on success, -1 with errno set otherwise.
int vmsync_become_subreaper(void);

#endif
