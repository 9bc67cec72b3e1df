/* The INI config, read with libinih. Every key lives in one table, keys[]: its parsing,
 * default, range and the messages about it, the effective config's line, and its --help and
 * docs/config.md entries all come from its row. A custom line reader counts lines so every
 * message can say FILE:LINE (Debian's inih is built without INI_HANDLER_LINENO). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "backprop/config.h"
#include "fileio.h"
#include "internal.h"

typedef enum {
    K_PATH,    /* char[BP_PATH_MAX]; "" = not set */
    K_LONG,    /* long, min..max */
    K_REAL,    /* double, min..max, either end open by flag */
    K_ENUM,    /* int (or an enum type), one of a choices table; true/false too */
    K_LAYERS,  /* [network] layers: nsizes and sizes[] */
    K_SEED,    /* uint64_t, any */
    K_THREADS, /* int: "auto" (0) or min..max */
} key_type;

/* An enum key's spellings, in the order messages and --help list them; values[i] is what
 * names[i] stores (NULL: i itself). */
typedef struct {
    const char *const *names;
    const int *values;
    int count;
} key_choices;

enum {
    REQUIRED = 1, /* no default: a config must set it */
    LO_OPEN = 2,  /* K_REAL: min itself is refused */
    HI_OPEN = 4,  /* K_REAL: max itself is refused */
};

typedef struct {
    const char *section, *name;
    key_type type;
    size_t offset;
    const key_choices *choices; /* K_ENUM */
    double min, max;            /* K_LONG, K_REAL, K_THREADS */
    int flags;
    const char *zero;     /* K_REAL: what 0 means, where the range states it */
    double above_zero;    /* K_REAL: other than 0, values start here (finish() checks) */
    const char *unit;     /* K_REAL: what the number counts, where the range states it */
    const char *fallback; /* the default, parsed like a config value; NULL: none */
    const char *shown;    /* the default as --help and docs state it, where not fallback */
    const char *help;     /* one line for --help */
} key_spec;

const char *const bp_lr_schedule_names[4] = {"constant", "step", "cosine", "inverse_scaling"};
const char *const bp_optimizer_names[4] = {"sgd", "adam", "lbfgs", "nesterov"};
const char *const bp_placement_names[4] = {"auto", "replicated", "node", "stream"};

#define BP_MIN_COMM_TIMEOUT 1.0 /* seconds; below it, [comm] timeout is refused */
#define REAL_MAX 1e300          /* the largest a real key takes: past it, products overflow */

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define CHOICES(names)                                                                             \
    {                                                                                              \
        names, NULL, COUNT(names)                                                                  \
    }
#define CHOICES_AS(names, values)                                                                  \
    {                                                                                              \
        names, values, COUNT(names)                                                                \
    }

/* Softmax is an output's alone; relu and tanh never end a network here. */
static const char *const hidden_names[] = {"sigmoid", "relu", "tanh", "linear"};
static const char *const output_names[] = {"sigmoid", "softmax", "linear"};
static const int output_values[] = {BP_SIGMOID, BP_SOFTMAX, BP_LINEAR};
static const char *const cost_names[] = {"quadratic", "cross_entropy"};
static const char *const init_names[] = {"gaussian_scaled", "uniform", "xavier", "he"};
static const char *const progress_names[] = {"auto", "on", "off"};
static const char *const bool_names[] = {"true", "false"};
static const int bool_values[] = {1, 0};
static const char *const precision_names[] = {"float", "bf16"};
static const char *const decay_names[] = {"coupled", "decoupled"};
static const char *const reproducible_names[] = {"same_ranks", "any_scale"};

static const key_choices hidden_choices = CHOICES(hidden_names);
static const key_choices output_choices = CHOICES_AS(output_names, output_values);
static const key_choices cost_choices = CHOICES(cost_names);
static const key_choices init_choices = CHOICES(init_names);
static const key_choices progress_choices = CHOICES(progress_names);
static const key_choices bool_choices = CHOICES_AS(bool_names, bool_values);
static const key_choices precision_choices = CHOICES(precision_names);
static const key_choices decay_choices = CHOICES(decay_names);
static const key_choices reproducible_choices = CHOICES(reproducible_names);
static const key_choices optimizer_choices = CHOICES(bp_optimizer_names);
static const key_choices schedule_choices = CHOICES(bp_lr_schedule_names);
static const key_choices placement_choices = CHOICES(bp_placement_names);

/* Enum fields are stored through an int. */
_Static_assert(sizeof(bp_activation) == sizeof(int) && sizeof(bp_cost) == sizeof(int) &&
                   sizeof(bp_init) == sizeof(int) && sizeof(bp_optimizer) == sizeof(int) &&
                   sizeof(bp_lr_schedule) == sizeof(int) && sizeof(bp_placement) == sizeof(int) &&
                   sizeof(bp_progress) == sizeof(int),
               "enum fields are ints");

