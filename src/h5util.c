#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backprop/checkpoint.h"
#include "fileio.h"
#include "h5util.h"
#include "internal.h"

/* Closes any handle this file opens; ignores invalid ones so that cleanup paths can close
 * everything unconditionally. */
void bp__h5_close(hid_t id)
{
    if (id < 0)
        return;
    switch (H5Iget_type(id)) {
    case H5I_FILE:
        H5Fclose(id);
        break;
    case H5I_GROUP:
        H5Gclose(id);
        break;
    case H5I_DATASET:
        H5Dclose(id);
        break;
    case H5I_ATTR:
        H5Aclose(id);
        break;
    case H5I_DATASPACE:
        H5Sclose(id);
        break;
    case H5I_DATATYPE:
        H5Tclose(id);
        break;
    case H5I_GENPROP_LST:
        H5Pclose(id);
        break;
    default:
        break;
    }
}

/* Variable-length UTF-8: what h5py reads back as str. */
hid_t bp__h5_vlen_string_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
        H5Tclose(t);
        t = H5I_INVALID_HID;
    }
    return t;
}

static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = bp__calloc(n, 1);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}

/* Writes attribute name: n values of mtype stored as ftype, or one scalar when n is 0. */
int bp__h5_write_attr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, hsize_t n,
                      const void *buf)
{
    hid_t space = n ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
    hid_t attr =
        space < 0 ? H5I_INVALID_HID : H5Acreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = attr >= 0 && H5Awrite(attr, mtype, buf) >= 0 ? 0 : -1;
    bp__h5_close(attr);
    bp__h5_close(space);
    return rc;
}

int bp__h5_write_string_attr(hid_t loc, const char *name, const char *s)
{
    hid_t type = bp__h5_vlen_string_type();
    int rc = type < 0 ? -1 : bp__h5_write_attr(loc, name, type, type, 0, &s);
    bp__h5_close(type);
    return rc;
}

/* Reads attribute name, which must hold exactly n values, converted to mtype. */
int bp__h5_read_attr(hid_t loc, const char *name, hid_t mtype, hssize_t n, void *buf)
{
    hid_t attr = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : H5I_INVALID_HID;
    hid_t space = attr < 0 ? H5I_INVALID_HID : H5Aget_space(attr);
    int rc =
        space >= 0 && H5Sget_simple_extent_npoints(space) == n && H5Aread(attr, mtype, buf) >= 0
            ? 0
            : -1;
    bp__h5_close(space);
    bp__h5_close(attr);
    return rc;
}

/* How many values attribute name holds, or -1 when there is no such attribute. */
hssize_t bp__h5_attr_npoints(hid_t loc, const char *name)
{
    hid_t attr = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : H5I_INVALID_HID;
    hid_t space = attr < 0 ? H5I_INVALID_HID : H5Aget_space(attr);
    hssize_t n = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    bp__h5_close(space);
    bp__h5_close(attr);
    return n;
}

