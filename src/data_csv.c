/* CSV for convert: one example per line, comma-separated numbers, an optional header.
 *
 * The header rule: the first line that is not blank is a header when none of its fields is
 * a number and at least one is a name: text other than a missing value (empty, NA, N/A,
 * #N/A, #NA, <NA>, NULL, None, ?; any case). Any other line is data, so a first row of
 * numbers, or of missing values alone (NA,NA,NA or ,,,), is data, refused with its line
 * and column, never dropped as a header. A header has as many fields as the rows under
 * it. A field may be quoted ("1.5"); lines end in \n, \r\n or a lone \r (old Mac
 * exports). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "backprop/data.h"
#include "data_common.h"
#include "fileio.h"
#include "internal.h"

/* Walks the lines of an in-memory file; line numbers are 1-based, as editors show them. */
typedef struct {
    const char *p, *end;
    size_t lineno;
} csv_cursor;

typedef struct {
    size_t rows, cols;
    size_t header;  /* line number of the skipped header, 0 when there is none */
    size_t heading; /* the header's field count */
    size_t first;   /* line number of the first data row, to name in ragged-row messages */
} csv_shape;

/* A cursor at the first line; a UTF-8 byte-order mark (spreadsheet exports write one) is
 * not part of it. */
static csv_cursor csv_begin(const char *buf, size_t size)
{
    size_t bom = size >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    return (csv_cursor){buf + bom, buf + size, 0};
}

/* The next line without its \n, \r\n or \r, and its length; NULL at the end. */
static const char *csv_next(csv_cursor *c, size_t *len)
{
    if (c->p >= c->end)
        return NULL;
    const char *line = c->p, *stop = line;
    while (stop < c->end && *stop != '\n' && *stop != '\r')
        stop++;
    c->p = stop;
    if (c->p < c->end && *c->p == '\r')
        c->p++;
    if (c->p < c->end && *c->p == '\n')
        c->p++;
    c->lineno++;
    *len = (size_t)(stop - line);
    return line;
}

static int is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)s[i]))
            return 0;
    return 1;
}

static const char *field_end(const char *s, const char *end)
{
    const char *comma = memchr(s, ',', (size_t)(end - s));
    return comma ? comma : end;
}

/* [s, e) without the spaces around it, and then without one pair of double quotes. */
static void trim_field(const char **s, const char **e)
{
    for (int pass = 0; pass < 2; pass++) {
        while (*s < *e && isspace((unsigned char)**s))
            (*s)++;
        while (*e > *s && isspace((unsigned char)(*e)[-1]))
            (*e)--;
        if (pass == 0 && *e - *s >= 2 && **s == '"' && (*e)[-1] == '"')
            (*s)++, (*e)--;
        else
            break;
    }
}

/* Parses [s, e) as one number with optional spaces and quotes around it. strtod cannot
 * run past e: the byte there is a comma, a quote, a line end, a space or the buffer's
 * final NUL. */
static int parse_number(const char *s, const char *e, double *v)
{
    trim_field(&s, &e);
    if (s == e)
        return -1;
    char *stop = NULL;
    *v = strtod(s, &stop);
    return stop == e ? 0 : -1;
}

/* Whether [s, e) is one of the header rule's missing values (at the top): what spreadsheets
 * and pandas write for a value that is not there. */
static int is_missing(const char *s, const char *e)
{
    static const char *const missing[] = {"NA",   "N/A",  "#N/A", "#NA",     "<NA>",
                                          "NULL", "None", "?",    "#N/A N/A"};
    trim_field(&s, &e);
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++)
        if (strlen(missing[i]) == (size_t)(e - s) &&
            strncasecmp(s, missing[i], (size_t)(e - s)) == 0)
            return 1;
    return s == e;
}

/* The header rule (at the top): no field of the line is a number, and some field is a
 * name. */
static int is_header(const char *line, size_t len)
{
    const char *s = line, *end = line + len;
    int names = 0;
    for (;; s++) {
        const char *e = field_end(s, end);
        double v;
        if (parse_number(s, e, &v) == 0)
            return 0;
        names += !is_missing(s, e);
        if (e == end)
            return names > 0;
        s = e;
    }
}

/* The whole file in one zeroed buffer with a NUL after it, so both passes read memory. */
static int read_text_file(const char *path, char **buf, size_t *size, char *err, size_t errlen)
{
    off_t fsize = 0;
    int rc = bp__input_check(path, &fsize, err, errlen);
    if (rc < 0)
        return rc;
    FILE *f = fopen(path, "rb");
    if (!f)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot open: %s", path, strerror(errno));
    *buf = bp__calloc((size_t)fsize + 1, 1);
    *size = *buf ? fread(*buf, 1, (size_t)fsize, f) : 0;
    fclose(f);
    if (!*buf)
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory for %lld bytes", path,
                        (long long)fsize);
    if (*size != (size_t)fsize)
        rc = bp__fail(err, errlen, BP_EIO, "%s: read error", path);
    else if (memchr(*buf, '\0', *size))
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: contains NUL bytes; not a CSV text file", path);
    if (rc < 0) {
        bp__free(*buf);
        *buf = NULL;
    }
    return rc;
}

