#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

uint64_t bp_net_checksum(const bp_net *net)
{
    const unsigned char *p = (const unsigned char *)net->params;
    size_t n = net->nparams * sizeof(bp_real);
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}