#define OFF(f) offsetof(bp_config, f)
/* clang-format off */
#define PATH(s, k, f, dflt, show, text) \
    {s, k, K_PATH, OFF(f), .fallback = dflt, .shown = show, .help = text}
#define LONG(s, k, f, lo, hi, dflt, text) \
    {s, k, K_LONG, OFF(f), .min = lo, .max = hi, .fallback = dflt, .help = text}
#define REAL(s, k, f, lo, hi, open, dflt, text) \
    {s, k, K_REAL, OFF(f), .min = lo, .max = hi, .flags = open, .fallback = dflt, .help = text}
#define ENUM(s, k, f, names, dflt, text) \
    {s, k, K_ENUM, OFF(f), &names, .fallback = dflt, .help = text}
/* clang-format on */
/* The order of the rows is the order of the effective config (stored in checkpoints and
 * compared on resume: a moved row changes every new checkpoint's text). */
static const key_spec keys[] = {
    {"data", "train", K_PATH, OFF(train), .flags = REQUIRED,
     .help = "the training set: .h5, IDX images, or builtin:xor, builtin:xor_signed, builtin:line"},
    PATH("data", "train_labels", train_labels, "", NULL, "IDX labels for IDX train images"),
    PATH("data", "validation", validation, "", NULL, "a validation set, evaluated every epoch"),
    PATH("data", "validation_labels", validation_labels, "", NULL,
         "IDX labels for IDX validation images"),
    LONG("data", "validation_split", validation_split, 0, 1e15, "0",
         "hold out the last N training examples for validation"),
    PATH("data", "test", test, "", NULL, "a test set, evaluated every epoch"),
    PATH("data", "test_labels", test_labels, "", NULL, "IDX labels for IDX test images"),
    LONG("data", "limit", limit, 0, 1e15, "0", "use only the first N training examples (0 = all)"),
    ENUM("data", "placement", placement, placement_choices, "auto",
         "where the data sets live: each rank, one copy per node, or read in place"),
    {"data", "max_memory_mb", K_REAL, OFF(max_memory_mb), .min = 0, .max = 1e12,
     .zero = "what the node has", .fallback = "0",
     .help = "the memory, in MB, one rank's data sets may use"},
    {"network", "layers", K_LAYERS, OFF(sizes), .flags = REQUIRED,
     .help = "sizes from input to output, e.g. 784, 100, 10"},
    ENUM("network", "hidden", hidden, hidden_choices, "sigmoid", "activation of the hidden layers"),
    ENUM("network", "output", output, output_choices, "sigmoid", "activation of the output layer"),
    ENUM("network", "cost", cost, cost_choices, "cross_entropy", "the cost function"),
    ENUM("network", "init", init, init_choices, "gaussian_scaled", "how weights start"),
    REAL("network", "init_epsilon", init_epsilon, 0, REAL_MAX, LO_OPEN, "0.12",
         "the epsilon of init = uniform"),
    {"train", "epochs", K_LONG, OFF(epochs), .min = 1, .max = 1e9, .flags = REQUIRED,
     .help = "epochs to train to"},
    {"train", "batch_size", K_LONG, OFF(batch_size), .min = 1, .max = 1e8, .flags = REQUIRED,
     .help = "the global mini-batch, split across ranks"},
    /* Required, except by lbfgs, whose line search finds each step (finish()). */
    {"train", "learning_rate", K_REAL, OFF(learning_rate), .min = 0, .max = REAL_MAX,
     .flags = LO_OPEN, .shown = "required (not by lbfgs)", .help = "the learning rate"},
    REAL("train", "lambda", lambda, 0, REAL_MAX, 0, "0", "L2 strength"),
    REAL("train", "momentum", momentum, 0, 1, HI_OPEN, "0", "momentum of sgd and nesterov"),
    ENUM("train", "optimizer", optimizer, optimizer_choices, "sgd", "the update rule"),
    REAL("train", "beta1", beta1, 0, 1, HI_OPEN, "0.9", "adam: decay of the first moment"),
    REAL("train", "beta2", beta2, 0, 1, HI_OPEN, "0.999", "adam: decay of the second moment"),
    REAL("train", "adam_epsilon", adam_epsilon, 0, 1, LO_OPEN, "1e-8",
         "adam: added to the root of the second moment"),
    ENUM("train", "weight_decay", decoupled, decay_choices, "coupled",
         "adam: L2 in the gradient, or beside the step (AdamW)"),
    ENUM("train", "precision", bf16, precision_choices, "float",
         "bf16: matrix products with bf16 operands"),
    LONG("train", "lbfgs_history", lbfgs_history, 1, 100, "10", "lbfgs: the (s, y) pairs kept"),
    REAL("train", "lbfgs_tolerance", lbfgs_tolerance, 0, REAL_MAX, 0, "1e-5",
         "lbfgs: converged once no gradient component exceeds this"),
    ENUM("train", "lr_schedule", lr_schedule, schedule_choices, "constant",
         "how the learning rate moves over the run"),
    LONG("train", "lr_step_epochs", lr_step_epochs, 1, 1e9, "10",
         "step: epochs between rate changes"),
    REAL("train", "lr_gamma", lr_gamma, 0, 1, LO_OPEN, "0.1", "step: the factor at each change"),
    REAL("train", "lr_min", lr_min, 0, REAL_MAX, 0, "0", "cosine: the rate at the end of the run"),
    REAL("train", "lr_power", lr_power, 0, 10, 0, "0.5", "inverse_scaling: the power"),
    LONG("train", "early_stopping", early_stopping, 0, 1e9, "0",
         "epochs without a better validation cost before the run ends (0 = off)"),
    {"train", "seed", K_SEED, OFF(seed), .fallback = "1",
     .help = "initial weights and each epoch's order"},
    {"train", "threads", K_THREADS, OFF(threads), .min = 1, .max = 4096, .fallback = "auto",
     .help = "BLAS threads per rank"},
    ENUM("train", "reproducible", any_scale, reproducible_choices, "same_ranks",
         "any_scale: the same bits whatever the rank count, threads and hosts"),
    LONG("train", "micro_batch", micro_batch, 1, 1e8, "64",
         "any_scale: rows of each micro-shard of a batch"),
    PATH("checkpoint", "dir", checkpoint_dir, "", "runs/<config name>",
         "where checkpoints and latest.h5 go"),
    LONG("checkpoint", "every_epochs", every_epochs, 0, 1e9, "1",
         "a checkpoint every N epochs (0 = off)"),
    LONG("checkpoint", "every_steps", every_steps, 0, 1e15, "0",
         "a checkpoint every N global steps (0 = off)"),
    {"checkpoint", "every_seconds", K_REAL, OFF(every_seconds), .min = 0, .max = 1e9, .zero = "off",
     .unit = "seconds", .fallback = "0",
     .help = "a checkpoint once this long has passed since the last"},
    LONG("checkpoint", "keep", keep, 0, 1e9, "3", "checkpoint files kept (0 = all)"),
    {"comm", "timeout", K_REAL, OFF(comm_timeout), .min = 0, .max = 1e9, .zero = "off",
     .above_zero = BP_MIN_COMM_TIMEOUT, .unit = "seconds", .fallback = "300",
     .help = "the longest any collective may wait"},
    ENUM("comm", "overlap", overlap, bool_choices, "true",
         "exchange gradients during the backward pass"),
    ENUM("comm", "dtype", comm_bf16, precision_choices, "float",
         "how gradient sums travel between nodes"),
    REAL("comm", "bucket_mb", bucket_mb, 0.001, 1024, 0, "4", "the largest gradient bucket, in MB"),
    PATH("log", "metrics", metrics, "", "<dir>/metrics.csv", "the per-epoch metrics CSV"),
    ENUM("log", "progress", progress, progress_choices, "auto", "progress bar on stderr"),
    PATH("log", "trace", trace, "", "none (the watchdog writes <dir>/trace.json)",
         "the last steps' phases of every rank, a Chrome trace-event JSON written at the end, "
         "on a stop and when the watchdog fires"),
    LONG("log", "trace_steps", trace_steps, 0, 1000, "100",
         "steps the flight recorder keeps (0 = off)"),
    {"log", "straggler_factor", K_REAL, OFF(straggler_factor), .min = 0, .max = 1000, .zero = "off",
     .above_zero = 1.1, .fallback = "1.5",
     .help = "warn when a rank's step work is this many times the others'"},
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))
static const char *const sections[] = {"data", "network", "train", "checkpoint", "comm", "log"};
#define NSECTIONS (sizeof(sections) / sizeof(sections[0]))

