/*
 * reflection.c - gRPC server reflection, v1 and v1alpha (the two are the
 * same messages under two package names, so one decoder serves both).
 * Files come from the FileDescriptorSet built into the binaries; a file is
 * answered together with everything it imports, as clients expect.
 */
#include <stdlib.h>
#include <string.h>

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "permit/services.h"
#include "permit/v1/descriptor_min.pb-c.h"

#define MAX_FILES 64
#define MAX_NAME 512

typedef struct refl_file {
  ProtobufCBinaryData bytes; /* serialized FileDescriptorProto */
  Permit__Internal__FileInfo *info;
} refl_file;

struct permit_reflection {
  Permit__Internal__FileSet *set;
  refl_file files[MAX_FILES];
  size_t nfiles;
  char **services;
  size_t nservices;
};

void permit_reflection_free(permit_reflection *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->nfiles; i++)
    permit__internal__file_info__free_unpacked(r->files[i].info, NULL);
  if (r->set != NULL) permit__internal__file_set__free_unpacked(r->set, NULL);
  for (size_t i = 0; i < r->nservices; i++) free(r->services[i]);
  free(r->services);
  free(r);
}

permit_reflection *permit_reflection_new(const uint8_t *fdset, size_t len,
                                         const char *const *services,
                                         size_t nservices, permit_err *err) {
  permit_reflection *r = calloc(1, sizeof *r);
  if (r == NULL) {
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  r->set = permit__internal__file_set__unpack(NULL, len, fdset);
  if (r->set == NULL || r->set->n_file > MAX_FILES) {
    permit_err_set(err, PERMIT_EINVAL, "bad descriptor set");
    permit_reflection_free(r);
    return NULL;
  }
  for (size_t i = 0; i < r->set->n_file; i++) {
    refl_file *f = &r->files[r->nfiles];
    f->bytes = r->set->file[i];
    f->info = permit__internal__file_info__unpack(NULL, f->bytes.len,
                                                  f->bytes.data);
    if (f->info == NULL) {
      permit_err_set(err, PERMIT_EINVAL, "bad file in descriptor set");
      permit_reflection_free(r);
      return NULL;
    }
    r->nfiles++;
  }
  r->services = calloc(nservices ? nservices : 1, sizeof *r->services);
  for (size_t i = 0; r->services != NULL && i < nservices; i++)
    r->services[r->nservices++] = strdup(services[i]);
  return r;
}

static refl_file *file_by_name(permit_reflection *r, const char *name) {
  for (size_t i = 0; i < r->nfiles; i++)
    if (strcmp(r->files[i].info->name, name) == 0) return &r->files[i];
  return NULL;
}

/* True when |sym| is |pkg|.|name| or, with |methods|, pkg.name.method. */
static int symbol_in(const char *sym, const char *pkg, const char *name) {
  size_t pl = strlen(pkg), nl = strlen(name);
  if (pl > 0) {
    if (strncmp(sym, pkg, pl) != 0 || sym[pl] != '.') return 0;
    sym += pl + 1;
  }
  return strncmp(sym, name, nl) == 0 && (sym[nl] == '\0' || sym[nl] == '.');
}

static refl_file *file_by_symbol(permit_reflection *r, const char *sym) {
  for (size_t i = 0; i < r->nfiles; i++) {
    Permit__Internal__FileInfo *fi = r->files[i].info;
    for (size_t j = 0; j < fi->n_service; j++)
      if (symbol_in(sym, fi->package, fi->service[j]->name))
        return &r->files[i];
    for (size_t j = 0; j < fi->n_message_type; j++)
      if (symbol_in(sym, fi->package, fi->message_type[j]->name))
        return &r->files[i];
    for (size_t j = 0; j < fi->n_enum_type; j++)
      if (symbol_in(sym, fi->package, fi->enum_type[j]->name))
        return &r->files[i];
  }
  return NULL;
}

/* Adds |f| and, depth first, what it imports, each once. */
static void add_with_deps(permit_reflection *r, refl_file *f,
                          ProtobufCBinaryData *out, size_t *n) {
  for (size_t i = 0; i < *n; i++)
    if (out[i].data == f->bytes.data) return;
  if (*n == MAX_FILES) return;
  out[(*n)++] = f->bytes;
  for (size_t i = 0; i < f->info->n_dependency; i++) {
    refl_file *d = file_by_name(r, f->info->dependency[i]);
    if (d != NULL) add_with_deps(r, d, out, n);
  }
}

static void reflect_message(permit_call *c, const uint8_t *msg, size_t len) {
  permit_reflection *r = permit_call_method_arg(c);
  /* A client that sends requests without reading the answers would make
   * the queue grow without end: stop it instead. */
  if (permit_call_full(c)) {
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED,
                       "client is not reading reflection responses");
    return;
  }
  Grpc__Reflection__V1__ServerReflectionRequest *req =
      grpc__reflection__v1__server_reflection_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a ServerReflectionRequest");
    return;
  }
  Grpc__Reflection__V1__ServerReflectionResponse resp =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
  Grpc__Reflection__V1__FileDescriptorResponse fdr =
      GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
  Grpc__Reflection__V1__ListServiceResponse lsr =
      GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
  Grpc__Reflection__V1__ErrorResponse er =
      GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
  Grpc__Reflection__V1__ServiceResponse svc[16];
  Grpc__Reflection__V1__ServiceResponse *svcp[16];
  ProtobufCBinaryData files[MAX_FILES];
  size_t nfiles = 0;
  resp.valid_host = req->host;
  resp.original_request = req;

  refl_file *f = NULL;
  switch (req->message_request_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
    for (size_t i = 0; i < r->nservices && i < 16; i++) {
      grpc__reflection__v1__service_response__init(&svc[i]);
      svc[i].name = r->services[i];
      svcp[i] = &svc[i];
      lsr.n_service++;
    }
    lsr.service = svcp;
    resp.message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    resp.list_services_response = &lsr;
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
    f = file_by_name(r, req->file_by_filename);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
    f = file_by_symbol(r, req->file_containing_symbol);
    break;
  default:
    break;
  }
  if (resp.message_response_case ==
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE__NOT_SET) {
    if (f != NULL) {
      add_with_deps(r, f, files, &nfiles);
      fdr.n_file_descriptor_proto = nfiles;
      fdr.file_descriptor_proto = files;
      resp.message_response_case =
          GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
      resp.file_descriptor_response = &fdr;
    } else {
      int found_kind =
          req->message_request_case ==
              GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME ||
          req->message_request_case ==
              GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
      er.error_code = found_kind ? PERMIT_GRPC_NOT_FOUND
                                 : PERMIT_GRPC_UNIMPLEMENTED;
      er.error_message = found_kind ? "not found"
                                    : "this request is not supported";
      resp.message_response_case =
          GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
      resp.error_response = &er;
    }
  }
  size_t n = grpc__reflection__v1__server_reflection_response__get_packed_size(
      &resp);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) {
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    grpc__reflection__v1__server_reflection_response__pack(&resp, buf);
    permit_call_send(c, buf, n);
    free(buf);
  }
  grpc__reflection__v1__server_reflection_request__free_unpacked(req, NULL);
}

void permit_reflection_methods(permit_reflection *r, permit_method out[2]) {
  out[0] = (permit_method){
      .path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      .kind = PERMIT_RPC_BIDI,
      .on_message = reflect_message,
      .arg = r};
  out[1] = out[0];
  out[1].path =
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
}