/* First pass: the header, the row count, and the field count every row must share. */
static int csv_scan(const char *buf, size_t size, csv_shape *sh, const char *path, char *err,
                    size_t errlen)
{
    csv_cursor c = csv_begin(buf, size);
    const char *line;
    size_t len;
    memset(sh, 0, sizeof(*sh));
    while ((line = csv_next(&c, &len))) {
        if (is_blank(line, len))
            continue;
        size_t fields = 1;
        for (size_t i = 0; i < len; i++)
            fields += line[i] == ',';
        if (sh->rows == 0 && !sh->header && is_header(line, len)) {
            sh->header = c.lineno;
            sh->heading = fields;
            continue;
        }
        if (sh->rows == 0 && sh->header && fields != sh->heading)
            return bp__fail(err, errlen, BP_EFORMAT,
                            "%s: line %zu has %zu fields but the header, line %zu, has %zu", path,
                            c.lineno, fields, sh->header, sh->heading);
        if (sh->rows == 0) {
            sh->cols = fields;
            sh->first = c.lineno;
        } else if (fields != sh->cols) {
            return bp__fail(err, errlen, BP_EFORMAT,
                            "%s: line %zu has %zu fields but line %zu has %zu", path, c.lineno,
                            fields, sh->first, sh->cols);
        }
        sh->rows++;
    }
    if (sh->rows == 0 && sh->header)
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: no data rows (line %zu has no number in it: it is the header)", path,
                        sh->header);
    if (sh->rows == 0)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: no data rows", path);
    return 0;
}

/* One line's fields into vals; the field count was checked by csv_scan. */
static int csv_parse_row(const char *line, size_t len, size_t lineno, double *vals, size_t cols,
                         const char *path, char *err, size_t errlen)
{
    const char *s = line, *end = line + len;
    for (size_t j = 0; j < cols; j++, s++) {
        const char *e = field_end(s, end);
        if (is_blank(s, (size_t)(e - s)))
            return bp__fail(err, errlen, BP_EFORMAT, "%s: line %zu column %zu is empty", path,
                            lineno, j + 1);
        if (parse_number(s, e, &vals[j]) < 0)
            return bp__fail(err, errlen, BP_EFORMAT,
                            "%s: line %zu column %zu: '%.*s' is not a number", path, lineno, j + 1,
                            (int)(e - s < 40 ? e - s : 40), s);
        /* Finite as a double can still overflow float. */
        if (!isfinite((bp_real)vals[j]))
            return bp__fail(err, errlen, BP_EFORMAT, "%s: line %zu column %zu is %s", path, lineno,
                            j + 1, isnan(vals[j]) ? "NaN" : "infinite or out of range");
        s = e;
    }
    return 0;
}

static int csv_store_row(bp_dataset *ds, size_t row, const double *vals, size_t lineno,
                         const char *path, char *err, size_t errlen)
{
    for (size_t j = 0; j < ds->d; j++)
        ds->X[row * ds->d + j] = (bp_real)vals[j];
    if (!ds->labels) {
        for (size_t j = 0; j < ds->k; j++)
            ds->Y[row * ds->k + j] = (bp_real)vals[ds->d + j];
        return 0;
    }
    double l = vals[ds->d];
    if (l < 0 || l != floor(l) || l > INT_MAX)
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: line %zu: label %g is not a class number (an integer >= 0)", path,
                        lineno, l);
    ds->labels[row] = (int)l;
    return 0;
}

/* Second pass: the same lines as csv_scan, now parsed into the data set. */
static int csv_fill(bp_dataset *ds, const char *buf, size_t size, const csv_shape *sh, double *vals,
                    const char *path, char *err, size_t errlen)
{
    csv_cursor c = csv_begin(buf, size);
    const char *line;
    size_t len, row = 0;
    while ((line = csv_next(&c, &len))) {
        if (is_blank(line, len) || c.lineno == sh->header)
            continue;
        int rc = csv_parse_row(line, len, c.lineno, vals, sh->cols, path, err, errlen);
        if (rc == 0)
            rc = csv_store_row(ds, row++, vals, c.lineno, path, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int bp_dataset_load_csv(bp_dataset *ds, const char *path, int targets, char *err, size_t errlen)
{
    bp_dataset tmp = {0};
    char *buf = NULL;
    double *vals = NULL;
    size_t size = 0, ycols = targets > 0 ? (size_t)targets : 1;
    csv_shape sh;
    memset(ds, 0, sizeof(*ds));
    if (!path || targets < 0)
        return bp__fail(err, errlen, BP_EINVAL, "%s: %d target columns requested",
                        path ? path : "CSV", targets);
    int rc = read_text_file(path, &buf, &size, err, errlen);
    if (rc == 0)
        rc = csv_scan(buf, size, &sh, path, err, errlen);
    if (rc == 0 && sh.cols <= ycols)
        rc = bp__fail(err, errlen, BP_EFORMAT,
                      "%s: %zu columns leave no features besides the %zu %s column(s)", path,
                      sh.cols, ycols, targets ? "target" : "label");
    if (rc == 0)
        rc = bp__dataset_alloc(&tmp, sh.rows, sh.cols - ycols, (size_t)targets, targets == 0, NULL,
                               path, err, errlen);
    if (rc == 0 && !(vals = bp__calloc(sh.cols, sizeof(double))))
        rc = bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", path);
    if (rc == 0)
        rc = csv_fill(&tmp, buf, size, &sh, vals, path, err, errlen);
    if (rc == 0 && targets == 0)
        rc = bp__labels_to_onehot(&tmp, 0, NULL, path, err, errlen);
    if (rc == 0) {
        *ds = tmp;
        memset(&tmp, 0, sizeof(tmp));
    }
    bp_dataset_free(&tmp);
    bp__free(vals);
    bp__free(buf);
    return rc;
}
