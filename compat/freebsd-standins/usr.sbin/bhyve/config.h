/*
 * Stand-in for usr.sbin/bhyve/config.h of FreeBSD 15.0 (read from
 * freebsd-src commit 027db5e6; the interface is unchanged since 13.0).
 * Project-written for compile checks only: declarations of what the
 * migration files call.
 */

#ifndef __CONFIG_H__
#define	__CONFIG_H__

#include <stdbool.h>

const char *get_config_value(const char *path);
void	set_config_value(const char *path, const char *value);
bool	get_config_bool_default(const char *path, bool def);

#endif /* !__CONFIG_H__ */
