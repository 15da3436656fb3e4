/* core/label.c: task labels, the text a user knows a task by (fpp_task_opts.label, a map's
 * labels), and a job's name in messages: `task 17` or `task 17 "inputs/0042.bin"`.
 *
 * Invariants of a stored label (fpp__label_make), so that any line can print it as is:
 *  - at most FPP_LABEL_MAX bytes, NUL-terminated, never empty (no label is NULL);
 *  - printable: valid UTF-8 is kept, and every other byte is escaped: `\"`, `\\`, `\n`, `\r`,
 *    `\t`, else `\xNN` (control bytes, DEL, bytes that are not part of valid UTF-8), so a label
 *    never holds a quote, a line break or a terminal escape;
 *  - a label whose escaped text is longer is shortened in the middle, at character boundaries,
 *    to its head, "...", and its tail (for a path, the tail is the file name).
 * Only the first and last FPP_LABEL_MAX * 4 bytes of the input are read, whatever its size. */
#include <stdio.h>
#include <string.h>

#include "core/job.h"

#define HEAD ((FPP_LABEL_MAX - 3) / 2)
#define TAIL (FPP_LABEL_MAX - 3 - HEAD)
#define UNIT_MAX 4 /* the longest escaped unit: "\xNN", or a 4-byte UTF-8 character */

/* The length of the valid UTF-8 character at s (n bytes available), 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t k;
    unsigned char lo = 0x80, hi = 0xBF; /* the second byte's range */
    if (c >= 0xC2 && c <= 0xDF)
        k = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlong forms */
        if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else
        return 0;
    if (n < k || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return k;
}

/* Writes the escaped unit at s[*i] to out (UNIT_MAX bytes of room); returns its length. */
static size_t unit(const unsigned char *s, size_t n, size_t *i, char *out)
{
    unsigned char c = s[*i];
    if (c >= 0x80) {
        size_t k = utf8_len(s + *i, n - *i);
        if (k) {
            memcpy(out, s + *i, k);
            *i += k;
            return k;
        }
    }
    (*i)++;
    const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
    if (esc) {
        memcpy(out, esc, 2);
        return 2;
    }
    if (c < 0x20 || c >= 0x7F) {
        static const char hex[] = "0123456789abcdef";
        out[0] = '\\';
        out[1] = 'x';
        out[2] = hex[c >> 4];
        out[3] = hex[c & 15];
        return 4;
    }
    out[0] = (char)c;
    return 1;
}

char *fpp__label_make(const void *bytes, size_t len)
{
    const unsigned char *s = bytes;
    if (!s || !len)
        return NULL;
    char out[FPP_LABEL_MAX + UNIT_MAX + 1];
    size_t o = 0, i = 0, head_o = 0, head_i = 0;
    /* Forward, until the input ends or the text is too long for a whole label. */
    while (i < len && o <= FPP_LABEL_MAX) {
        if (o <= HEAD) {
            head_o = o;
            head_i = i;
        }
        o += unit(s, len, &i, out + o);
    }
    if (o <= HEAD) {
        head_o = o;
        head_i = i;
    }
    if (i < len || o > FPP_LABEL_MAX) {
        /* Too long: the head that fits in HEAD bytes, "...", and the tail that fits in TAIL.
         * The tail is escaped from a window of the input's last TAIL * UNIT_MAX bytes (at
         * least TAIL units), starting on a character boundary. */
        size_t from = len > (size_t)TAIL * UNIT_MAX ? len - (size_t)TAIL * UNIT_MAX : 0;
        if (from < head_i)
            from = head_i;
        for (int k = 0; k < 3 && from < len && s[from] >= 0x80 && s[from] <= 0xBF; k++)
            from++;
        char tail[TAIL * UNIT_MAX * UNIT_MAX + UNIT_MAX];
        size_t starts[TAIL * UNIT_MAX + 1], nstarts = 0, t = 0;
        for (size_t j = from; j < len;) {
            starts[nstarts++] = t;
            t += unit(s, len, &j, tail + t);
        }
        size_t cut = t;
        for (size_t k = 0; k < nstarts; k++)
            if (t - starts[k] <= TAIL) {
                cut = starts[k];
                break;
            }
        o = head_o;
        memcpy(out + o, "...", 3);
        o += 3;
        memcpy(out + o, tail + cut, t - cut);
        o += t - cut;
    }
    out[o] = '\0';
    return fpp__strdup(out);
}

size_t fpp__job_name(const fpp__job *j, char *buf, size_t cap)
{
    int n = j->label ? snprintf(buf, cap, "task %lld \"%s\"", (long long)j->id, j->label)
                     : snprintf(buf, cap, "task %lld", (long long)j->id);
    return n < 0 ? 0 : FPP__MIN((size_t)n, cap ? cap - 1 : 0);
}
