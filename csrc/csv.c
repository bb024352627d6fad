/* csv.c - course CSV bytes -> float32 rows / int32 labels.
 *
 * Format: one record per line, values separated by ','. Accepted without a
 * word: a UTF-8 BOM, CRLF line endings, spaces or tabs around values, a
 * missing final newline, blank lines at the very end of the file. Everything
 * else that is not a decimal number is an error with its line and value index.
 *
 * The parser trusts nothing in the bytes: every read is inside [buf, buf+n),
 * every write inside the (rows, cols) output the caller allocated from the
 * first pass (or none: out == NULL only checks the file), and numbers pass our
 * own grammar before strtof sees them (no locale, no nan/inf/hex).
 *
 * The plain version it must equal: tests/csv_reference.py (number, shape,
 * parse_floats, parse_labels), the same grammar and errors written with
 * Python's strings (tests/test_csv.py, on valid and broken files and by
 * fuzzing).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pynn.h"

#define MAX_TOKEN 64 /* longer tokens are rejected: no number needs more */

static int is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\r'; }
static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* A cursor over the lines of buf; a line is [s, e) with the line ending and
 * surrounding white space trimmed. */
typedef struct {
    const char *buf;
    int64_t n, pos, line;
} cursor;

static void cursor_init(cursor *c, const char *buf, int64_t n) {
    c->buf = buf;
    c->n = n;
    c->line = 0;
    c->pos = (n >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) ? 3 : 0; /* BOM */
}

static int next_line(cursor *c, int64_t *s, int64_t *e) {
    if (c->pos >= c->n) return 0;
    const char *start = c->buf + c->pos;
    const char *nl = memchr(start, '\n', (size_t)(c->n - c->pos));
    int64_t end = nl ? (int64_t)(nl - c->buf) : c->n;
    int64_t b = c->pos;
    c->pos = nl ? end + 1 : c->n;
    c->line++;
    while (end > b && is_space(c->buf[end - 1])) end--;
    while (b < end && is_space(c->buf[b])) b++;
    *s = b;
    *e = end;
    return 1;
}

static void set_err(pynn_csv_error *err, int code, int64_t line, int64_t value,
                    int64_t found, int64_t token_start) {
    err->code = code;
    err->line = line;
    err->value = value;
    err->found = found;
    err->token_start = token_start;
}

/* The sizes a caller passes: checked, not trusted (a caller bug must not
 * become a write outside out). */
static int bad_call(const char *buf, int64_t n, int64_t rows, int64_t cols) {
    return (buf == NULL && n != 0) || n < 0 || rows < 0 || cols < 1 ||
           (rows > 0 && cols > INT64_MAX / rows);
}

int pynn_csv_shape(const char *buf, int64_t n, int64_t *rows, int64_t *cols,
                   pynn_csv_error *err) {
    cursor c;
    int64_t s, e, last_data = 0, first_cols = 0;
    set_err(err, PYNN_CSV_OK, 0, 0, 0, 0);
    *rows = *cols = 0;
    if (bad_call(buf, n, 0, 1)) {
        set_err(err, PYNN_CSV_BAD_CALL, 0, 0, 0, 0);
        return PYNN_CSV_BAD_CALL;
    }
    cursor_init(&c, buf, n);
    while (next_line(&c, &s, &e)) {
        if (s == e) continue; /* blank: an error only if data follows (pass 2) */
        if (last_data == 0) {
            first_cols = 1;
            for (int64_t i = s; i < e; i++) first_cols += (buf[i] == ',');
        }
        last_data = c.line;
    }
    *rows = last_data; /* lines up to the last non-blank one */
    *cols = first_cols;
    if (last_data == 0) {
        set_err(err, PYNN_CSV_EMPTY, 0, 0, 0, 0);
        return PYNN_CSV_EMPTY;
    }
    return PYNN_CSV_OK;
}

