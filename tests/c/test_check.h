/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Copyright (c) 2026 The bhyve live migration project
 */

/*
 * The C test drivers' reporting: one PASS/FAIL line per case and a
 * closing "N passed, M failed" that the pytest wrappers read.
 */

#ifndef _TEST_CHECK_H_
#define	_TEST_CHECK_H_

/* Record one case; detail (may be NULL) says what went wrong. */
void	check(int ok, const char *name, const char *detail);
/* Print the closing line; returns the exit status (0 if all passed). */
int	check_summary(void);

#endif /* _TEST_CHECK_H_ */