typedef struct {
    bp_config *cfg;
    const char *name; /* file name for messages */
    const char *text; /* reader position */
    int line;
    int key_line[NKEYS];
    int section_line[NSECTIONS];
    int last_line;
    char *err;
    size_t errlen;
    int failed;
} parse_ctx;

/* Text appended to a buffer as snprintf would write it whole: `at` counts every byte, the
 * buffer keeps what fits. */
typedef struct {
    char *buf;
    size_t len, at;
} text_out;

static void put(text_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(text_out *o, const char *fmt, ...)
{
    size_t room = o->at < o->len ? o->len - o->at : 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(room ? o->buf + o->at : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->at += (size_t)n;
}

/* A bound as people write it: 1e300, 1e-8, 0.001, 1024. */
static void put_bound(text_out *o, double v)
{
    char s[32], *e;
    snprintf(s, sizeof(s), "%g", v);
    if ((e = strchr(s, 'e')) != NULL) {
        char *d = e + 1;
        if (*d == '+')
            memmove(d, d + 1, strlen(d));
        if (*d == '-')
            d++;
        while (d[0] == '0' && d[1])
            memmove(d, d + 1, strlen(d));
    }
    put(o, "%s", s);
}

/* "a, b, c or d": how messages list an enum's names. */
static void put_names(text_out *o, const key_choices *c)
{
    for (int i = 0; i < c->count; i++)
        put(o, "%s%s", i == 0 ? "" : i == c->count - 1 ? " or " : ", ", c->names[i]);
}

/* A real key's range as its messages state it: "must be > 0 and at most 1e300" (REAL_MAX
 * is a bound on size alone), "0 <= momentum < 1", "0 (off), or 1 to 1e9 seconds". */
static void put_real_range(text_out *o, const key_spec *k)
{
    if ((k->flags & LO_OPEN) || k->max == REAL_MAX) {
        put(o, "must be %s ", k->flags & LO_OPEN ? ">" : ">=");
        put_bound(o, k->min);
        put(o, " and at most ");
    } else if (k->flags & HI_OPEN) {
        put_bound(o, k->min);
        put(o, " <= %s < ", k->name);
    } else {
        put_bound(o, k->min);
        if (k->zero)
            put(o, " (%s)", k->zero);
        if (k->above_zero > 0) {
            put(o, ", or ");
            put_bound(o, k->above_zero);
        }
        put(o, " to ");
    }
    put_bound(o, k->max);
    if (k->unit)
        put(o, " %s", k->unit);
}

/* What values a key takes, for --help and docs/config.md: "integer 1 … 1e9",
 * "number > 0, ≤ 1e300", "sgd | adam | lbfgs | nesterov". */
static void put_type(text_out *o, const key_spec *k)
{
    switch (k->type) {
    case K_PATH:
        put(o, "path");
        return;
    case K_LAYERS:
        put(o, "integers");
        return;
    case K_SEED:
        put(o, "integer 0 … %llu (2⁶⁴ − 1)", (unsigned long long)UINT64_MAX);
        return;
    case K_ENUM:
        for (int i = 0; i < k->choices->count; i++)
            put(o, "%s%s", i ? " | " : "", k->choices->names[i]);
        return;
    case K_THREADS:
        put(o, "auto | ");
        break;
    case K_LONG:
        put(o, "integer ");
        break;
    case K_REAL:
        put(o, "%s ", k->unit ? k->unit : "number");
        if (k->flags & (LO_OPEN | HI_OPEN)) {
            put(o, k->flags & LO_OPEN ? "> " : "≥ ");
            put_bound(o, k->min);
            put(o, k->flags & HI_OPEN ? ", < " : ", ≤ ");
            put_bound(o, k->max);
            return;
        }
        put_bound(o, k->min);
        if (k->zero)
            put(o, " (%s)", k->zero);
        if (k->above_zero > 0) {
            put(o, " or ");
            put_bound(o, k->above_zero);
        }
        put(o, " … ");
        put_bound(o, k->max);
        return;
    }
    put_bound(o, k->min);
    put(o, " … ");
    put_bound(o, k->max);
}

static int fail_at(parse_ctx *ctx, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Keeps the first error only: it is the one a user fixes first. */
static int fail_at(parse_ctx *ctx, int line, const char *fmt, ...)
{
    if (ctx->failed)
        return 0;
    ctx->failed = 1;
    char what[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(ctx->err, ctx->errlen, "%s:%d: %s", ctx->name, line, what);
    else
        snprintf(ctx->err, ctx->errlen, "%s: %s", ctx->name, what);
    return 0;
}
static int parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno)
        return -1;
    *out = v;
    return 0;
}

/* -1 when s is not a number, -2 when it is one too large (or too small) for a double. */
static int parse_real(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end)
        return -1;
    /* ERANGE also flags results too small for a normal double (1e-310): those are numbers
     * all the same, and the range check decides. */
    if ((errno == ERANGE && fabs(v) > 1) || !isfinite(v))
        return isnan(v) ? -1 : -2;
    *out = v;
    return 0;
}

static int parse_layers(parse_ctx *ctx, const char *value, int line)
{
    bp_config *cfg = ctx->cfg;
    int n = 0;
    const char *p = value;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > 1000000)
            return fail_at(ctx, line,
                           "[network] layers: expected positive integers separated by commas "
                           "(e.g. 784, 100, 10), got '%s'",
                           value);
        if (n == BP_MAX_LAYERS)
            return fail_at(ctx, line, "[network] layers: at most %d sizes", BP_MAX_LAYERS);
        cfg->sizes[n++] = (int)v;
        while (isspace((unsigned char)*end))
            end++;
        if (*end == ',')
            end++;
        else if (*end)
            return fail_at(ctx, line, "[network] layers: unexpected '%c' in '%s'", *end, value);
        while (isspace((unsigned char)*end))
            end++;
        p = end;
    }
    if (n < 2)
        return fail_at(ctx, line, "[network] layers: need at least an input and an output size");
    cfg->nsizes = n;
    return 1;
}