/* Parse the decimal number in [p, e) (already trimmed) into *out, correctly
 * rounded to float32. Grammar: [+-] digits [. digits] [(e|E) [+-] digits] with
 * at least one digit before the exponent; nothing else (no nan, inf, hex).
 * Returns PYNN_CSV_OK, _BAD_TOKEN, _LONG_TOKEN or _OVERFLOW (underflow is 0).
 *
 * After the grammar check the token is rewritten as "[-]DIGITSeEXP" (the
 * decimal point folded into the exponent) and handed to strtof: no decimal
 * point means no locale, and glibc's strtof rounds exactly, also for tokens
 * with more significant digits than a double holds. */
static int parse_float(const char *p, const char *e, float *out) {
    if (e - p > MAX_TOKEN) return PYNN_CSV_LONG_TOKEN;
    /* fast path: a plain small integer, which is every pixel of the course data */
    if (e - p <= 9 && e > p) {
        int32_t v = 0;
        const char *q = p;
        while (q < e && is_digit(*q)) v = v * 10 + (*q++ - '0');
        if (q == e) {
            *out = (float)v;
            return PYNN_CSV_OK;
        }
    }
    char text[MAX_TOKEN + 16]; /* sign, <= 64 digits, "e", sign, <= 9 exponent digits */
    int len = 0, digits = 0;
    long exp10 = 0;
    if (p < e && (*p == '+' || *p == '-')) {
        if (*p == '-') text[len++] = '-';
        p++;
    }
    for (; p < e && is_digit(*p); p++) text[len++] = *p, digits++;
    if (p < e && *p == '.')
        for (p++; p < e && is_digit(*p); p++) text[len++] = *p, digits++, exp10--;
    if (digits == 0) return PYNN_CSV_BAD_TOKEN;
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        int eneg = 0, edigits = 0;
        long ev = 0;
        if (p < e && (*p == '+' || *p == '-')) eneg = (*p++ == '-');
        /* capped: past 10^6 the value is 0 or out of range whatever follows */
        for (; p < e && is_digit(*p); p++, edigits++)
            if (ev < 1000000) ev = ev * 10 + (*p - '0');
        if (edigits == 0) return PYNN_CSV_BAD_TOKEN;
        exp10 += eneg ? -ev : ev;
    }
    if (p != e) return PYNN_CSV_BAD_TOKEN;
    /* |exp10| < 10^7 + 64: at most 9 characters with its sign */
    len += snprintf(text + len, sizeof text - (size_t)len, "e%ld", exp10);
    char *end;
    const float f = strtof(text, &end);
    if (end != text + len) return PYNN_CSV_BAD_TOKEN; /* cannot happen: the grammar was checked */
    if (isinf(f)) return PYNN_CSV_OVERFLOW;
    *out = f;
    return PYNN_CSV_OK;
}

/* Find the token that starts at *pos within a line ending at e: returns its
 * trimmed [ts, te) and moves *pos past the following comma. */
static void next_token(const char *buf, int64_t *pos, int64_t e, int64_t *ts,
                       int64_t *te) {
    int64_t p = *pos;
    const char *comma = memchr(buf + p, ',', (size_t)(e - p));
    int64_t end = comma ? (int64_t)(comma - buf) : e;
    int64_t a = p, b = end;
    while (a < b && is_space(buf[a])) a++;
    while (b > a && is_space(buf[b - 1])) b--;
    *ts = a;
    *te = b;
    *pos = comma ? end + 1 : e + 1; /* e + 1 marks "no more tokens" */
}

/* Parse the values of one line [s, e) into dst (room for cols values).
 * Returns the number of values found (also when more than cols), or -1 after
 * filling err for a bad value. The common token, up to 9 digits then a comma, is
 * read in one pass; anything else takes the general path (parse_float). */
