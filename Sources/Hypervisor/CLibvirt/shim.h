#ifndef VMSYNC_CLIBVIRT_SHIM_H
#define VMSYNC_CLIBVIRT_SHIM_H

#include <stddef.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

static void vmsync_libvirt_ignore_error(void *userData, virErrorPtr error) {
    (void)userData;
    (void)error;
}

/// Stops libvirt from printing every error to stderr; errors are read with virGetLastError instead.
static inline void vmsync_libvirt_silence_errors(void) {
    virSetErrorFunc(NULL, vmsync_libvirt_ignore_error);
}

#endif