/* One lookup for every enum key; the message lists the names from the key's own table. */
static int set_enum(parse_ctx *ctx, const key_spec *k, const char *value, int line)
{
    const key_choices *c = k->choices;
    for (int i = 0; i < c->count; i++)
        if (strcmp(value, c->names[i]) == 0) {
            *(int *)((char *)ctx->cfg + k->offset) = c->values ? c->values[i] : i;
            return 1;
        }
    char names[256];
    text_out o = {names, sizeof(names), 0};
    put_names(&o, c);
    return fail_at(ctx, line, "[%s] %s: expected %s, got '%s'", k->section, k->name, names, value);
}

static int set_long(parse_ctx *ctx, const key_spec *k, const char *value, int line)
{
    long lv;
    if (parse_long(value, &lv) < 0)
        return fail_at(ctx, line, "[%s] %s: expected an integer, got '%s'", k->section, k->name,
                       value);
    if (lv < k->min || lv > k->max)
        return fail_at(ctx, line, "[%s] %s: %ld is out of range (%.0f to %.0f)", k->section,
                       k->name, lv, k->min, k->max);
    *(long *)((char *)ctx->cfg + k->offset) = lv;
    return 1;
}

static int set_real(parse_ctx *ctx, const key_spec *k, const char *value, int line)
{
    double dv;
    char range[128];
    text_out o = {range, sizeof(range), 0};
    put_real_range(&o, k);
    switch (parse_real(value, &dv)) {
    case -1:
        return fail_at(ctx, line, "[%s] %s: expected a number, got '%s'", k->section, k->name,
                       value);
    case -2:
        return fail_at(ctx, line, "[%s] %s: %s is out of range (%s)", k->section, k->name, value,
                       range);
    }
    if (dv < k->min || dv > k->max || ((k->flags & LO_OPEN) && dv == k->min) ||
        ((k->flags & HI_OPEN) && dv == k->max))
        return fail_at(ctx, line, "[%s] %s: %g is out of range (%s)", k->section, k->name, dv,
                       range);
    *(double *)((char *)ctx->cfg + k->offset) = dv;
    return 1;
}

