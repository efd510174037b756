/*
 * crt.c: the Microsoft C runtime pieces the documented samples use:
 * wprintf with Microsoft's directives and _wtoi.
 *
 * Microsoft's wide printf differs from ISO C's: %s and %c take wide
 * arguments (%hs, %hc and %S, %C narrow ones), %ws/%wc are explicitly
 * wide, and %I64d, %I64u, %I64x, %I32d, %Id size integers. portres_wprintf
 * (wprintf once the headers are included) reads such a format, prints
 * each directive with the C library's printf, and writes the result to
 * stdout in the locale's multibyte encoding (UTF-8), without setting the
 * stream's orientation, so printf and wprintf may be mixed as on Windows.
 */
#include "_portres_base.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include <wctype.h>

#undef wprintf

/* out is a growing byte buffer. */
struct out {
	char *b;
	size_t len, cap;
	int bad;
};

static void add(struct out *o, const char *s, size_t n)
{
	if (o->bad)
		return;
	if (o->len + n + 1 > o->cap) {
		size_t c = o->cap ? o->cap : 256;
		while (c < o->len + n + 1)
			c *= 2;
		char *b = realloc(o->b, c);
		if (!b) {
			o->bad = 1;
			return;
		}
		o->b = b;
		o->cap = c;
	}
	memcpy(o->b + o->len, s, n);
	o->len += n;
}

static void add_wide(struct out *o, const wchar_t *s, long prec)
{
	mbstate_t st;
	memset(&st, 0, sizeof st);
	char mb[MB_LEN_MAX];
	for (long i = 0; s[i] && (prec < 0 || i < prec); i++) {
		size_t n = wcrtomb(mb, s[i], &st);
		if (n == (size_t)-1) { /* not representable: as Windows' CRT, a '?' */
			memset(&st, 0, sizeof st);
			add(o, "?", 1);
			continue;
		}
		add(o, mb, n);
	}
}

