/* IDX images and labels (MNIST, Fashion-MNIST), plain or gzip: zlib reads both, so the
 * content decides, not the name. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include <zlib.h>

#include "backprop/data.h"
#include "data_idx.h"
#include "fileio.h"
#include "internal.h"

#define IDX_IMAGES 0x00000803u /* ubyte, 3 dimensions */
#define IDX_LABELS 0x00000801u /* ubyte, 1 dimension */
#define HDF5_MAGIC 0x89484446u /* "\211HDF": what an IDX reader sees in an HDF5 file */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* zlib reads gzip and plain files alike, so the content decides, not the name. */
static int idx_open(gzFile *gz, const char *path, off_t *size, char *err, size_t errlen)
{
    int rc = bp__input_check(path, size, err, errlen);
    if (rc < 0)
        return rc;
    *gz = gzopen(path, "rb");
    if (!*gz)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot open: %s", path, strerror(errno));
    gzbuffer(*gz, 1u << 17);
    return 0;
}

/* Reads up to len bytes into buf and sets *got; only a zlib error is a failure here, a
 * short read is for the caller to name. */
static int idx_read(gzFile gz, unsigned char *buf, size_t len, size_t *got, const char *path,
                    char *err, size_t errlen)
{
    *got = 0;
    while (*got < len) {
        size_t want = len - *got > (1u << 30) ? (1u << 30) : len - *got;
        int r = gzread(gz, buf + *got, (unsigned)want);
        if (r < 0) {
            int code = 0;
            const char *msg = gzerror(gz, &code);
            size_t plen = strlen(path);
            if (strncmp(msg, path, plen) == 0 && strncmp(msg + plen, ": ", 2) == 0)
                msg += plen + 2; /* zlib names the file too; once is enough */
            return bp__fail(err, errlen, BP_EFORMAT, "%s: truncated or damaged gzip data (%s)",
                            path, msg);
        }
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return 0;
}

/* Bytes a text file (a CSV, a config) would start with: printable ASCII, tabs and line
 * ends, or UTF-8's high bytes. No IDX magic is (its first two bytes are zero). */
static int is_text(const unsigned char *h, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((h[i] < 0x20 && h[i] != '\t' && h[i] != '\n' && h[i] != '\r') || h[i] == 0x7F)
            return 0;
    return 1;
}

/* The magic then ndims big-endian sizes; kind names the file in messages ("image"). */
static int idx_header(gzFile gz, uint32_t magic, int ndims, size_t *dims, const char *kind,
                      const char *path, char *err, size_t errlen)
{
    unsigned char h[4 * 4];
    size_t got = 0, len = 4 * (size_t)ndims;
    int rc = idx_read(gz, h, 4, &got, path, err, errlen);
    if (rc < 0)
        return rc;
    if (got < 4)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: not an IDX %s file (only %zu bytes)", path,
                        kind, got);
    uint32_t m = be32(h);
    if (m != magic)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: not an IDX %s file (magic 0x%08x)%s", path,
                        kind, (unsigned)m,
                        m == HDF5_MAGIC ? "; it is HDF5: give it a .h5 name"
                        : is_text(h, 4) ? "; it begins with text: a CSV file goes through "
                                          "convert into HDF5 first"
                                        : "");
    rc = idx_read(gz, h, len, &got, path, err, errlen);
    if (rc < 0)
        return rc;
    if (got < len)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: truncated IDX header", path);
    for (int i = 0; i < ndims; i++)
        dims[i] = be32(h + 4 * i);
    return 0;
}

/* A header can promise more data than the file holds; checking before allocating keeps a
 * damaged header from claiming gigabytes. Deflate expands at most 1032:1, which bounds
 * what a gzip file can hold. */
static int idx_check_size(gzFile gz, off_t size, size_t header, size_t need, const char *path,
                          char *err, size_t errlen)
{
    double body = (double)size - (double)header;
    double most = gzdirect(gz) ? body : body * 1032.0;
    if ((double)need > most)
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: truncated: the header promises %zu bytes of data but the file holds "
                        "at most %.0f",
                        path, need, most < 0 ? 0.0 : most);
    return 0;
}

/* Pixels are read in chunks and scaled to [0, 1] on the way, so the bytes never need a
 * second full-size buffer. */
static int idx_read_pixels(gzFile gz, bp_dataset *ds, const bp__load_opts *o, const char *path,
                           char *err, size_t errlen)
{
    enum { CHUNK = 1 << 16 };
    size_t total = ds->n * ds->d, got = 0;
    unsigned char *buf = bp__calloc(CHUNK, 1);
    if (!buf)
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", path);
    int rc = 0;
    for (size_t off = 0; off < total && rc == 0; off += got) {
        size_t len = total - off < CHUNK ? total - off : CHUNK;
        rc = idx_read(gz, buf, len, &got, path, err, errlen);
        if (rc == 0 && got < len)
            rc = bp__fail(err, errlen, BP_EFORMAT,
                          "%s: truncated: only %zu of the %zu pixel bytes its header promises",
                          path, off + got, total);
        for (size_t j = 0; rc == 0 && j < len; j++)
            ds->X[off + j] = (bp_real)(buf[j] / 255.0);
        bp__load_progress(o, path, (double)(off + got), (double)total);
    }
    bp__free(buf);
    return rc;
}

