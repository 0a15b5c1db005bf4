/**
 * The wire format of sig-gate's signatures (docs/protocol.md): header names, value syntax and
 * the signed strings of version 1 (GATE-HMAC-SHA256) and version 2 (GATE-SIG-V2). Pure
 * functions over `node:crypto`, no configuration and no I/O, so that every line can be checked
 * against `tests/vectors/`.
 */

import { createHash, createHmac } from "node:crypto";

/** First line of a version 1 signed string. */
export const ALGORITHM_V1 = "GATE-HMAC-SHA256";
/** First line of a version 2 signed string. */
export const ALGORITHM_V2 = "GATE-SIG-V2";

/** Version 2 key algorithm: HMAC-SHA256 with a shared secret. */
export const ALG_HMAC_SHA256 = "hmac-sha256";
/** Version 2 key algorithm: Ed25519 (RFC 8032) with a private key. */
export const ALG_ED25519 = "ed25519";
/** The key algorithms of version 2, as line 2 of the signed string and `GATE_SIGNING_ALG` name them. */
export const ALGORITHMS = [ALG_HMAC_SHA256, ALG_ED25519] as const;
/** A version 2 key algorithm. */
export type Algorithm = (typeof ALGORITHMS)[number];

/** `X-Gate-Version`: `2` for version 2, absent for version 1. */
export const HEADER_VERSION = "X-Gate-Version";
/** `X-Gate-Key-Id`: key id of the signature in `X-Gate-Signature`. */
export const HEADER_KEY_ID = "X-Gate-Key-Id";
/** `X-Gate-Timestamp`: Unix seconds. */
export const HEADER_TIMESTAMP = "X-Gate-Timestamp";
/** `X-Gate-Nonce`: unique per request. */
export const HEADER_NONCE = "X-Gate-Nonce";
/** `X-Gate-Signature`: lowercase hex. */
export const HEADER_SIGNATURE = "X-Gate-Signature";
/** `X-Gate-Signatures`: a JSON list of `{key_id, signature}`, for dual-signing and observing. */
export const HEADER_SIGNATURES = "X-Gate-Signatures";

/** Every header a signer may send, in the order it sends them. */
export const SIGNATURE_HEADERS = [
  HEADER_VERSION,
  HEADER_KEY_ID,
  HEADER_TIMESTAMP,
  HEADER_NONCE,
  HEADER_SIGNATURE,
  HEADER_SIGNATURES,
] as const;

/** The signature headers of one request, in the order a signer sends them. */
export type SignatureHeaders = Record<string, string>;

const KEY_ID = /^[A-Za-z0-9._:-]{1,64}$/;
const NONCE = /^[A-Za-z0-9_-]{16,128}$/;
const TIMESTAMP = /^[0-9]{1,12}$/;
// RFC 9110 token characters: anything else cannot be a method on the wire.
const METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// An origin-form request target as sent: starts with '/', visible ASCII only (the HTTP library
// has percent-encoded everything else by the time the bytes leave).
const TARGET = /^\/[\x21-\x7e]*$/;

/** True when `value` is 1-64 chars of `A-Z a-z 0-9 . _ : -` (key ids and audiences). */
export function isKeyId(value: string): boolean {
  return KEY_ID.test(value);
}

/** True when `value` is 16-128 chars of `A-Z a-z 0-9 _ -`. */
export function isNonce(value: string): boolean {
  return NONCE.test(value);
}

/** True when `value` is 1-12 decimal digits and nothing else. */
export function isTimestamp(value: string): boolean {
  return TIMESTAMP.test(value);
}

/** True when `value` is an HTTP token, something that can be sent as a method. */
export function isMethod(value: string): boolean {
  return METHOD.test(value);
}

/** True when `value` is a request target as sent: `/path[?query]`, visible ASCII. */
export function isRequestTarget(value: string): boolean {
  return TARGET.test(value);
}

/** What a caller may pass as a body: bytes as sent, or text sent as UTF-8; none is empty. */
export type Body = string | Uint8Array | ArrayBuffer | null | undefined;

/** The exact bytes of `body`: bytes as they are, text as UTF-8, nothing as empty. */
export function bodyBytes(body: Body): Uint8Array {
  if (body === null || body === undefined) {
    return new Uint8Array(0);
  }
  if (typeof body === "string") {
    return new TextEncoder().encode(body);
  }
  if (body instanceof Uint8Array) {
    return body;
  }
  if (body instanceof ArrayBuffer) {
    return new Uint8Array(body);
  }
  throw new TypeError(
    `body must be a string, a Uint8Array or an ArrayBuffer, not ${describe(body)}: serialise it ` +
      "first and send exactly the bytes you signed",
  );
}

/** Lowercase hex SHA-256 of the body bytes: the last line of every signed string. */
export function bodySha256(body: Uint8Array): string {
  return createHash("sha256").update(body).digest("hex");
}

/**
 * Split a request target at the first `?` into the raw path and the raw query (without `?`).
 * Neither part is decoded or reordered: `/a%2Fb?q=a+b` gives `["/a%2Fb", "q=a+b"]`.
 */
export function splitTarget(target: string): [path: string, query: string] {
  const at = target.indexOf("?");
  return at < 0 ? [target, ""] : [target.slice(0, at), target.slice(at + 1)];
}

/**
 * Version 1: the eight lines joined by `\n`, no trailing newline. `keyId` is the key id of this
 * signature (`""` for a request without `X-Gate-Key-Id`).
 */
export function signedStringV1(
  keyId: string,
  timestamp: string,
  nonce: string,
  method: string,
  target: string,
  bodyDigest: string,
): string {
  const [path, query] = splitTarget(target);
  return [ALGORITHM_V1, keyId, timestamp, nonce, method, path, query, bodyDigest].join("\n");
}

/**
 * Version 2: the ten lines joined by `\n`, no trailing newline. `alg` is the signing key's
 * algorithm and `audience` the gate's `GATE_AUDIENCE`.
 */
export function signedStringV2(
  alg: Algorithm,
  keyId: string,
  audience: string,
  timestamp: string,
  nonce: string,
  method: string,
  target: string,
  bodyDigest: string,
): string {
  const [path, query] = splitTarget(target);
  return [ALGORITHM_V2, alg, keyId, audience, timestamp, nonce, method, path, query, bodyDigest].join(
    "\n",
  );
}

/** Lowercase hex HMAC-SHA256 of a signed string (as UTF-8), keyed with the secret's bytes. */
export function hmacSignature(secret: Uint8Array, message: string): string {
  return createHmac("sha256", secret).update(message, "utf8").digest("hex");
}

/**
 * First 8 hex chars of HMAC-SHA256(secret, "sig-gate fingerprint"): the gate's
 * `sig_gate_config_info` shows the same, so client and gate can be compared without either
 * printing the secret.
 */
export function secretFingerprint(secret: Uint8Array): string {
  return hmacSignature(secret, "sig-gate fingerprint").slice(0, 8);
}

/** First 8 hex chars of SHA-256 of an Ed25519 public key's 32 bytes (`sig_gate_key_info`). */
export function publicKeyFingerprint(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest("hex").slice(0, 8);
}

/** A short description of a value's type for error messages (never the value itself). */
export function describe(value: unknown): string {
  if (value === null) {
    return "null";
  }
  if (typeof value === "object") {
    return (value as object).constructor?.name ?? "object";
  }
  return typeof value;
}
