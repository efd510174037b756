/*
 * wmain.c: main for programs whose entry point is wmain (MinGW's
 * -municode does the same on Windows). It sets the locale from the
 * environment, converts the arguments from its multibyte encoding to
 * wide strings, and returns wmain's result. Built into its own archive,
 * libportres-wmain.a, so a program with a main of its own never links it.
 */
#include "_portres_base.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

int main(int argc, char **argv)
{
	setlocale(LC_ALL, "");
	WCHAR **wargv = calloc((size_t)argc + 1, sizeof *wargv);
	if (!wargv) {
		fputs("out of memory\n", stderr);
		return 1;
	}
	for (int i = 0; i < argc; i++) {
		size_t n = strlen(argv[i]) + 1;
		wargv[i] = calloc(n, sizeof(WCHAR));
		if (!wargv[i]) {
			fputs("out of memory\n", stderr);
			return 1;
		}
		mbstate_t st;
		memset(&st, 0, sizeof st);
		const char *src = argv[i];
		if (mbsrtowcs(wargv[i], &src, n, &st) == (size_t)-1) {
			/* not valid in the locale: one wide character per byte */
			for (size_t j = 0; j < n; j++)
				wargv[i][j] = (WCHAR)(unsigned char)argv[i][j];
		}
	}
	int rc = wmain(argc, wargv);
	for (int i = 0; i < argc; i++)
		free(wargv[i]);
	free(wargv);
	fflush(stdout);
	return rc;
}
