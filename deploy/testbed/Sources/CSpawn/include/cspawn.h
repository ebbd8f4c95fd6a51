#ifndef VMSYNC_CSPAWN_H
#define VMSYNC_CSPAWN_H

/// Adds a file action to `actions` (a posix_spawn_file_actions_t) that closes every descriptor >= `from` in the
/// child: glibc's posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module does not expose. Declared
/// without <spawn.h> so this module does not re-export libc's types. Returns 0 or an error number.
int vmsync_spawn_closefrom(void *actions, int from);

#endif