static int set_seed(parse_ctx *ctx, const key_spec *k, const char *value, int line)
{
    char *end;
    errno = 0;
    unsigned long long u = strtoull(value, &end, 10);
    if (!isdigit((unsigned char)value[0]) || *end || errno)
        return fail_at(ctx, line, "[%s] %s: expected an integer from 0 to %llu, got '%s'",
                       k->section, k->name, (unsigned long long)UINT64_MAX, value);
    *(uint64_t *)((char *)ctx->cfg + k->offset) = (uint64_t)u;
    return 1;
}

static int set_threads(parse_ctx *ctx, const key_spec *k, const char *value, int line)
{
    long lv = 0;
    if (strcmp(value, "auto") != 0 && (parse_long(value, &lv) < 0 || lv < k->min || lv > k->max))
        return fail_at(ctx, line, "[%s] %s: expected auto or %.0f..%.0f, got '%s'", k->section,
                       k->name, k->min, k->max, value);
    *(int *)((char *)ctx->cfg + k->offset) = (int)lv; /* 0 = auto */
    return 1;
}

static int set_value(parse_ctx *ctx, const key_spec *k, const char *value, int line)
{
    switch (k->type) {
    case K_PATH:
        if (strlen(value) >= BP_PATH_MAX)
            return fail_at(ctx, line, "[%s] %s: longer than %d characters", k->section, k->name,
                           BP_PATH_MAX - 1);
        strcpy((char *)ctx->cfg + k->offset, value);
        return 1;
    case K_LONG:
        return set_long(ctx, k, value, line);
    case K_REAL:
        return set_real(ctx, k, value, line);
    case K_ENUM:
        return set_enum(ctx, k, value, line);
    case K_LAYERS:
        return parse_layers(ctx, value, line);
    case K_SEED:
        return set_seed(ctx, k, value, line);
    case K_THREADS:
        return set_threads(ctx, k, value, line);
    }
    return fail_at(ctx, line, "internal: bad key type");
}

static int find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int find_section(const char *section)
{
    for (size_t i = 0; i < NSECTIONS; i++)
        if (strcmp(sections[i], section) == 0)
            return (int)i;
    return -1;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx *ctx = user;
    if (!*section)
        return fail_at(ctx, ctx->line, "'%s' is outside any section", name);
    if (find_section(section) < 0)
        return 0; /* reported by the reader when it saw the header */
    int i = find_key(section, name);
    if (i < 0)
        return fail_at(ctx, ctx->line, "unknown key '%s' in [%s]", name, section);
    if (ctx->key_line[i])
        return fail_at(ctx, ctx->line, "[%s] %s is set twice (first on line %d)", section, name,
                       ctx->key_line[i]);
    ctx->key_line[i] = ctx->line;
    /* An empty optional path means "not set", so the effective config re-parses. */
    if (!*value && (keys[i].type != K_PATH || (keys[i].flags & REQUIRED)))
        return fail_at(ctx, ctx->line, "[%s] %s: empty value", section, name);
    return set_value(ctx, &keys[i], value, ctx->line);
}

