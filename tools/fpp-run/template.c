/* template.c: the command template of exec mode. GNU parallel joins the command words with
 * spaces, puts each replacement string's value in, quoted for the shell ({} {.} {/} {//} {/.}
 * {#} {%} and {N}, {N.}, ... for input source N), appends the values when there is no
 * replacement string, and runs the line with a shell. This file builds that line exactly (it is
 * what the joblog, --dry-run and the shell see), and decides once, from the template alone,
 * whether a job can be started without a shell: when the line is plain words (letters, digits,
 * -_./,:=+%@^, quotes without expansions inside, backslash escapes) whose replacement strings
 * stand outside quotes, and the program is a file in $PATH, the shell would only split words
 * and remove quotes, so fpp-run does that itself and execs the program directly (what makes
 * 5,000 short jobs fast). Anything else (pipes, redirections, variables, globs, functions,
 * builtins, keywords) goes to the shell: $PARALLEL_SHELL, else $SHELL, else /bin/sh. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fpp-run.h"

/* Matches a replacement string at s (length n): its length, or 0. */
static size_t match_rpl(const char *s, size_t n, int *src, int *mod)
{
    if (n < 2 || s[0] != '{')
        return 0;
    size_t i = 1;
    int num = 0;
    bool digits = false;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        if (num > 100000)
            return 0;
        num = num * 10 + (s[i] - '0');
        digits = true;
        i++;
    }
    if (digits && num == 0)
        return 0;
    size_t close = i;
    while (close < n && close - i < 3 && s[close] != '}')
        close++;
    if (close >= n || s[close] != '}')
        return 0;
    size_t k = close - i;
    const char *m = s + i;
    int md = -1;
    if (k == 0)
        md = MOD_NONE;
    else if (k == 1 && m[0] == '.')
        md = MOD_DOT;
    else if (k == 1 && m[0] == '/')
        md = MOD_BASE;
    else if (k == 2 && m[0] == '/' && m[1] == '/')
        md = MOD_DIR;
    else if (k == 2 && m[0] == '/' && m[1] == '.')
        md = MOD_BASEDOT;
    else if (!digits && k == 1 && m[0] == '#')
        md = MOD_SEQ;
    else if (!digits && k == 1 && m[0] == '%')
        md = MOD_SLOT;
    if (md < 0)
        return 0;
    *src = digits ? num : 0;
    *mod = md;
    return close + 1;
}

static void add_seg(tseg **segs, int *n, bool rpl, const char *text, size_t len, int src, int mod)
{
    if (!rpl && len == 0)
        return;
    if (!rpl && *n > 0 && !(*segs)[*n - 1].rpl) {
        tseg *last = &(*segs)[*n - 1];
        last->text = xrealloc(last->text, last->len + len + 1);
        memcpy(last->text + last->len, text, len);
        last->len += len;
        last->text[last->len] = 0;
        return;
    }
    *segs = xrealloc(*segs, (size_t)(*n + 1) * sizeof **segs);
    tseg *g = &(*segs)[(*n)++];
    memset(g, 0, sizeof *g);
    g->rpl = rpl;
    g->src = src;
    g->mod = mod;
    if (!rpl) {
        g->text = xmalloc(len + 1);
        memcpy(g->text, text, len);
        g->text[len] = 0;
        g->len = len;
    }
}

static bool safe_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80 ||
           strchr("-_./,:=+%@^", c);
}

/* The words a shell gives special meaning to even when a file of that name is in $PATH. */
static bool shell_word(const char *w)
{
    static const char *const kw[] = {"time", "exec", "command", "builtin", "eval", "source", ".", "!",
                                     "if", "then", "else", "elif", "fi", "case", "esac", "for",
                                     "while", "until", "do", "done", "function", "select", "coproc",
                                     "[[", "]]", "{", "}", "exit", "return", "set", "export", "cd",
                                     "alias", "unset", "trap", "wait", "local", "declare", "typeset",
                                     "readonly", "shift", "ulimit", "umask", "let", "read", "jobs",
                                     "fg", "bg", "type", "hash", "shopt", "enable", "getopts", NULL};
    for (int i = 0; kw[i]; i++)
        if (strcmp(w, kw[i]) == 0)
            return true;
    return false;
}

static char *find_in_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    strbuf b = {0};
    for (const char *p = path;;) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        b.len = 0;
        if (n == 0)
            sb_adds(&b, ".");
        else
            sb_add(&b, p, n);
        sb_addc(&b, '/');
        sb_adds(&b, prog);
        struct stat st;
        if (stat(b.p, &st) == 0 && S_ISREG(st.st_mode) && access(b.p, X_OK) == 0)
            return b.p;
        if (!colon)
            break;
        p = colon + 1;
    }
    sb_free(&b);
    return NULL;
}

