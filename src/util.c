#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

const char *bp_strerror(int code)
{
    switch (code) {
    case BP_OK:
        return "success";
    case BP_ENOMEM:
        return "out of memory";
    case BP_EINVAL:
        return "invalid argument";
    case BP_EIO:
        return "input/output error";
    case BP_EFORMAT:
        return "unexpected file format";
    case BP_EMISMATCH:
        return "does not match the network";
    case BP_EDIVERGED:
        return "training diverged (NaN or infinite values)";
    case BP_ECOMM:
        return "communication between ranks failed";
    default:
        return "unknown error";
    }
}

size_t bp__mul(size_t a, size_t b)
{
    if (a != 0 && b > SIZE_MAX / a)
        return SIZE_MAX;
    return a * b;
}

void *bp__calloc(size_t count, size_t size)
{
    size_t bytes = bp__mul(count, size);
    if (bytes == SIZE_MAX || bytes > SIZE_MAX - 64)
        return NULL;
    /* Rounded up to whole cache lines: aligned_alloc requires a multiple of the alignment. */
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p)
        memset(p, 0, rounded ? rounded : 64);
    return p;
}

void *bp__realloc(void *p, size_t count, size_t size)
{
    size_t bytes = bp__mul(count, size);
    if (bytes == SIZE_MAX)
        return NULL;
    return realloc(p, bytes ? bytes : 1);
}

void bp__free(void *p)
{
    free(p);
}

int bp__fail(char *buf, size_t len, int code, const char *fmt, ...)
{
    if (buf && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    return code;
}

uint64_t bp__hash(const void *data, size_t bytes, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < bytes; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

uint64_t bp_net_checksum(const bp_net *net)
{
    return bp__hash(net->params, net->nparams * sizeof(bp_real), 1469598103934665603ULL);
}

int bp__commit_file(const char *tmp, const char *path)
{
    int fd = open(tmp, O_RDONLY);
    int ok = fd >= 0 && fsync(fd) == 0;
    int saved = errno;
    if (fd >= 0)
        close(fd);
    if (!ok || rename(tmp, path) != 0) {
        saved = ok ? errno : saved;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    /* The rename is durable once the directory entry is. */
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else
        slash[slash == dir] = 0;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}