/* Sees every line before inih does: counts lines, and checks section headers (inih
 * does not report a section with no keys, so an unknown one would pass silently). */
static void check_header(parse_ctx *ctx, const char *line)
{
    while (isspace((unsigned char)*line))
        line++;
    if (*line != '[')
        return;
    const char *end = strchr(line, ']');
    if (!end)
        return; /* inih reports the syntax error */
    char name[64];
    size_t len = (size_t)(end - line - 1);
    if (len >= sizeof(name)) {
        fail_at(ctx, ctx->line, "unknown section [%.*s]", (int)len, line + 1);
        return;
    }
    memcpy(name, line + 1, len);
    name[len] = 0;
    int s = find_section(name);
    if (s < 0) {
        char known[128];
        text_out o = {known, sizeof(known), 0};
        for (size_t i = 0; i < NSECTIONS; i++)
            put(&o, "%s%s", i ? ", " : "", sections[i]);
        fail_at(ctx, ctx->line, "unknown section [%s] (known: %s)", name, known);
    } else if (!ctx->section_line[s])
        ctx->section_line[s] = ctx->line;
}

static char *reader(char *str, int num, void *stream)
{
    parse_ctx *ctx = stream;
    if (!*ctx->text)
        return NULL;
    const char *nl = strchr(ctx->text, '\n');
    size_t len = nl ? (size_t)(nl - ctx->text) + 1 : strlen(ctx->text);
    ctx->line++;
    if (len >= (size_t)num) {
        fail_at(ctx, ctx->line, "line longer than %d characters", num - 2);
        len = (size_t)num - 1;
    }
    memcpy(str, ctx->text, len);
    str[len] = 0;
    ctx->text = nl ? nl + 1 : ctx->text + strlen(ctx->text);
    check_header(ctx, str);
    return str;
}

static int apply_set(parse_ctx *ctx, const char *set)
{
    char label[300];
    snprintf(label, sizeof(label), "override %s", set);
    ctx->name = label;
    const char *dot = strchr(set, '.'), *eq = strchr(set, '=');
    if (!dot || !eq || dot > eq) {
        fail_at(ctx, 0, "expected SECTION.KEY=VALUE");
        return -1;
    }
    char section[64], name[64];
    size_t slen = (size_t)(dot - set), nlen = (size_t)(eq - dot - 1);
    if (slen >= sizeof(section) || nlen >= sizeof(name)) {
        fail_at(ctx, 0, "unknown key");
        return -1;
    }
    memcpy(section, set, slen);
    section[slen] = 0;
    memcpy(name, dot + 1, nlen);
    name[nlen] = 0;
    int i = find_key(section, name);
    if (i < 0) {
        fail_at(ctx, 0,
                find_section(section) < 0 ? "unknown section [%s]" : "unknown key '%s' in [%s]",
                find_section(section) < 0 ? section : name, section);
        return -1;
    }
    /* As a file may not set a key twice: which of two values was meant is not ours to
     * guess. */
    if (ctx->key_line[i] < 0) {
        fail_at(ctx, 0, "[%s] %s is set twice on the command line", section, name);
        return -1;
    }
    ctx->key_line[i] = -1; /* set, and not on any line of the file */
    if (!eq[1] && (keys[i].type != K_PATH || (keys[i].flags & REQUIRED))) {
        fail_at(ctx, 0, "[%s] %s: empty value", section, name);
        return -1;
    }
    return set_value(ctx, &keys[i], eq + 1, 0) ? 0 : -1;
}

/* The line to blame for a cross-key problem: the key's own, else its section's. A key
 * that came from an override is blamed on the overrides. */
static int line_of(parse_ctx *ctx, const char *section, const char *name)
{
    int i = find_key(section, name);
    if (ctx->key_line[i] < 0) {
        ctx->name = "override";
        return 0;
    }
    if (ctx->key_line[i] > 0)
        return ctx->key_line[i];
    int s = find_section(section);
    return ctx->section_line[s] > 0 ? ctx->section_line[s] : ctx->last_line;
}

static void default_paths(bp_config *cfg, const char *file)
{
    if (!cfg->checkpoint_dir[0]) {
        const char *base = strrchr(file, '/');
        base = base ? base + 1 : file;
        size_t len = strlen(base);
        if (len > 4 && strcmp(base + len - 4, ".ini") == 0)
            len -= 4;
        snprintf(cfg->checkpoint_dir, BP_PATH_MAX, "runs/%.*s", (int)len, base);
    }
    if (!cfg->metrics[0])
        snprintf(cfg->metrics, BP_PATH_MAX, "%.*s/metrics.csv", BP_PATH_MAX - 20,
                 cfg->checkpoint_dir);
}

