#define _GNU_SOURCE
#include <spawn.h>
#include "cspawn.h"

int vmsync_spawn_closefrom(void *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}