/* Splits the joined line into words the way a shell would, if it needs no shell: returns 1
 * with t->words set, or 0 with *why set. */
static int lex_direct(tmpl *t, const char *s, size_t n, const char **why)
{
    tword *words = NULL;
    int nw = 0;
    tseg *cur = NULL;
    int ncur = 0;
    bool in_word = false;
    size_t i = 0;
    while (i <= n) {
        unsigned char c = i < n ? (unsigned char)s[i] : 0;
        if (i == n || c == ' ' || c == '\t') {
            if (in_word) {
                words = xrealloc(words, (size_t)(nw + 1) * sizeof *words);
                if (ncur == 0) { /* an empty quoted word ('' or ""): one empty argument */
                    cur = xcalloc(1, sizeof *cur);
                    cur->text = xstrdup("");
                    ncur = 1;
                }
                words[nw].segs = cur;
                words[nw].nsegs = ncur;
                nw++;
                cur = NULL;
                ncur = 0;
                in_word = false;
            }
            i++;
            continue;
        }
        int src, mod;
        size_t k;
        if (c == '{' && (k = match_rpl(s + i, n - i, &src, &mod)) > 0) {
            add_seg(&cur, &ncur, true, NULL, 0, src, mod);
            in_word = true;
            i += k;
            continue;
        }
        if (c == '\'') {
            const char *end = memchr(s + i + 1, '\'', n - i - 1);
            if (!end) {
                *why = "an unmatched quote";
                goto shell;
            }
            size_t len = (size_t)(end - (s + i + 1));
            for (size_t j = 0; j < len; j++)
                if (s[i + 1 + j] == '{' && match_rpl(s + i + 1 + j, len - j, &src, &mod)) {
                    *why = "a replacement string inside quotes";
                    goto shell;
                }
            add_seg(&cur, &ncur, false, s + i + 1, len, 0, 0);
            in_word = true;
            i += len + 2;
            continue;
        }
        if (c == '"') {
            const char *end = memchr(s + i + 1, '"', n - i - 1);
            if (!end) {
                *why = "an unmatched quote";
                goto shell;
            }
            size_t len = (size_t)(end - (s + i + 1));
            for (size_t j = 0; j < len; j++) {
                char d = s[i + 1 + j];
                if (d == '$' || d == '`' || d == '\\' || d == '!') {
                    *why = "an expansion inside double quotes";
                    goto shell;
                }
                if (d == '{' && match_rpl(s + i + 1 + j, len - j, &src, &mod)) {
                    *why = "a replacement string inside quotes";
                    goto shell;
                }
            }
            add_seg(&cur, &ncur, false, s + i + 1, len, 0, 0);
            in_word = true;
            i += len + 2;
            continue;
        }
        if (c == '\\') {
            if (i + 1 >= n || s[i + 1] == '\n') {
                *why = "a backslash at the end of a line";
                goto shell;
            }
            add_seg(&cur, &ncur, false, s + i + 1, 1, 0, 0);
            in_word = true;
            i += 2;
            continue;
        }
        if (!safe_char(c) || (c == '=' && nw == 0)) {
            *why = "shell syntax";
            goto shell;
        }
        add_seg(&cur, &ncur, false, s + i, 1, 0, 0);
        in_word = true;
        i++;
    }
    if (nw == 0) {
        *why = "an empty command";
        goto shell;
    }
    t->words = words;
    t->nwords = nw;
    return 1;
shell:
    for (int w = 0; w < nw; w++) {
        for (int g = 0; g < words[w].nsegs; g++)
            free(words[w].segs[g].text);
        free(words[w].segs);
    }
    free(words);
    for (int g = 0; g < ncur; g++)
        free(cur[g].text);
    free(cur);
    return 0;
}