static herr_t h5_read(hid_t obj, int is_attr, hid_t mtype, void *buf)
{
    return is_attr ? H5Aread(obj, mtype, buf)
                   : H5Dread(obj, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
}

static char *read_vlen_string(hid_t obj, int is_attr, hid_t mtype)
{
    char *s = NULL, *copy = NULL;
    if (H5Tset_size(mtype, H5T_VARIABLE) >= 0 && h5_read(obj, is_attr, mtype, &s) >= 0 && s)
        copy = dup_string(s);
    if (s)
        H5free_memory(s);
    return copy;
}

/* Read one byte longer than stored and NUL-terminated, whatever padding the writer used. */
static char *read_fixed_string(hid_t obj, int is_attr, hid_t mtype, size_t size)
{
    char *s = size ? bp__calloc(size + 1, 1) : NULL;
    if (s && (H5Tset_size(mtype, size + 1) < 0 || H5Tset_strpad(mtype, H5T_STR_NULLTERM) < 0 ||
              h5_read(obj, is_attr, mtype, s) < 0)) {
        bp__free(s);
        s = NULL;
    }
    return s;
}

/* A copy of the one string held by an attribute (is_attr) or a dataset, fixed- or
 * variable-length; NULL when it holds anything else. */
char *bp__h5_read_string(hid_t obj, int is_attr)
{
    hid_t ftype = is_attr ? H5Aget_type(obj) : H5Dget_type(obj);
    hid_t space = is_attr ? H5Aget_space(obj) : H5Dget_space(obj);
    hid_t mtype = H5Tcopy(H5T_C_S1);
    char *s = NULL;
    if (ftype >= 0 && space >= 0 && mtype >= 0 && H5Tget_class(ftype) == H5T_STRING &&
        H5Sget_simple_extent_npoints(space) == 1 && H5Tset_cset(mtype, H5Tget_cset(ftype)) >= 0) {
        if (H5Tis_variable_str(ftype) > 0)
            s = read_vlen_string(obj, is_attr, mtype);
        else
            s = read_fixed_string(obj, is_attr, mtype, H5Tget_size(ftype));
    }
    bp__h5_close(mtype);
    bp__h5_close(space);
    bp__h5_close(ftype);
    return s;
}

/* Copies string attribute name into buf; -1 when missing, not a string, or too long.
 * Control characters become '?': the value may be quoted in a one-line error message, and
 * no valid name contains them. */
int bp__h5_read_string_attr(hid_t loc, const char *name, char *buf, size_t len)
{
    hid_t attr = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : H5I_INVALID_HID;
    char *s = attr < 0 ? NULL : bp__h5_read_string(attr, 1);
    int rc = s && strlen(s) < len ? 0 : -1;
    if (rc == 0) {
        for (char *c = s; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                *c = '?';
        memcpy(buf, s, strlen(s) + 1);
    }
    bp__free(s);
    bp__h5_close(attr);
    return rc;
}

/* The core driver keeps the file in buffers it allocates through these callbacks; at close
 * it frees the final one, which then holds the whole closed file. That is the image taken
 * here: H5Fget_file_image on an open file gives 1.10-format files a superblock whose
 * checksum no longer matches (HDF5 1.10.8), which the reader then refuses. */
typedef struct {
    void *image;
    size_t size; /* of the driver's buffer, as last allocated */
} image_grab;

static image_grab grab_slot;

static void *image_malloc(size_t size, H5FD_file_image_op_t op, void *udata)
{
    grab_slot.size = size;
    return malloc(size ? size : 1);
}

static void *image_memcpy(void *dest, const void *src, size_t size, H5FD_file_image_op_t op,
                          void *udata)
{
    return memcpy(dest, src, size);
}

static void *image_realloc(void *ptr, size_t size, H5FD_file_image_op_t op, void *udata)
{
    grab_slot.size = size;
    return realloc(ptr, size ? size : 1);
}

/* One file in memory at a time (grab_slot, above): the library builds one HDF5 file at a
 * time (in training, only rank 0's checkpoint writer thread builds any; saver.h). (HDF5 wants copy
 * and free functions for a udata pointer; a static needs none.) */

static herr_t image_free(void *ptr, H5FD_file_image_op_t op, void *udata)
{
    if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && !grab_slot.image)
        grab_slot.image = ptr;
    else
        free(ptr);
    return 0;
}

/* The file's length from its superblock's end-of-file address: version 0 keeps it at byte
 * 40, versions 2 and 3 at byte 28, as 8 little-endian bytes (backprop's files use 8-byte
 * offsets; it never writes version 1). 0 when the image is not such a superblock. */
static size_t image_length(const unsigned char *image, size_t cap)
{
    static const unsigned char signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (cap < 48 || memcmp(image, signature, 8) != 0)
        return 0;
    int version = image[8];
    size_t at = version >= 2 ? 28 : 40, offsets = version >= 2 ? image[9] : image[13];
    if (offsets != 8 || version == 1 || version > 3)
        return 0;
    uint64_t eof = 0;
    for (int i = 7; i >= 0; i--)
        eof = eof << 8 | image[at + (size_t)i];
    return eof <= cap ? (size_t)eof : 0;
}

void bp__h5_quiet_begin(bp__h5_quiet *saved)
{
    if (H5Eget_auto2(H5E_DEFAULT, &saved->func, &saved->data) < 0)
        saved->func = NULL, saved->data = NULL;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void bp__h5_quiet_end(const bp__h5_quiet *saved)
{
    H5Eset_auto2(H5E_DEFAULT, saved->func, saved->data);
}

hid_t bp__h5_create(int v110)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), file = H5I_INVALID_HID;
    if (fapl < 0)
        return H5I_INVALID_HID;
    H5FD_file_image_callbacks_t cb = {image_malloc, image_memcpy, image_realloc, image_free,
                                      NULL,         NULL,         NULL};
    int ok = H5Pset_fapl_core(fapl, 1 << 20, 0) >= 0 && H5Pset_file_image_callbacks(fapl, &cb) >= 0;
    if (ok && v110)
        ok = H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) >= 0;
    if (ok) /* the name only labels the file in memory */
        file = H5Fcreate("backprop-image.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    return file;
}

int bp__h5_publish(hid_t file, const char *path, int flags, char *err, size_t errlen)
{
    free(grab_slot.image);
    grab_slot.image = NULL;
    int bad = H5Fclose(file) < 0;
    unsigned char *image = grab_slot.image;
    grab_slot.image = NULL;
    /* Bounded by the buffer the driver held at close: the superblock must not claim more. */
    size_t len = !bad && image ? image_length(image, grab_slot.size) : 0;
    int rc = len == 0 ? bp__fail(err, errlen, BP_ENOMEM,
                                 "%s: cannot build the HDF5 file (out of memory?)", path)
                      : bp__publish(path, image, len, flags, err, errlen);
    free(image);
    return rc;
}

int bp__h5_is_checkpoint(const char *path)
{
    bp__h5_quiet q;
    bp__h5_quiet_begin(&q);
    hid_t file = H5Fis_hdf5(path) > 0 ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    char format[32];
    int yes = file >= 0 && bp__h5_read_string_attr(file, "format", format, sizeof(format)) == 0 &&
              strcmp(format, BP_CHECKPOINT_FORMAT) == 0;
    bp__h5_close(file);
    bp__h5_quiet_end(&q);
    return yes;
}