/* zlib checks a gzip member's CRC and length only when asked for the bytes past its end;
 * without this a damaged stored block would load as wrong pixels. A stream cut short,
 * trailer included, is only a soft error to gzread (it serves files still being written):
 * Z_BUF_ERROR, which is asked for here. Trailing bytes are allowed. */
static int idx_check_end(gzFile gz, const char *path, char *err, size_t errlen)
{
    unsigned char extra;
    size_t got = 0;
    int rc = idx_read(gz, &extra, 1, &got, path, err, errlen), code = Z_OK;
    gzerror(gz, &code);
    if (rc == 0 && code != Z_OK)
        rc = bp__fail(err, errlen, BP_EFORMAT,
                      "%s: truncated gzip data (the stream ends before its CRC and length)", path);
    return rc;
}

int bp__idx_shape(const char *path, size_t *n, size_t *d, char *err, size_t errlen)
{
    gzFile gz = NULL;
    off_t size;
    size_t dims[3];
    int rc = idx_open(&gz, path, &size, err, errlen);
    if (rc == 0)
        rc = idx_header(gz, IDX_IMAGES, 3, dims, "image", path, err, errlen);
    if (rc == 0)
        *n = dims[0], *d = dims[1] * dims[2];
    if (gz)
        gzclose(gz);
    return rc;
}

static int idx_load_images(bp_dataset *ds, const char *path, const bp__load_opts *o, char *err,
                           size_t errlen)
{
    gzFile gz = NULL;
    off_t size = 0;
    size_t dims[3] = {0};
    int rc = idx_open(&gz, path, &size, err, errlen);
    if (rc == 0)
        rc = idx_header(gz, IDX_IMAGES, 3, dims, "image", path, err, errlen);
    if (rc < 0)
        goto cleanup;
    size_t d = bp__mul(dims[1], dims[2]), total = bp__mul(dims[0], d);
    if (dims[0] == 0 || d == 0)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: no images (%zu of %zu x %zu pixels)", path,
                      dims[0], dims[1], dims[2]);
    else if (total == SIZE_MAX)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: %zu images of %zu x %zu pixels are too many",
                      path, dims[0], dims[1], dims[2]);
    else
        rc = idx_check_size(gz, size, 16, total, path, err, errlen);
    if (rc == 0)
        rc = bp__dataset_alloc(ds, dims[0], d, 0, 1, o, path, err, errlen);
    if (rc == 0)
        rc = idx_read_pixels(gz, ds, o, path, err, errlen);
    if (rc == 0)
        rc = idx_check_end(gz, path, err, errlen);
cleanup:
    if (gz)
        gzclose(gz);
    return rc;
}

/* Labels go into ds->labels, which idx_load_images allocated for the same n rows. */
static int idx_load_labels(bp_dataset *ds, const char *path, const char *images, int classes,
                           const bp__load_opts *o, char *err, size_t errlen)
{
    gzFile gz = NULL;
    unsigned char *buf = NULL;
    off_t size = 0;
    size_t n = 0, got = 0;
    int rc = idx_open(&gz, path, &size, err, errlen);
    if (rc == 0)
        rc = idx_header(gz, IDX_LABELS, 1, &n, "label", path, err, errlen);
    if (rc == 0 && n != ds->n)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s has %zu labels but %s has %zu images", path, n,
                      images, ds->n);
    if (rc == 0 && !(buf = bp__calloc(n, 1)))
        rc = bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", path);
    if (rc == 0)
        rc = idx_read(gz, buf, n, &got, path, err, errlen);
    if (rc == 0 && got < n)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: truncated: only %zu of the %zu labels", path,
                      got, n);
    if (rc == 0)
        rc = idx_check_end(gz, path, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++)
        ds->labels[i] = buf[i];
    if (rc == 0)
        rc = bp__labels_to_onehot(ds, classes, o, path, err, errlen);
    bp__free(buf);
    if (gz)
        gzclose(gz);
    return rc;
}

int bp__load_idx(bp_dataset *ds, const char *path, const char *labels_path, int classes,
                 const bp__load_opts *o, char *err, size_t errlen)
{
    /* What the file is comes first: a missing file, a directory or a CSV is not IDX
     * images lacking labels. Which option or key names the labels is the caller's to say. */
    size_t n, d;
    int rc = labels_path ? 0 : bp__idx_shape(path, &n, &d, err, errlen);
    if (rc == 0 && !labels_path)
        return bp__fail(err, errlen, BP_EINVAL,
                        "%s: IDX images need their labels (an IDX labels file), and none was given",
                        path);
    if (rc == 0)
        rc = idx_load_images(ds, path, o, err, errlen);
    if (rc == 0)
        rc = idx_load_labels(ds, labels_path, path, classes, o, err, errlen);
    return rc;
}
