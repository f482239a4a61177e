/*
 * fuzz_config - the node's INI configuration file (permitd --config,
 * permitctl --data): permit_config_parse() over a memory stream, which is
 * permit_config_load() without the fopen.
 *
 * Input: the file's bytes.
 *
 * A file that loads must leave a configuration the node can start with
 * (valid name and roles, HOST:PORT addresses, bounded strings) and load
 * the same way twice; one that does not must say which line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"
#include "permit/node.h"

#define PATH "/fuzz/etc/permit.conf"

static int parse(const uint8_t *data, size_t size, permit_config *c,
                 char *err, size_t errcap) {
  permit_config_defaults(c);
  /* fmemopen wants a writable buffer even to read. */
  char *copy = malloc(size ? size : 1);
  if (copy == NULL) abort();
  if (size > 0) memcpy(copy, data, size);
  FILE *f = fmemopen(copy, size, "r");
  if (f == NULL) abort();
  int rc = permit_config_parse(f, PATH, c, err, errcap);
  fclose(f);
  free(copy);
  return rc;
}

static int terminated(const char *s, size_t cap) {
  return memchr(s, '\0', cap) != NULL;
}

static int hostport(const char *s) {
  const char *colon = strrchr(s, ':');
  return colon != NULL && colon != s && colon[1] != '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static permit_config c, again;
  char err[512], err2[512];
  int rc = parse(data, size, &c, err, sizeof err);
  int rc2 = parse(data, size, &again, err2, sizeof err2);
  FUZZ_CHECK(rc == rc2);
  if (rc != 0) {
    FUZZ_CHECK(rc == -1);
    FUZZ_CHECK(terminated(err, sizeof err));
    FUZZ_CHECK(strncmp(err, PATH " line ", sizeof PATH + 5) == 0);
    FUZZ_CHECK(strcmp(err, err2) == 0);
    return 0;
  }
  FUZZ_CHECK(memcmp(&c, &again, sizeof c) == 0);
  FUZZ_CHECK(terminated(c.name, sizeof c.name) &&
             terminated(c.data, sizeof c.data) &&
             terminated(c.peer_listen, sizeof c.peer_listen) &&
             terminated(c.peer_endpoint, sizeof c.peer_endpoint) &&
             terminated(c.api_listen, sizeof c.api_listen) &&
             terminated(c.api_token, sizeof c.api_token) &&
             terminated(c.consent_base, sizeof c.consent_base) &&
             terminated(c.public_listen, sizeof c.public_listen) &&
             terminated(c.public_cert, sizeof c.public_cert) &&
             terminated(c.public_key, sizeof c.public_key));
  FUZZ_CHECK(permit_name_validate(c.name, NULL) == 0);
  FUZZ_CHECK(c.roles >= 1 && c.roles <= 3);
  FUZZ_CHECK(c.data[0] != '\0');
  FUZZ_CHECK(hostport(c.peer_listen) && hostport(c.peer_endpoint) &&
             hostport(c.api_listen));
  FUZZ_CHECK(c.public_listen[0] == '\0' || hostport(c.public_listen));
  size_t tl = strlen(c.api_token);
  FUZZ_CHECK(tl == 0 || (tl >= 16 && tl <= 255));
  FUZZ_CHECK(c.consent_base[0] == '\0' ||
             strncmp(c.consent_base, "https://", 8) == 0);
  FUZZ_CHECK(c.erased_handover_hours >= 0 && c.erased_handover_hours <= 720);
  FUZZ_CHECK(c.lim.max_message >= 1024 && c.lim.max_message <= (64u << 20));
  FUZZ_CHECK(c.lim.max_concurrent_streams >= 1 &&
             c.lim.max_concurrent_streams <= 10000);
  FUZZ_CHECK(c.lim.max_connections >= 1 && c.lim.max_connections <= 1000000);
  return 0;
}