int tmpl_parse(tmpl *t, char **words, int n, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    const char *sh = getenv("PARALLEL_SHELL");
    if (!sh || !*sh)
        sh = getenv("SHELL");
    if (!sh || !*sh)
        sh = "/bin/sh";
    t->shell = sh;
    if (n == 0) {
        /* No command: each input is the command line itself (GNU parallel). */
        t->why_shell = "the inputs are the commands";
        return 0;
    }
    strbuf line = {0};
    for (int i = 0; i < n; i++) {
        if (i)
            sb_addc(&line, ' ');
        sb_adds(&line, words[i]);
    }
    const char *perl = strstr(line.p, "{=");
    if (perl && strstr(perl + 2, "=}")) {
        /* GNU parallel's Perl expressions: refused, not passed through as text (the job
         * would run with the expression in its command and the value appended). */
        snprintf(err, errlen, "perl replacement strings ({= ... =}) are not supported: %s", perl);
        sb_free(&line);
        return -1;
    }
    for (size_t i = 0; i < line.len;) {
        int src, mod;
        size_t k = line.p[i] == '{' ? match_rpl(line.p + i, line.len - i, &src, &mod) : 0;
        if (k) {
            add_seg(&t->segs, &t->nsegs, true, NULL, 0, src, mod);
            t->has_rpl = true;
            i += k;
        } else {
            size_t j = i + 1;
            while (j < line.len && line.p[j] != '{')
                j++;
            add_seg(&t->segs, &t->nsegs, false, line.p + i, j - i, 0, 0);
            i = j;
        }
    }
    const char *why = NULL;
    if (lex_direct(t, line.p, line.len, &why)) {
        tword *w0 = &t->words[0];
        if (w0->nsegs != 1 || w0->segs[0].rpl) {
            why = "the program is a replacement string";
        } else if (shell_word(w0->segs[0].text)) {
            why = "the program is a shell keyword or builtin";
        } else if (strchr(w0->segs[0].text, '/')) {
            t->exe = xstrdup(w0->segs[0].text);
        } else if (!(t->exe = find_in_path(w0->segs[0].text))) {
            why = "the program is not a file in $PATH (a function, alias or builtin?)";
        }
        if (t->exe) {
            t->direct = true;
        } else {
            for (int w = 0; w < t->nwords; w++) {
                for (int g = 0; g < t->words[w].nsegs; g++)
                    free(t->words[w].segs[g].text);
                free(t->words[w].segs);
            }
            free(t->words);
            t->words = NULL;
            t->nwords = 0;
        }
    }
    t->why_shell = t->direct ? NULL : why;
    sb_free(&line);
    return 0;
}

/* ------------------------------------------------------------ values */

void shell_quote(strbuf *out, const char *s, size_t n)
{
    bool plain = true;
    for (size_t i = 0; i < n && plain; i++) {
        unsigned char c = (unsigned char)s[i];
        plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                c == '_' || c == '.' || c == '+' || c == '/';
    }
    if (plain && n) {
        sb_add(out, s, n);
        return;
    }
    if (n == 0) {
        sb_adds(out, "''");
        return;
    }
    /* '...' with each ' written as '"'"', then the '' at either end dropped. */
    strbuf q = {0};
    sb_addc(&q, '\'');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\'')
            sb_adds(&q, "'\"'\"'");
        else
            sb_addc(&q, s[i]);
    }
    sb_addc(&q, '\'');
    size_t a = 0, z = q.len;
    if (z >= 2 && q.p[0] == '\'' && q.p[1] == '\'')
        a = 2;
    if (z - a >= 2 && q.p[z - 1] == '\'' && q.p[z - 2] == '\'')
        z -= 2;
    sb_add(out, q.p + a, z - a);
    sb_free(&q);
}

/* s:\.[^/.]*$:: */
static size_t strip_ext(const char *s, size_t n)
{
    size_t i = n;
    while (i > 0 && s[i - 1] != '/' && s[i - 1] != '.')
        i--;
    if (i > 0 && s[i - 1] == '.')
        return i - 1;
    return n;
}

/* s:.*\/:: */
static size_t base_start(const char *s, size_t n)
{
    size_t i = n;
    while (i > 0 && s[i - 1] != '/')
        i--;
    return i;
}

/* File::Basename's dirname on Unix: "a/b" -> "a", "b" -> ".", "a/b/" -> "a", "/" -> "/". */
static void dirname_of(const char *s, size_t n, strbuf *out)
{
    for (int round = 0; round < 2; round++) {
        size_t b = base_start(s, n);
        const char *dir = b ? s : "./";
        size_t dn = b ? b : 2;
        while (dn > 1 && dir[dn - 1] == '/')
            dn--;
        if (round == 1 || b < n) {
            sb_add(out, dir, dn);
            return;
        }
        s = dir; /* the base was empty ("a/b/"): once more on the directory part */
        n = dn;
    }
}

void apply_mod(int mod, const char *s, size_t n, const job_vals *v, strbuf *out)
{
    switch (mod) {
    case MOD_NONE: sb_add(out, s, n); break;
    case MOD_DOT: sb_add(out, s, strip_ext(s, n)); break;
    case MOD_BASE: {
        size_t b = base_start(s, n);
        sb_add(out, s + b, n - b);
        break;
    }
    case MOD_DIR: dirname_of(s, n, out); break;
    case MOD_BASEDOT: {
        size_t b = base_start(s, n);
        sb_add(out, s + b, strip_ext(s + b, n - b));
        break;
    }
    case MOD_SEQ: sb_printf(out, "%llu", (unsigned long long)v->seq); break;
    case MOD_SLOT: sb_printf(out, "%u", v->slot); break;
    }
}