static int64_t parse_line(const char *buf, int64_t s, int64_t e, float *dst, int64_t cols,
                          int64_t line, pynn_csv_error *err) {
    const char *p = buf + s, *end = buf + e;
    int64_t k = 0;
    for (;;) {
        const char *ts = p;
        uint32_t v = 0;
        while (p < end && is_digit(*p) && p - ts < 9) v = v * 10 + (uint32_t)(*p++ - '0');
        float val = (float)v;
        if (p == ts || (p < end && *p != ',')) { /* general path */
            const char *comma = end > ts ? memchr(ts, ',', (size_t)(end - ts)) : NULL;
            const char *te = comma ? comma : end, *a = ts, *b = te;
            while (a < b && is_space(*a)) a++;
            while (b > a && is_space(b[-1])) b--;
            int code = parse_float(a, b, &val);
            if (code != PYNN_CSV_OK) {
                set_err(err, code, line, k + 1, 0, a - buf);
                return -1;
            }
            p = te;
        }
        if (k < cols && dst) dst[k] = val;
        k++;
        if (p >= end) return k;
        p++; /* the comma */
    }
}

int pynn_csv_parse_floats(const char *buf, int64_t n, float *out, int64_t rows,
                          int64_t cols, pynn_csv_error *err) {
    cursor c;
    int64_t s, e, row = 0;
    set_err(err, PYNN_CSV_OK, 0, 0, 0, 0);
    if (bad_call(buf, n, rows, cols)) {
        set_err(err, PYNN_CSV_BAD_CALL, 0, 0, 0, 0);
        return PYNN_CSV_BAD_CALL;
    }
    cursor_init(&c, buf, n);
    while (row < rows && next_line(&c, &s, &e)) {
        if (s == e) {
            set_err(err, PYNN_CSV_BLANK_LINE, c.line, 0, 0, s);
            return err->code;
        }
        int64_t k = parse_line(buf, s, e, out ? out + row * cols : NULL, cols, c.line, err);
        if (k < 0) return err->code;
        if (k != cols) {
            set_err(err, PYNN_CSV_COUNT, c.line, 0, k, s);
            return PYNN_CSV_COUNT;
        }
        row++;
    }
    if (row != rows) { /* the buffer changed between the passes */
        set_err(err, PYNN_CSV_CHANGED, c.line, 0, row, 0);
        return PYNN_CSV_CHANGED;
    }
    return PYNN_CSV_OK;
}

int pynn_csv_parse_labels(const char *buf, int64_t n, int32_t *out, int64_t rows,
                          pynn_csv_error *err) {
    cursor c;
    int64_t s, e, row = 0;
    set_err(err, PYNN_CSV_OK, 0, 0, 0, 0);
    if (bad_call(buf, n, rows, 1)) {
        set_err(err, PYNN_CSV_BAD_CALL, 0, 0, 0, 0);
        return PYNN_CSV_BAD_CALL;
    }
    cursor_init(&c, buf, n);
    while (row < rows && next_line(&c, &s, &e)) {
        if (s == e) {
            set_err(err, PYNN_CSV_BLANK_LINE, c.line, 0, 0, s);
            return err->code;
        }
        int64_t pos = s, ts, te;
        next_token(buf, &pos, e, &ts, &te);
        if (pos <= e) { /* a comma: more than one value on a label line */
            int64_t k = 1;
            for (int64_t i = s; i < e; i++) k += (buf[i] == ',');
            set_err(err, PYNN_CSV_COUNT, c.line, 0, k, s);
            return PYNN_CSV_COUNT;
        }
        if (te - ts > MAX_TOKEN) {
            set_err(err, PYNN_CSV_LONG_TOKEN, c.line, 1, 0, ts);
            return PYNN_CSV_LONG_TOKEN;
        }
        int64_t v = 0;
        int64_t i = ts;
        for (; i < te && is_digit(buf[i]); i++) {
            v = v * 10 + (buf[i] - '0');
            if (v > INT32_MAX) {
                set_err(err, PYNN_CSV_OVERFLOW, c.line, 1, 0, ts);
                return PYNN_CSV_OVERFLOW;
            }
        }
        if (i != te || te == ts) {
            set_err(err, PYNN_CSV_NOT_LABEL, c.line, 1, 0, ts);
            return PYNN_CSV_NOT_LABEL;
        }
        if (out) out[row] = (int32_t)v;
        row++;
    }
    if (row != rows) {
        set_err(err, PYNN_CSV_CHANGED, c.line, 0, row, 0);
        return PYNN_CSV_CHANGED;
    }
    return PYNN_CSV_OK;
}
