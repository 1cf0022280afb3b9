/*
 * Structured logging: one JSON object per line on stderr.
 *
 * Each line carries "ts", "level" and "event", then the caller's fields.
 * Callers pass fields built with json_pack(); the reference is stolen.
 * Nothing secret goes in: no token, no client secret, no password, no
 * full webhook payload.
 */

#ifndef SBW_LOG_H
#define SBW_LOG_H

#include <jansson.h>


#define SBW_LOG_DEBUG  0
#define SBW_LOG_INFO   1
#define SBW_LOG_WARN   2
#define SBW_LOG_ERROR  3


int sbw_log_level_parse(const char *s);
void sbw_log_set_level(int level);
int sbw_log_enabled(int level);
void sbw_log(int level, const char *event, json_t *fields);


#endif /* SBW_LOG_H */
