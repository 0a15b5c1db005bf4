/**
 * Signing keys: an HMAC-SHA256 secret (versions 1 and 2) or an Ed25519 private key (version 2),
 * each with the key id it signs under. The key material is held in private fields and never
 * shown: `util.inspect`, `JSON.stringify` and `String()` give the key id and a fingerprint,
 * the same the gate exports in its metrics.
 */

import { Buffer } from "node:buffer";
import { createPrivateKey, createPublicKey, sign as cryptoSign, type KeyObject } from "node:crypto";

import { GateConfigError } from "./config.js";
import {
  ALG_ED25519,
  ALG_HMAC_SHA256,
  hmacSignature,
  isKeyId,
  publicKeyFingerprint,
  secretFingerprint,
  signedStringV1,
  signedStringV2,
} from "./protocol.js";

const INSPECT = Symbol.for("nodejs.util.inspect.custom");
const PEM_LABEL = "-----BEGIN PRIVATE KEY-----";
const ENCRYPTED_PEM_LABEL = "-----BEGIN ENCRYPTED PRIVATE KEY-----";

/** The request fields every signature covers. */
export interface SignedFields {
  timestamp: string;
  nonce: string;
  method: string;
  target: string;
  bodyDigest: string;
}

function checkKeyId(keyId: string): void {
  if (typeof keyId !== "string" || !isKeyId(keyId)) {
    throw new TypeError(`key id ${JSON.stringify(keyId)} is not valid (1-64 chars of A-Z a-z 0-9 . _ : -)`);
  }
}

/** An HMAC-SHA256 secret and the key id it signs under. */
export class HmacKey {
  /** The version 2 algorithm line. */
  readonly alg = ALG_HMAC_SHA256;
  readonly #secret: Uint8Array;

  /** `secret` is the key's bytes (a secret's UTF-8 bytes, as the gate reads it). */
  constructor(
    readonly keyId: string,
    secret: Uint8Array,
  ) {
    checkKeyId(keyId);
    this.#secret = Uint8Array.from(secret);
  }

  /** First 8 hex chars of HMAC(secret, "sig-gate fingerprint"): safe to log. */
  get fingerprint(): string {
    return secretFingerprint(this.#secret);
  }

  /** Whether `other` holds the same secret. */
  sameSecret(other: HmacKey): boolean {
    const a = this.#secret;
    const b = other.#secret;
    return a.length === b.length && a.every((byte, i) => byte === b[i]);
  }

  /** Lowercase hex version 1 signature, over the signed string carrying this key's id. */
  signV1(fields: SignedFields): string {
    const { timestamp, nonce, method, target, bodyDigest } = fields;
    return hmacSignature(this.#secret, signedStringV1(this.keyId, timestamp, nonce, method, target, bodyDigest));
  }

  /** Lowercase hex (64 chars) version 2 signature for `audience`. */
  signV2(audience: string, fields: SignedFields): string {
    const { timestamp, nonce, method, target, bodyDigest } = fields;
    const message = signedStringV2(this.alg, this.keyId, audience, timestamp, nonce, method, target, bodyDigest);
    return hmacSignature(this.#secret, message);
  }

  toString(): string {
    return `HmacKey(keyId=${this.keyId}, fingerprint=${this.fingerprint})`;
  }

  toJSON(): object {
    return { keyId: this.keyId, alg: this.alg, fingerprint: this.fingerprint };
  }

  [INSPECT](): string {
    return this.toString();
  }
}

/** An Ed25519 private key and the key id it signs under (version 2 only). */
export class Ed25519Key {
  /** The version 2 algorithm line. */
  readonly alg = ALG_ED25519;
  readonly #privateKey: KeyObject;
  readonly #publicKey: Uint8Array;

  /** Wraps a `node:crypto` private key, which must be an Ed25519 one. */
  constructor(
    readonly keyId: string,
    privateKey: KeyObject,
  ) {
    checkKeyId(keyId);
    if (privateKey.type !== "private" || privateKey.asymmetricKeyType !== "ed25519") {
      throw new TypeError(
        `privateKey must be an Ed25519 private key, not ${privateKey.asymmetricKeyType ?? privateKey.type}`,
      );
    }
    this.#privateKey = privateKey;
    const jwk = createPublicKey(privateKey).export({ format: "jwk" });
    this.#publicKey = Buffer.from(jwk.x ?? "", "base64url");
  }

  /**
   * A key from unencrypted PKCS#8 PEM text, the format `openssl genpkey -algorithm ed25519` and
   * `sig-gate keygen --ed25519` write. Errors name `variable` and `path` (where the text came
   * from), never the key.
   */
  static fromPem(keyId: string, pem: string | Uint8Array, variable = "pem", path = "the key"): Ed25519Key {
    const text = typeof pem === "string" ? pem : new TextDecoder("utf-8", { fatal: false }).decode(pem);
    if (text.includes(ENCRYPTED_PEM_LABEL)) {
      throw new GateConfigError(variable, `${path} is encrypted; the signer needs an unencrypted key`);
    }
    if (!text.includes(PEM_LABEL)) {
      throw new GateConfigError(
        variable,
        `${path} is not an Ed25519 private key in PKCS#8 PEM ('${PEM_LABEL}', as \`openssl genpkey ` +
          "-algorithm ed25519` or `sig-gate keygen --ed25519` write it)",
      );
    }
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: text, format: "pem" });
    } catch {
      throw new GateConfigError(variable, `${path} holds a PEM block that is not a valid private key`);
    }
    if (key.asymmetricKeyType !== "ed25519") {
      throw new GateConfigError(
        variable,
        `${path} holds an ${key.asymmetricKeyType ?? "unknown"} key, not an Ed25519 private key`,
      );
    }
    return new Ed25519Key(keyId, key);
  }

  /** The public key as the gate's registry takes it: base64url of 32 bytes, no padding. */
  get publicKey(): string {
    return Buffer.from(this.#publicKey).toString("base64url");
  }

  /** First 8 hex chars of SHA-256 of the public key, as the gate's `sig_gate_key_info` shows. */
  get fingerprint(): string {
    return publicKeyFingerprint(this.#publicKey);
  }

  /** Lowercase hex (128 chars) of the Ed25519 signature over the version 2 signed string. */
  signV2(audience: string, fields: SignedFields): string {
    const { timestamp, nonce, method, target, bodyDigest } = fields;
    const message = signedStringV2(this.alg, this.keyId, audience, timestamp, nonce, method, target, bodyDigest);
    return cryptoSign(null, Buffer.from(message, "utf8"), this.#privateKey).toString("hex");
  }

  toString(): string {
    return `Ed25519Key(keyId=${this.keyId}, publicKey=${this.publicKey}, fingerprint=${this.fingerprint})`;
  }

  toJSON(): object {
    return { keyId: this.keyId, alg: this.alg, publicKey: this.publicKey, fingerprint: this.fingerprint };
  }

  [INSPECT](): string {
    return this.toString();
  }
}

/** A key that signs version 2. */
export type VersionTwoKey = HmacKey | Ed25519Key;