/* addf appends one directive formatted by vsnprintf. */
static void addf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(struct out *o, const char *fmt, ...)
{
	char small[128];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof small) {
		add(o, small, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (!big) {
		o->bad = 1;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	add(o, big, (size_t)n);
	free(big);
}

int portres_wprintf(const wchar_t *f, ...)
{
	struct out o = {0};
	va_list ap;
	va_start(ap, f);
	while (*f) {
		if (*f != L'%') {
			const wchar_t *run = f;
			while (*f && *f != L'%')
				f++;
			add_wide(&o, run, f - run);
			continue;
		}
		if (f[1] == L'%') {
			add(&o, "%", 1);
			f += 2;
			continue;
		}
		/* %[flags][width][.precision][size]type */
		char spec[64] = "%";
		size_t k = 1;
		f++;
		while (*f && wcschr(L"-+ #0", *f) && k < 40)
			spec[k++] = (char)*f++;
		int width = -1, prec = -1;
		if (*f == L'*') {
			width = va_arg(ap, int);
			f++;
		} else {
			while (iswdigit(*f) && k < 40)
				spec[k++] = (char)*f++;
		}
		if (width >= 0)
			k += (size_t)snprintf(spec + k, sizeof spec - k, "%d", width);
		if (*f == L'.') {
			spec[k++] = '.';
			f++;
			if (*f == L'*') {
				prec = va_arg(ap, int);
				f++;
				k += (size_t)snprintf(spec + k, sizeof spec - k, "%d", prec < 0 ? 0 : prec);
			} else {
				prec = 0;
				while (iswdigit(*f) && k < 50) {
					prec = prec * 10 + (*f - L'0');
					spec[k++] = (char)*f++;
				}
			}
		}
		enum { DEF, SHORT, L, LL, WIDE, NARROW, SIZE } size = DEF;
		if (f[0] == L'I' && f[1] == L'6' && f[2] == L'4') {
			size = LL;
			f += 3;
		} else if (f[0] == L'I' && f[1] == L'3' && f[2] == L'2') {
			size = DEF;
			f += 3;
		} else if (f[0] == L'I') {
			size = SIZE;
			f++;
		} else if (f[0] == L'l' && f[1] == L'l') {
			size = LL;
			f += 2;
		} else if (f[0] == L'h' && f[1] == L'h') {
			size = SHORT;
			f += 2;
		} else if (*f == L'h') {
			size = NARROW; /* also short for integers */
			f++;
		} else if (*f == L'l') {
			size = L; /* Windows' long is 32 bits: printed as int; also wide for s/c */
			f++;
		} else if (*f == L'w') {
			size = WIDE;
			f++;
		} else if (*f == L'z' || *f == L'j' || *f == L't') {
			size = SIZE;
			f++;
		}
		wchar_t t = *f;
		if (!t)
			break;
		f++;
		switch (t) {
		case L'd': case L'i': case L'u': case L'x': case L'X': case L'o': {
			const char *len = size == LL ? "ll" : size == SIZE ? "z" : size == SHORT ? "hh" : size == NARROW ? "h" : "";
			char conv[2] = {(char)t, 0};
			snprintf(spec + k, sizeof spec - k, "%s%s", len, conv);
			if (size == LL)
				addf(&o, spec, va_arg(ap, long long));
			else if (size == SIZE)
				addf(&o, spec, va_arg(ap, size_t));
			else
				addf(&o, spec, va_arg(ap, int));
			break;
		}
		case L'e': case L'E': case L'f': case L'F': case L'g': case L'G': case L'a': case L'A': {
			char conv[2] = {(char)t, 0};
			snprintf(spec + k, sizeof spec - k, "%s", conv);
			addf(&o, spec, va_arg(ap, double));
			break;
		}
		case L'p':
			snprintf(spec + k, sizeof spec - k, "p");
			addf(&o, spec, va_arg(ap, void *));
			break;
		case L's': case L'S': {
			/* In a wide format: %s, %ls, %ws wide; %S, %hs narrow. */
			int narrow = (t == L'S' && size != L && size != WIDE) || size == NARROW;
			if (narrow) {
				const char *s = va_arg(ap, const char *);
				snprintf(spec + k, sizeof spec - k, "s");
				addf(&o, spec, s ? s : "(null)");
			} else {
				const wchar_t *s = va_arg(ap, const wchar_t *);
				struct out tmp = {0};
				add_wide(&tmp, s ? s : L"(null)", prec);
				add(&tmp, "", 0);
				if (tmp.b) {
					tmp.b[tmp.len] = 0;
					/* width and flags apply to the converted text */
					char sspec[64];
					size_t j = 0;
					for (size_t i = 0; i < k && spec[i] != '.'; i++)
						sspec[j++] = spec[i];
					sspec[j++] = 's';
					sspec[j] = 0;
					addf(&o, sspec, tmp.b);
				}
				free(tmp.b);
			}
			break;
		}
		case L'c': case L'C': {
			int narrow = (t == L'C' && size != L && size != WIDE) || size == NARROW;
			wchar_t wc[2] = {0, 0};
			if (narrow)
				wc[0] = (wchar_t)(unsigned char)va_arg(ap, int);
			else
				wc[0] = (wchar_t)va_arg(ap, wint_t);
			add_wide(&o, wc, -1);
			break;
		}
		default: /* not a directive: printed as written, as the CRT does */
			add(&o, "%", 1);
			add_wide(&o, &t, 1);
		}
	}
	va_end(ap);
	int n = -1;
	if (!o.bad) {
		n = (int)o.len;
		if (o.len && fwrite(o.b, 1, o.len, stdout) != o.len)
			n = -1;
	}
	free(o.b);
	if (n < 0)
		errno = errno ? errno : EIO;
	return n;
}

int _wtoi(const wchar_t *s)
{
	if (!s)
		return 0;
	while (iswspace(*s))
		s++;
	int neg = 0;
	if (*s == L'+' || *s == L'-')
		neg = *s++ == L'-';
	long long v = 0;
	while (*s >= L'0' && *s <= L'9') {
		v = v * 10 + (*s++ - L'0');
		if (v > (long long)INT_MAX + 1)
			v = (long long)INT_MAX + 1; /* keeps going: Microsoft's _wtoi saturates */
	}
	if (neg)
		v = -v;
	if (v > INT_MAX)
		return INT_MAX;
	if (v < INT_MIN)
		return INT_MIN;
	return (int)v;
}
