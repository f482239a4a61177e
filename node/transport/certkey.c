#include <openssl/pem.h>
#include <openssl/x509.h>

#include "permit/tls.h"

/* Refuses to ask for a passphrase: an encrypted PEM is simply not read. */
static int no_passphrase(char *buf, int size, int rw, void *u) {
  (void)buf, (void)size, (void)rw, (void)u;
  return -1;
}

int permit_tls_cert_key(const char *pem, size_t len, uint8_t pub[32],
                        permit_err *err) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  X509 *cert = bio != NULL ? PEM_read_bio_X509(bio, NULL, no_passphrase, NULL) : NULL;
  BIO_free(bio);
  if (cert == NULL)
    return permit_err_set(err, PERMIT_EINVAL, "not a PEM certificate");
  EVP_PKEY *key = X509_get0_pubkey(cert);
  size_t n = 32;
  int rc = 0;
  if (key == NULL || EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519 ||
      EVP_PKEY_get_raw_public_key(key, pub, &n) != 1 || n != 32)
    rc = permit_err_set(err, PERMIT_EINVAL,
                        "the certificate's key is not Ed25519");
  X509_free(cert);
  return rc;
}
