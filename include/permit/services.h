/*
 * permit/services.h - the standard gRPC services every listener offers:
 * grpc.health.v1.Health and server reflection (v1 and v1alpha).
 */
#ifndef PERMIT_SERVICES_H
#define PERMIT_SERVICES_H

#include <stddef.h>
#include <stdint.h>

#include "permit/error.h"
#include "permit/server.h"

/* ---- grpc.health.v1.Health ---- */

typedef enum permit_serving {
  PERMIT_SERVING_UNKNOWN = 0,
  PERMIT_SERVING = 1,
  PERMIT_NOT_SERVING = 2,
  PERMIT_SERVICE_UNKNOWN = 3
} permit_serving;

typedef struct permit_health permit_health;

/* Health for the services of |srv| ("" is the node as a whole). */
permit_health *permit_health_new(permit_server *srv);
void permit_health_free(permit_health *h);

/*
 * Sets |service|'s status and pushes the change to every Watch stream.
 * Thread safe.  At most 64 services.
 */
int permit_health_set(permit_health *h, const char *service,
                      permit_serving status);

/* Check and Watch, to add to a listener's method table. */
void permit_health_methods(permit_health *h, permit_method out[2]);

/* ---- grpc.reflection.v1 / v1alpha ---- */

typedef struct permit_reflection permit_reflection;

/*
 * Serves the files of the FileDescriptorSet |fdset| (as written by
 * protoc --descriptor_set_out --include_imports; the caller keeps it
 * alive) and lists |services| (fully qualified names).
 */
permit_reflection *permit_reflection_new(const uint8_t *fdset, size_t len,
                                         const char *const *services,
                                         size_t nservices, permit_err *err);
void permit_reflection_free(permit_reflection *r);

/* ServerReflectionInfo in v1 and v1alpha. */
void permit_reflection_methods(permit_reflection *r, permit_method out[2]);

/* The descriptor set built into the binaries (generated at build time). */
extern const uint8_t permit_descriptor_set[];
extern const size_t permit_descriptor_set_len;

#endif
