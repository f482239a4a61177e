/*
 * test_crypto.c - the primitives of crypto.c against their RFCs' published
 * vectors (RFC 8032, 5869, 4231), and the behaviour Permit adds on top:
 * AEAD length rules, signature contexts, key files and pseudonyms.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "permit/crypto.h"
#include "permit/util.h"
#include "testlib.h"

static int all_zero(const uint8_t *p, size_t len) {
  uint8_t acc = 0;
  for (size_t i = 0; i < len; i++) acc |= p[i];
  return acc == 0;
}

/* ---- RFC 8032 7.1 ---- */

typedef struct ed_vector {
  const char *name;
  const char *seed, *pub, *msg, *sig;
} ed_vector;

static const ed_vector ed_vectors[] = {
    {"TEST 1",
     "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
    {"TEST 2",
     "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
    {"TEST 3",
     "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
     "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
     "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"},
    {"TEST SHA(abc)",
     "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
     "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
     "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"},
};

static void test_ed25519_rfc8032(void) {
  for (size_t v = 0; v < sizeof ed_vectors / sizeof ed_vectors[0]; v++) {
    const ed_vector *t = &ed_vectors[v];
    uint8_t seed[32], pub[32], msg[64], sig[64], got[64];
    test_unhex(t->seed, seed, sizeof seed);
    test_unhex(t->pub, pub, sizeof pub);
    size_t msglen = test_unhex(t->msg, msg, sizeof msg);
    test_unhex(t->sig, sig, sizeof sig);

    permit_sign_key *key = NULL;
    CHECKF(permit_sign_key_from_seed(seed, &key) == 0, "%s", t->name);
    if (key == NULL) continue;
    CHECKF(memcmp(permit_sign_key_public(key), pub, 32) == 0,
           "%s public key", t->name);
    CHECKF(permit_sign(key, NULL, msg, msglen, got) == 0, "%s", t->name);
    CHECKF(memcmp(got, sig, 64) == 0, "%s signature", t->name);
    CHECKF(permit_verify(pub, NULL, msg, msglen, sig, 64) == 0, "%s",
           t->name);

    /* The key id is the hex of the first 8 bytes of SHA-256(pub). */
    uint8_t h[32];
    char want_id[PERMIT_KEY_ID_LEN];
    permit_iov part = {pub, 32};
    CHECK(permit_sha256(&part, 1, h) == 0);
    permit_hex_encode(h, 8, want_id);
    CHECKF(strcmp(permit_sign_key_id(key), want_id) == 0, "%s key id",
           t->name);

    /* One flipped bit anywhere must fail. */
    for (size_t bit = 0; bit < 512; bit += 37) {
      sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
      CHECKF(permit_verify(pub, NULL, msg, msglen, sig, 64) == PERMIT_EVERIFY,
             "%s sig bit %zu", t->name, bit);
      sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    if (msglen > 0) {
      msg[msglen - 1] ^= 0x01;
      CHECKF(permit_verify(pub, NULL, msg, msglen, sig, 64) == PERMIT_EVERIFY,
             "%s msg bit", t->name);
      msg[msglen - 1] ^= 0x01;
    } else {
      uint8_t extra = 0;
      CHECKF(permit_verify(pub, NULL, &extra, 1, sig, 64) == PERMIT_EVERIFY,
             "%s longer msg", t->name);
    }
    pub[3] ^= 0x10;
    CHECKF(permit_verify(pub, NULL, msg, msglen, sig, 64) == PERMIT_EVERIFY,
           "%s pub bit", t->name);
    pub[3] ^= 0x10;
    CHECKF(permit_verify(pub, NULL, msg, msglen, sig, 63) == PERMIT_EVERIFY,
           "%s short sig", t->name);
    permit_sign_key_free(key);
  }
  /* Malformed input is refused, not crashed on. */
  uint8_t zero[64] = {0}, ones[32];
  memset(ones, 0xff, sizeof ones);
  CHECK(permit_verify(NULL, NULL, zero, 1, zero, 64) == PERMIT_EVERIFY);
  CHECK(permit_verify(zero, NULL, zero, 1, NULL, 64) == PERMIT_EVERIFY);
  CHECK(permit_verify(zero, NULL, NULL, 5, zero, 64) == PERMIT_EVERIFY);
  CHECK(permit_verify(zero, NULL, zero, 1, zero, 64) == PERMIT_EVERIFY);
  CHECK(permit_verify(ones, NULL, zero, 1, zero, 64) == PERMIT_EVERIFY);
  CHECK(permit_verify(ones, "ctx", zero, 1, zero, 0) == PERMIT_EVERIFY);
}

static void test_sign_context(void) {
  static const char ctx[] = "permit/v1/record\n";
  const uint8_t body[] = "a record body";
  size_t blen = sizeof body - 1;
  permit_sign_key *key = NULL;
  CHECK(permit_sign_key_generate(&key) == 0);
  if (key == NULL) return;
  const uint8_t *pub = permit_sign_key_public(key);
  CHECK(strlen(permit_sign_key_id(key)) == PERMIT_KEY_ID_LEN - 1);
  uint8_t sig[64], plain[64];
  CHECK(permit_sign(key, ctx, body, blen, sig) == 0);
  CHECK(permit_verify(pub, ctx, body, blen, sig, 64) == 0);
  /* The context is part of what is signed. */
  CHECK(permit_verify(pub, NULL, body, blen, sig, 64) == PERMIT_EVERIFY);
  CHECK(permit_verify(pub, "permit/v1/checkpoint\n", body, blen, sig, 64) ==
        PERMIT_EVERIFY);
  /* ... and it is exactly a prefix of the message. */
  uint8_t joined[64];
  memcpy(joined, ctx, sizeof ctx - 1);
  memcpy(joined + sizeof ctx - 1, body, blen);
  CHECK(permit_verify(pub, NULL, joined, sizeof ctx - 1 + blen, sig, 64) ==
        0);
  CHECK(permit_sign(key, NULL, joined, sizeof ctx - 1 + blen, plain) == 0);
  CHECK(memcmp(plain, sig, 64) == 0);
  /* Empty message, with and without context. */
  CHECK(permit_sign(key, ctx, NULL, 0, sig) == 0);
  CHECK(permit_verify(pub, ctx, NULL, 0, sig, 64) == 0);
  CHECK(permit_verify(pub, "", NULL, 0, sig, 64) == PERMIT_EVERIFY);
  CHECK(permit_sign(key, NULL, NULL, 0, sig) == 0);
  CHECK(permit_verify(pub, "", NULL, 0, sig, 64) == 0);
  CHECK(permit_sign(key, NULL, NULL, 3, sig) == PERMIT_EINVAL);
  permit_sign_key_free(key);
}

/* ---- RFC 5869 appendix A.1 to A.3, and RFC 4231 4.3 ---- */

typedef struct hkdf_vector {
  const char *ikm, *salt, *info, *prk, *okm;
} hkdf_vector;

static const hkdf_vector hkdf_vectors[] = {
    {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
     "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9",
     "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
     "34007208d5b887185865"},
    {"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
     "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
     "404142434445464748494a4b4c4d4e4f",
     "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
     "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
     "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
     "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
     "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef"
     "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
     "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
     "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
     "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
     "cc30c58179ec3e87c14c01d5c1f3434f1d87"},
    {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "", "",
     "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
     "9d201395faa4b61a96c8"},
};

static void test_hkdf_rfc5869(void) {
  for (size_t v = 0; v < sizeof hkdf_vectors / sizeof hkdf_vectors[0]; v++) {
    const hkdf_vector *t = &hkdf_vectors[v];
    uint8_t ikm[80], salt[80], info[80], prk[32], okm[82], got[82], gotprk[32];
    size_t ikmlen = test_unhex(t->ikm, ikm, sizeof ikm);
    size_t saltlen = test_unhex(t->salt, salt, sizeof salt);
    size_t infolen = test_unhex(t->info, info, sizeof info);
    test_unhex(t->prk, prk, sizeof prk);
    size_t okmlen = test_unhex(t->okm, okm, sizeof okm);
    CHECKF(permit_hkdf_extract(saltlen ? salt : NULL, saltlen, ikm, ikmlen,
                               gotprk) == 0,
           "case %zu", v + 1);
    CHECKF(memcmp(gotprk, prk, 32) == 0, "case %zu PRK", v + 1);
    CHECKF(permit_hkdf_expand(prk, 32, infolen ? info : NULL, infolen, got,
                              okmlen) == 0,
           "case %zu", v + 1);
    CHECKF(memcmp(got, okm, okmlen) == 0, "case %zu OKM (expand)", v + 1);
    memset(got, 0, sizeof got);
    CHECKF(permit_hkdf(saltlen ? salt : NULL, saltlen, ikm, ikmlen,
                       infolen ? info : NULL, infolen, got, okmlen) == 0,
           "case %zu", v + 1);
    CHECKF(memcmp(got, okm, okmlen) == 0, "case %zu OKM (hkdf)", v + 1);
  }

  /* The limits the header promises. */
  uint8_t prk[32] = {1}, *big = malloc(PERMIT_HKDF_MAX_OUT + 1);
  CHECK(big != NULL);
  if (big == NULL) return;
  CHECK(permit_hkdf_expand(prk, 32, NULL, 0, big, 0) == PERMIT_EINVAL);
  CHECK(permit_hkdf_expand(prk, 31, NULL, 0, big, 32) == PERMIT_EINVAL);
  CHECK(permit_hkdf_expand(prk, 32, NULL, 0, big, PERMIT_HKDF_MAX_OUT + 1) ==
        PERMIT_EINVAL);
  CHECK(permit_hkdf_expand(prk, 32, NULL, 0, big, PERMIT_HKDF_MAX_OUT) == 0);
  CHECK(permit_hkdf(NULL, 0, prk, 32, NULL, 0, big, 0) == PERMIT_EINVAL);
  CHECK(permit_hkdf(NULL, 0, prk, 32, NULL, 0, big,
                    PERMIT_HKDF_MAX_OUT + 1) == PERMIT_EINVAL);
  /* Empty ikm is legal input to Extract. */
  CHECK(permit_hkdf_extract(NULL, 0, NULL, 0, prk) == 0);
  free(big);
}

static void test_hmac_rfc4231(void) {
  static const char data[] = "what do ya want for nothing?";
  uint8_t want[32], got[32];
  test_unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        want, sizeof want);
  CHECK(permit_hmac_sha256((const uint8_t *)"Jefe", 4, (const uint8_t *)data,
                           sizeof data - 1, got) == 0);
  CHECK(memcmp(got, want, 32) == 0);
}

/* ---- AEAD ---- */

static void test_aead_one(permit_aead_id aead) {
  size_t klen = permit_aead_key_len(aead);
  uint8_t key[32], nonce[12], aad[] = "header";
  uint8_t pt[100], ct[116], back[100];
  CHECK(permit_random(key, sizeof key) == 0);
  CHECK(permit_random(nonce, sizeof nonce) == 0);
  for (size_t i = 0; i < sizeof pt; i++) pt[i] = (uint8_t)i;

  CHECK(permit_aead_seal(aead, key, klen, nonce, 12, aad, 6, pt, sizeof pt,
                         ct) == 0);
  CHECK(memcmp(ct, pt, sizeof pt) != 0);
  CHECK(permit_aead_open(aead, key, klen, nonce, 12, aad, 6, ct, sizeof ct,
                         back) == 0);
  CHECK(memcmp(back, pt, sizeof pt) == 0);

  /* In place. */
  uint8_t buf[116];
  memcpy(buf, pt, sizeof pt);
  CHECK(permit_aead_seal(aead, key, klen, nonce, 12, aad, 6, buf, sizeof pt,
                         buf) == 0);
  CHECK(memcmp(buf, ct, sizeof ct) == 0);
  CHECK(permit_aead_open(aead, key, klen, nonce, 12, aad, 6, buf, sizeof buf,
                         buf) == 0);
  CHECK(memcmp(buf, pt, sizeof pt) == 0);

  /* Tag, ciphertext, aad, nonce or key changed: refused and wiped. */
  ct[sizeof ct - 1] ^= 0x80;
  memset(back, 0xaa, sizeof back);
  CHECK(permit_aead_open(aead, key, klen, nonce, 12, aad, 6, ct, sizeof ct,
                         back) == PERMIT_EVERIFY);
  CHECK(all_zero(back, sizeof back));
  ct[sizeof ct - 1] ^= 0x80;
  ct[5] ^= 0x01;
  CHECK(permit_aead_open(aead, key, klen, nonce, 12, aad, 6, ct, sizeof ct,
                         back) == PERMIT_EVERIFY);
  ct[5] ^= 0x01;
  CHECK(permit_aead_open(aead, key, klen, nonce, 12, aad, 5, ct, sizeof ct,
                         back) == PERMIT_EVERIFY);
  nonce[0] ^= 1;
  CHECK(permit_aead_open(aead, key, klen, nonce, 12, aad, 6, ct, sizeof ct,
                         back) == PERMIT_EVERIFY);
  nonce[0] ^= 1;
  key[0] ^= 1;
  CHECK(permit_aead_open(aead, key, klen, nonce, 12, aad, 6, ct, sizeof ct,
                         back) == PERMIT_EVERIFY);
  key[0] ^= 1;
  CHECK(permit_aead_open(aead, key, klen, nonce, 12, aad, 6, ct, sizeof ct,
                         back) == 0);

  /* Empty plaintext and aad: just a tag. */
  uint8_t tag[16];
  CHECK(permit_aead_seal(aead, key, klen, nonce, 12, NULL, 0, NULL, 0, tag) ==
        0);
  CHECK(permit_aead_open(aead, key, klen, nonce, 12, NULL, 0, tag, 16, NULL) ==
        0);
  tag[0] ^= 1;
  CHECK(permit_aead_open(aead, key, klen, nonce, 12, NULL, 0, tag, 16, NULL) ==
        PERMIT_EVERIFY);

  /* Lengths are checked strictly. */
  CHECK(permit_aead_seal(aead, key, klen - 1, nonce, 12, NULL, 0, pt, 1, ct) ==
        PERMIT_EINVAL);
  CHECK(permit_aead_seal(aead, key, klen + 1, nonce, 12, NULL, 0, pt, 1, ct) ==
        PERMIT_EINVAL);
  CHECK(permit_aead_seal(aead, key, klen, nonce, 11, NULL, 0, pt, 1, ct) ==
        PERMIT_EINVAL);
  CHECK(permit_aead_seal(aead, key, klen, nonce, 16, NULL, 0, pt, 1, ct) ==
        PERMIT_EINVAL);
  CHECK(permit_aead_open(aead, key, klen, nonce, 8, NULL, 0, ct, 17, back) ==
        PERMIT_EINVAL);
  CHECK(permit_aead_open(aead, key, klen, nonce, 12, NULL, 0, ct, 15, back) ==
        PERMIT_EINVAL);
  CHECK(permit_aead_seal(aead, key, klen, nonce, 12, NULL, 0, pt, SIZE_MAX,
                         ct) == PERMIT_EINVAL);
}

static void test_aead(void) {
  CHECK(permit_aead_key_len(PERMIT_AEAD_AES_128_GCM) == 16);
  CHECK(permit_aead_key_len(PERMIT_AEAD_CHACHA20_POLY1305) == 32);
  CHECK(permit_aead_key_len((permit_aead_id)2) == 0);
  test_aead_one(PERMIT_AEAD_AES_128_GCM);
  test_aead_one(PERMIT_AEAD_CHACHA20_POLY1305);
  uint8_t key[32] = {0}, nonce[12] = {0}, ct[17];
  CHECK(permit_aead_seal((permit_aead_id)2, key, 32, nonce, 12, NULL, 0, key,
                         1, ct) == PERMIT_EINVAL);
}

/* ---- X25519 ---- */

static void test_kx(void) {
  permit_kx_key *a = NULL, *b = NULL;
  CHECK(permit_kx_key_generate(&a) == 0);
  CHECK(permit_kx_key_generate(&b) == 0);
  if (a == NULL || b == NULL) goto out;
  uint8_t s1[32], s2[32], sk[32];
  CHECK(permit_kx_derive(a, permit_kx_key_public(b), s1) == 0);
  CHECK(permit_kx_derive(b, permit_kx_key_public(a), s2) == 0);
  CHECK(memcmp(s1, s2, 32) == 0);

  /* The private scalar rebuilds the same key. */
  permit_kx_key *a2 = NULL;
  CHECK(permit_kx_key_private(a, sk) == 0);
  CHECK(permit_kx_key_from_private(sk, &a2) == 0);
  if (a2 != NULL)
    CHECK(memcmp(permit_kx_key_public(a2), permit_kx_key_public(a), 32) == 0);
  permit_kx_key_free(a2);

  /* A low-order peer key (here 0 and 1) gives the zero secret: refused. */
  uint8_t low[32] = {0};
  memset(s1, 0xaa, sizeof s1);
  CHECK(permit_kx_derive(a, low, s1) == PERMIT_EVERIFY);
  CHECK(all_zero(s1, 32));
  low[0] = 1;
  CHECK(permit_kx_derive(a, low, s1) == PERMIT_EVERIFY);
out:
  permit_kx_key_free(a);
  permit_kx_key_free(b);
}

/* ---- Key files ---- */

static void test_key_files(void) {
  char dir[4096], path[4200], kxpath[4200], bad[4200], missing[4200];
  snprintf(dir, sizeof dir, "%s", test_tmpdir("crypto"));
  snprintf(path, sizeof path, "%s/identity.key", dir);
  snprintf(kxpath, sizeof kxpath, "%s/sealing.key", dir);
  snprintf(bad, sizeof bad, "%s/garbage.key", dir);
  snprintf(missing, sizeof missing, "%s/none.key", dir);
  permit_err err;
  permit_sign_key *key = NULL, *loaded = NULL;
  permit_kx_key *kx = NULL, *kxl = NULL;

  CHECK(permit_sign_key_generate(&key) == 0);
  CHECK(permit_kx_key_generate(&kx) == 0);
  if (key == NULL || kx == NULL) goto out;

  permit_err_clear(&err);
  CHECK(permit_sign_key_save(key, path, &err) == 0);
  struct stat st;
  CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
  CHECK(permit_sign_key_load(path, &loaded, &err) == 0);
  if (loaded != NULL) {
    CHECK(memcmp(permit_sign_key_public(loaded), permit_sign_key_public(key),
                 32) == 0);
    CHECK(strcmp(permit_sign_key_id(loaded), permit_sign_key_id(key)) == 0);
    uint8_t sig[64];
    CHECK(permit_sign(loaded, "t\n", (const uint8_t *)"m", 1, sig) == 0);
    CHECK(permit_verify(permit_sign_key_public(key), "t\n",
                        (const uint8_t *)"m", 1, sig, 64) == 0);
  }

  /* Never overwritten. */
  permit_err_clear(&err);
  CHECK(permit_sign_key_save(key, path, &err) == PERMIT_EEXIST);
  CHECK(err.code == PERMIT_EEXIST && strstr(err.msg, path) != NULL);

  /* Readable by others: refused, and the message says where and why. */
  CHECK(chmod(path, 0644) == 0);
  permit_sign_key *none = NULL;
  permit_err_clear(&err);
  CHECK(permit_sign_key_load(path, &none, &err) == PERMIT_EPERM);
  CHECK(none == NULL);
  CHECKF(strstr(err.msg, path) != NULL && strstr(err.msg, "0644") != NULL,
         "message: %s", err.msg);
  CHECK(chmod(path, 0640) == 0);
  CHECK(permit_sign_key_load(path, &none, NULL) == PERMIT_EPERM);
  CHECK(chmod(path, 0600) == 0);

  permit_err_clear(&err);
  CHECK(permit_sign_key_load(missing, &none, &err) == PERMIT_ENOTFOUND);
  CHECK(err.code == PERMIT_ENOTFOUND && strstr(err.msg, missing) != NULL);
  CHECK(permit_kx_key_load(missing, &kxl, NULL) == PERMIT_ENOTFOUND);

  /* A sealing key is not an identity key, and the other way round. */
  CHECK(permit_kx_key_save(kx, kxpath, &err) == 0);
  permit_err_clear(&err);
  CHECK(permit_sign_key_load(kxpath, &none, &err) == PERMIT_EINVAL);
  CHECK(none == NULL && err.msg[0] != '\0');
  CHECK(permit_kx_key_load(path, &kxl, NULL) == PERMIT_EINVAL);
  CHECK(permit_kx_key_load(kxpath, &kxl, &err) == 0);
  if (kxl != NULL) {
    uint8_t a[32], b[32];
    CHECK(permit_kx_key_private(kx, a) == 0);
    CHECK(permit_kx_key_private(kxl, b) == 0);
    CHECK(memcmp(a, b, 32) == 0);
  }
  CHECK(permit_kx_key_save(kx, kxpath, NULL) == PERMIT_EEXIST);

  /* Garbage and oversized files are not keys. */
  int fd = open(bad, O_WRONLY | O_CREAT | O_EXCL, 0600);
  CHECK(fd >= 0);
  if (fd >= 0) {
    CHECK(write(fd, "not a key\n", 10) == 10);
    close(fd);
  }
  permit_err_clear(&err);
  CHECK(permit_sign_key_load(bad, &none, &err) == PERMIT_EINVAL);
  CHECK(err.msg[0] != '\0');
  CHECK(truncate(bad, 1 << 20) == 0);
  CHECK(permit_sign_key_load(bad, &none, &err) == PERMIT_EINVAL);
  /* Nor is a directory, or a FIFO (which must not block the load). */
  CHECK(permit_sign_key_load(dir, &none, &err) == PERMIT_EINVAL);
  char fifo[4200];
  snprintf(fifo, sizeof fifo, "%s/fifo.key", dir);
  CHECK(mkfifo(fifo, 0600) == 0);
  CHECK(permit_sign_key_load(fifo, &none, &err) == PERMIT_EINVAL);
  CHECK(permit_sign_key_load("", &none, &err) == PERMIT_EINVAL);

out:
  permit_sign_key_free(key);
  permit_sign_key_free(loaded);
  permit_kx_key_free(kx);
  permit_kx_key_free(kxl);
  test_rmrf(dir);
}

/* ---- Pairwise pseudonyms ---- */

static void test_pair_and_subject(void) {
  permit_kx_key *a = NULL, *b = NULL, *c = NULL;
  CHECK(permit_kx_key_generate(&a) == 0);
  CHECK(permit_kx_key_generate(&b) == 0);
  CHECK(permit_kx_key_generate(&c) == 0);
  if (a == NULL || b == NULL || c == NULL) goto out;
  uint8_t ab[32], ba[32], other[32];
  CHECK(permit_pair_key(a, permit_kx_key_public(b), "venue.example",
                        "reseller.example", ab) == 0);
  CHECK(permit_pair_key(b, permit_kx_key_public(a), "venue.example",
                        "reseller.example", ba) == 0);
  CHECK(memcmp(ab, ba, 32) == 0);
  CHECK(permit_pair_key(a, permit_kx_key_public(b), "reseller.example",
                        "venue.example", other) == 0);
  CHECK(memcmp(ab, other, 32) != 0);
  CHECK(permit_pair_key(a, permit_kx_key_public(b), "venue.example",
                        "other.example", other) == 0);
  CHECK(memcmp(ab, other, 32) != 0);
  /* The separator keeps issuer "ab", audience "c" apart from "a", "bc". */
  uint8_t x[32], y[32];
  CHECK(permit_pair_key(a, permit_kx_key_public(b), "ab", "c", x) == 0);
  CHECK(permit_pair_key(a, permit_kx_key_public(b), "a", "bc", y) == 0);
  CHECK(memcmp(x, y, 32) != 0);
  CHECK(permit_pair_key(a, permit_kx_key_public(c), "venue.example",
                        "reseller.example", other) == 0);
  CHECK(memcmp(ab, other, 32) != 0);
  uint8_t zero[32] = {0};
  CHECK(permit_pair_key(a, zero, "v", "r", other) == PERMIT_EVERIFY);
  CHECK(permit_pair_key(a, permit_kx_key_public(b), NULL, "r", other) ==
        PERMIT_EINVAL);

  static const char e1[] = "  Alice@Example.COM ";
  static const char e2[] = "alice@example.com";
  static const char e3[] = "bob@example.com";
  uint8_t s1[32], s2[32], s3[32], s4[32];
  CHECK(permit_subject(ab, e1, strlen(e1), s1) == 0);
  CHECK(permit_subject(ba, e2, strlen(e2), s2) == 0);
  CHECK(memcmp(s1, s2, 32) == 0);
  CHECK(permit_subject(ab, e3, strlen(e3), s3) == 0);
  CHECK(memcmp(s1, s3, 32) != 0);
  CHECK(permit_subject(other, e2, strlen(e2), s4) == 0);
  CHECK(memcmp(s1, s4, 32) != 0);
  /* subject = HMAC-SHA256(pair_key, normalized email). */
  CHECK(permit_hmac_sha256(ab, 32, (const uint8_t *)e2, strlen(e2), s4) == 0);
  CHECK(memcmp(s1, s4, 32) == 0);
  CHECK(permit_subject(ab, "", 0, s4) == PERMIT_EINVAL);
  CHECK(permit_subject(ab, " \t ", 3, s4) == PERMIT_EINVAL);
out:
  permit_kx_key_free(a);
  permit_kx_key_free(b);
  permit_kx_key_free(c);
}

static void test_email_normalize(void) {
  char out[64];
  static const char e[] = "\t Alice@Example.COM \r\n";
  CHECK(permit_email_normalize(e, strlen(e), out, sizeof out) == 0);
  CHECK(strcmp(out, "alice@example.com") == 0);
  CHECK(permit_email_normalize("", 0, out, sizeof out) == PERMIT_EINVAL);
  CHECK(permit_email_normalize("   ", 3, out, sizeof out) == PERMIT_EINVAL);
  CHECK(permit_email_normalize(" \t\n\v\f\r", 6, out, sizeof out) ==
        PERMIT_EINVAL);
  CHECK(permit_email_normalize("a\0b", 3, out, sizeof out) == PERMIT_EINVAL);
  /* |len| bounds the read: only "Ab" is seen. */
  CHECK(permit_email_normalize("AbCD", 2, out, sizeof out) == 0);
  CHECK(strcmp(out, "ab") == 0);
  /* Room for the text and the NUL, no less. */
  CHECK(permit_email_normalize(" a@b ", 5, out, 4) == 0);
  CHECK(strcmp(out, "a@b") == 0);
  CHECK(permit_email_normalize(" a@b ", 5, out, 3) == PERMIT_ETOOBIG);
  /* Non-ASCII bytes pass through untouched. */
  static const char u[] = "\xc3\x89mile@X.fr";
  CHECK(permit_email_normalize(u, strlen(u), out, sizeof out) == 0);
  CHECK(strcmp(out, "\xc3\x89mile@x.fr") == 0);
}

int main(void) {
  CHECK(permit_crypto_init() == 0);
  test_ed25519_rfc8032();
  test_sign_context();
  test_hkdf_rfc5869();
  test_hmac_rfc4231();
  test_aead();
  test_kx();
  test_key_files();
  test_pair_and_subject();
  test_email_normalize();
  permit_crypto_cleanup();
  return test_finish("test_crypto");
}