/* Calls fn for each value a replacement segment stands for. */
static void for_values(const tseg *g, const job_vals *v, strbuf *tmp, void (*fn)(void *ctx, const char *s, size_t n),
                       void *ctx)
{
    if (g->mod == MOD_SEQ || g->mod == MOD_SLOT) {
        tmp->len = 0;
        apply_mod(g->mod, NULL, 0, v, tmp);
        fn(ctx, tmp->p, tmp->len);
        return;
    }
    if (g->src > 0) {
        /* A source that does not exist stands for nothing, not even an empty word (as in GNU
         * parallel). */
        if (g->src > v->n)
            return;
        tmp->len = 0;
        apply_mod(g->mod, v->v[g->src - 1], v->len[g->src - 1], v, tmp);
        sb_reserve(tmp, 0);
        fn(ctx, tmp->p, tmp->len);
        return;
    }
    for (int i = 0; i < v->n; i++) {
        tmp->len = 0;
        apply_mod(g->mod, v->v[i], v->len[i], v, tmp);
        sb_reserve(tmp, 0);
        fn(ctx, tmp->p, tmp->len);
    }
}

typedef struct quote_ctx {
    strbuf *out;
    int count;
} quote_ctx;

static void quote_one(void *c, const char *s, size_t n)
{
    quote_ctx *q = c;
    if (q->count++)
        sb_addc(q->out, ' ');
    shell_quote(q->out, s, n);
}

void tmpl_command(const tmpl *t, const job_vals *v, strbuf *out)
{
    out->len = 0;
    sb_reserve(out, 0);
    if (!t->segs) {
        for (int i = 0; i < v->n; i++) {
            if (i)
                sb_addc(out, ' ');
            sb_add(out, v->v[i], v->len[i]);
        }
        return;
    }
    strbuf tmp = {0};
    for (int i = 0; i < t->nsegs; i++) {
        const tseg *g = &t->segs[i];
        if (!g->rpl) {
            sb_add(out, g->text, g->len);
            continue;
        }
        quote_ctx q = {out, 0};
        for_values(g, v, &tmp, quote_one, &q);
    }
    if (!t->has_rpl) {
        tseg all = {.rpl = true, .src = 0, .mod = MOD_NONE};
        sb_addc(out, ' ');
        quote_ctx q = {out, 0};
        for_values(&all, v, &tmp, quote_one, &q);
    }
    sb_free(&tmp);
}

typedef struct argv_ctx {
    strbuf *store;
    size_t *offs;
    size_t noffs, cap;
    int count; /* values seen in this segment */
} argv_ctx;

static void new_arg(argv_ctx *a)
{
    sb_addc(a->store, 0);
    if (a->noffs == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 16;
        a->offs = xrealloc(a->offs, a->cap * sizeof *a->offs);
    }
    a->offs[a->noffs++] = a->store->len;
}

static void argv_one(void *c, const char *s, size_t n)
{
    argv_ctx *a = c;
    if (a->count++)
        new_arg(a); /* a value of several sources: one argument each, as the shell splits them */
    sb_add(a->store, s, n);
}

int tmpl_argv(const tmpl *t, const job_vals *v, strbuf *store, char ***argv, size_t *argv_cap)
{
    store->len = 0;
    argv_ctx a = {.store = store};
    strbuf tmp = {0};
    a.offs = xmalloc(16 * sizeof *a.offs);
    a.cap = 16;
    a.offs[a.noffs++] = 0;
    for (int w = 0; w < t->nwords; w++) {
        /* A word made only of replacement strings of sources that do not exist is no word. */
        bool real = false;
        for (int i = 0; i < t->words[w].nsegs && !real; i++) {
            const tseg *g = &t->words[w].segs[i];
            real = !g->rpl || g->src <= v->n || g->mod == MOD_SEQ || g->mod == MOD_SLOT;
        }
        if (!real)
            continue;
        if (w) /* word 0, the program, is always there */
            new_arg(&a);
        for (int i = 0; i < t->words[w].nsegs; i++) {
            const tseg *g = &t->words[w].segs[i];
            if (!g->rpl) {
                sb_add(store, g->text, g->len);
                continue;
            }
            a.count = 0;
            for_values(g, v, &tmp, argv_one, &a);
        }
    }
    if (!t->has_rpl) {
        for (int i = 0; i < v->n; i++) {
            new_arg(&a);
            sb_add(store, v->v[i], v->len[i]);
        }
    }
    sb_addc(store, 0);
    size_t argc = a.noffs;
    if (*argv_cap < argc + 1) {
        *argv_cap = argc + 16;
        *argv = xrealloc(*argv, *argv_cap * sizeof **argv);
    }
    for (size_t i = 0; i < argc; i++)
        (*argv)[i] = store->p + a.offs[i];
    (*argv)[argc] = NULL;
    free(a.offs);
    sb_free(&tmp);
    return (int)argc;
}