/* What reproducible = any_scale does not cover yet (docs/reproducibility.md): refused by
 * name, rather than run with bits that would depend on the scale. */
static int any_scale_check(parse_ctx *ctx, const bp_config *cfg)
{
    const char *key = NULL, *section = "train", *what = NULL;
    if (!cfg->any_scale)
        return 0;
    if (cfg->optimizer == BP_OPT_LBFGS)
        key = "optimizer", what = "optimizer = lbfgs";
    else if (cfg->bf16)
        key = "precision", what = "precision = bf16";
    else if (cfg->comm_bf16)
        section = "comm", key = "dtype", what = "[comm] dtype = bf16";
    if (!key)
        return 0;
    fail_at(ctx, line_of(ctx, section, key),
            "[train] reproducible = any_scale does not take %s (docs/reproducibility.md)", what);
    return BP_EINVAL;
}

static int finish(parse_ctx *ctx, const char *file)
{
    ctx->name = file;
    for (size_t i = 0; i < NKEYS && !ctx->failed; i++) {
        if (ctx->key_line[i])
            continue;
        if ((keys[i].flags & REQUIRED))
            fail_at(ctx, line_of(ctx, keys[i].section, keys[i].name),
                    "missing required key '%s' in [%s]", keys[i].name, keys[i].section);
        else if (keys[i].fallback)
            set_value(ctx, &keys[i], keys[i].fallback, 0);
    }
    if (ctx->failed)
        return BP_EINVAL;
    bp_config *cfg = ctx->cfg;
    if (cfg->learning_rate == 0) { /* not set: the key without a fallback */
        if (cfg->optimizer != BP_OPT_LBFGS) {
            fail_at(ctx, line_of(ctx, "train", "learning_rate"),
                    "missing required key 'learning_rate' in [train]");
            return BP_EINVAL;
        }
        cfg->learning_rate = 1; /* unused by lbfgs; keeps the effective config valid */
    }
    char why[256];
    if (bp_net_validate(cfg->nsizes, cfg->sizes, cfg->hidden, cfg->output, cfg->cost, why,
                        sizeof(why)) < 0) {
        fail_at(ctx, line_of(ctx, "network", "cost"), "[network] %s", why);
        return BP_EINVAL;
    }
    if ((cfg->optimizer == BP_OPT_ADAM || cfg->optimizer == BP_OPT_LBFGS) && cfg->momentum != 0) {
        fail_at(ctx, line_of(ctx, "train", "momentum"),
                cfg->optimizer == BP_OPT_ADAM
                    ? "[train] momentum applies to optimizer = sgd or nesterov (adam has beta1)"
                    : "[train] momentum applies to optimizer = sgd or nesterov (lbfgs has none)");
        return BP_EINVAL;
    }
    if (cfg->optimizer == BP_OPT_LBFGS && cfg->lr_schedule != BP_LR_CONSTANT) {
        fail_at(ctx, line_of(ctx, "train", "lr_schedule"),
                "[train] lr_schedule = %s: lbfgs finds each step by a line search (use sgd or "
                "adam for a schedule)",
                bp_lr_schedule_names[cfg->lr_schedule]);
        return BP_EINVAL;
    }
    /* The watchdog (src/comm.c) looks every 0.1 s and lets ranks report 0.2 s apart: a
     * limit under a second would be missed by that much, and met by a busy node's
     * scheduling alone. */
    if (cfg->comm_timeout > 0 && cfg->comm_timeout < BP_MIN_COMM_TIMEOUT) {
        fail_at(ctx, line_of(ctx, "comm", "timeout"),
                "[comm] timeout: %g s is below the %g s the watchdog can honour (0 turns it "
                "off)",
                cfg->comm_timeout, BP_MIN_COMM_TIMEOUT);
        return BP_EINVAL;
    }
    /* Below 1.1, a rank as fast as the others but for the noise of a busy node would be
     * slow (docs/running.md, "Slow ranks"). */
    if (cfg->straggler_factor > 0 && cfg->straggler_factor < 1.1) {
        fail_at(ctx, line_of(ctx, "log", "straggler_factor"),
                "[log] straggler_factor: %g is below 1.1, where ranks within a busy node's noise "
                "of each other would be called slow (0 turns it off)",
                cfg->straggler_factor);
        return BP_EINVAL;
    }
    if (cfg->trace[0] && cfg->trace_steps == 0) {
        fail_at(ctx, line_of(ctx, "log", "trace"),
                "[log] trace = %s with trace_steps = 0: the flight recorder is off, so there is "
                "nothing to write (set trace_steps, or leave trace unset)",
                cfg->trace);
        return BP_EINVAL;
    }
    if (cfg->validation[0] && cfg->validation_split) {
        fail_at(ctx, line_of(ctx, "data", "validation_split"),
                "[data] set validation or validation_split, not both");
        return BP_EINVAL;
    }
    if (any_scale_check(ctx, cfg) < 0)
        return BP_EINVAL;
    default_paths(cfg, file);
    return 0;
}

