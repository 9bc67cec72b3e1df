/* HDF5 as libbackprop uses it. Files are built in memory and published whole through
 * bp__publish, so the library never writes to disk itself: a full disk is one clean
 * error from write(2) instead of a half-closed HDF5 file (libhdf5 1.10 crashes at exit
 * after a failed H5Fclose). */
#ifndef BACKPROP_H5UTIL_H
#define BACKPROP_H5UTIL_H

#include <hdf5.h>

/* bp_real in memory. */
#ifdef BACKPROP_DOUBLE
#define BP__H5_REAL H5T_NATIVE_DOUBLE
#else
#define BP__H5_REAL H5T_NATIVE_FLOAT
#endif

/* Closes any handle of the kinds used here; ignores invalid ones, so that cleanup paths can
 * close everything unconditionally. */
void bp__h5_close(hid_t id);

/* Variable-length UTF-8: what h5py reads back as str. */
hid_t bp__h5_vlen_string_type(void);

/* Writes attribute name: n values of mtype stored as ftype, or one scalar when n is 0. */
int bp__h5_write_attr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, hsize_t n,
                      const void *buf);
int bp__h5_write_string_attr(hid_t loc, const char *name, const char *s);

/* Reads attribute name, which must hold exactly n values, converted to mtype; -1 if not. */
int bp__h5_read_attr(hid_t loc, const char *name, hid_t mtype, hssize_t n, void *buf);

/* How many values attribute name holds, or -1 when there is no such attribute. */
hssize_t bp__h5_attr_npoints(hid_t loc, const char *name);

/* A copy (bp__free) of the one string held by an attribute (is_attr) or a dataset, fixed-
 * or variable-length; NULL when it holds anything else. */
char *bp__h5_read_string(hid_t obj, int is_attr);

/* Copies string attribute name into buf, control characters as '?'; -1 when missing, not
 * a string, or too long. */
int bp__h5_read_string_attr(hid_t loc, const char *name, char *buf, size_t len);

/* libhdf5 prints its error stack to stderr by default; libbackprop's one-line reasons say
 * more. Every public entry point that calls HDF5 turns the printing off around its work and
 * restores whatever the program had set: the setting is the program's, not the library's. */
typedef struct {
    H5E_auto2_t func;
    void *data;
} bp__h5_quiet;
void bp__h5_quiet_begin(bp__h5_quiet *saved);
void bp__h5_quiet_end(const bp__h5_quiet *saved);

/* A new empty HDF5 file in memory (the core driver without a backing store). With v110 it
 * uses the 1.10 format, which checksums the metadata too. H5I_INVALID_HID on failure. */
hid_t bp__h5_create(int v110);

/* Takes the image of file, closes it (always), and publishes the bytes at path with
 * bp__publish's flags and errors. */
int bp__h5_publish(hid_t file, const char *path, int flags, char *err, size_t errlen);

/* 1 when path is an HDF5 file whose root attribute format is "backprop-checkpoint". */
int bp__h5_is_checkpoint(const char *path);

#endif
