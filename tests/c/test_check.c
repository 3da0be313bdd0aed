/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

#include <stdio.h>

#include "test_check.h"

static int passed, failed;

void
check(int ok, const char *name, const char *detail)
{
	printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name,
	    detail != NULL && detail[0] != '\0' ? ": " : "",
	    detail != NULL ? detail : "");
	if (ok)
		passed++;
	else
		failed++;
}

int
check_summary(void)
{
	printf("%d passed, %d failed\n", passed, failed);
	return (failed != 0);
}