int bp_config_parse(bp_config *cfg, const char *name, const char *text, const char *const *sets,
                    int nsets, char *err, size_t errlen)
{
    parse_ctx ctx = {.cfg = cfg, .name = name, .text = text, .err = err, .errlen = errlen};
    memset(cfg, 0, sizeof(*cfg));
    /* Editors on Windows start UTF-8 files with a byte-order mark: not part of line 1. */
    if (strncmp(ctx.text, "\xEF\xBB\xBF", 3) == 0)
        ctx.text += 3;
    int rc = ini_parse_stream(reader, &ctx, handler, &ctx);
    ctx.last_line = ctx.line;
    if (rc > 0 && !ctx.failed)
        fail_at(&ctx, rc, "syntax error: expected [section] or key = value");
    else if (rc < 0 && !ctx.failed)
        fail_at(&ctx, 0, "cannot parse (out of memory)");
    for (int i = 0; i < nsets && !ctx.failed; i++)
        apply_set(&ctx, sets[i]);
    if (ctx.failed)
        return BP_EINVAL;
    return finish(&ctx, name);
}

int bp_config_load(bp_config *cfg, const char *path, const char *const *sets, int nsets, char *err,
                   size_t errlen)
{
    int fd = bp__input_open(path, NULL, err, errlen);
    if (fd < 0)
        return fd;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return bp__fail(err, errlen, BP_ENOMEM, "%s: cannot open (%s)", path, strerror(errno));
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *t = bp__realloc(text, ncap, 1);
            if (!t) {
                rc = bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", path);
                goto cleanup;
            }
            text = t, cap = ncap;
        }
        size_t got = fread(text + len, 1, 4096, f);
        len += got;
        if (got < 4096)
            break;
    }
    if (ferror(f)) {
        rc = bp__fail(err, errlen, BP_EIO, "%s: read error", path);
        goto cleanup;
    }
    text[len] = 0;
    if (strlen(text) != len) {
        rc = bp__fail(err, errlen, BP_EINVAL, "%s: not a text file (contains NUL bytes)", path);
        goto cleanup;
    }
    rc = bp_config_parse(cfg, path, text, sets, nsets, err, errlen);
cleanup:
    bp__free(text);
    fclose(f);
    return rc;
}

/* One key's value as the effective config writes it: every real with 17 digits, so the
 * text re-parses to the same bits. */
static void put_value(text_out *o, const key_spec *k, const bp_config *c)
{
    const void *field = (const char *)c + k->offset;
    switch (k->type) {
    case K_PATH:
        put(o, "%s", (const char *)field);
        return;
    case K_LONG:
        put(o, "%ld", *(const long *)field);
        return;
    case K_REAL:
        put(o, "%.17g", *(const double *)field);
        return;
    case K_ENUM: {
        int v = *(const int *)field;
        const key_choices *ch = k->choices;
        const char *name = "?";
        for (int i = 0; i < ch->count; i++)
            if ((ch->values ? ch->values[i] : i) == v)
                name = ch->names[i];
        put(o, "%s", name);
        return;
    }
    case K_LAYERS:
        for (int i = 0; i < c->nsizes; i++)
            put(o, i ? ", %d" : "%d", c->sizes[i]);
        return;
    case K_SEED:
        put(o, "%llu", (unsigned long long)*(const uint64_t *)field);
        return;
    case K_THREADS:
        if (*(const int *)field)
            put(o, "%d", *(const int *)field);
        else
            put(o, "auto");
        return;
    }
}

size_t bp_config_format(const bp_config *c, char *buf, size_t len)
{
    text_out o = {buf, len, 0};
    if (len)
        buf[0] = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        if (i == 0 || strcmp(keys[i].section, keys[i - 1].section) != 0)
            put(&o, "%s[%s]\n", i ? "\n" : "", keys[i].section);
        put(&o, "%s = ", keys[i].name);
        put_value(&o, &keys[i], c);
        put(&o, "\n");
    }
    return o.at;
}

size_t bp_config_key_count(void)
{
    return NKEYS;
}

int bp_config_describe(size_t i, bp_config_key *out)
{
    if (i >= NKEYS)
        return BP_EINVAL;
    const key_spec *k = &keys[i];
    out->section = k->section;
    out->key = k->name;
    out->help = k->help;
    text_out o = {out->type, sizeof(out->type), 0};
    put_type(&o, k);
    const char *shown = k->shown                        ? k->shown
                        : (k->flags & REQUIRED)         ? "required"
                        : k->fallback && k->fallback[0] ? k->fallback
                                                        : "—";
    snprintf(out->fallback, sizeof(out->fallback), "%s", shown);
    return 0;
}
