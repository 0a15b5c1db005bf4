/**
 * The signer: the headers a calling service sends to sig-gate (docs/protocol.md).
 *
 * {@link GateSigner} holds the resolved keys and is what the fetch and axios adapters keep for
 * the life of a client; {@link signGateRequest} is the one-call form, reading the environment
 * on every call.
 *
 * Two versions, chosen by the environment exactly as the Python client chooses: version 1 signs
 * with the shared secret (`INTERSERVICE_HMAC_SECRET` and friends); version 2 signs with the
 * caller's own key (`GATE_SIGNING_KEY_ID`, `GATE_SIGNING_KEY_FILE`, `GATE_SIGNING_ALG`) for one
 * gate's audience (`GATE_AUDIENCE`), optionally adding an observed Ed25519 signature
 * (`GATE_OBSERVE_KEY_ID`, `GATE_OBSERVE_KEY_FILE`).
 */

import { randomBytes } from "node:crypto";

import * as config from "./config.js";
import { GateConfigError, type Environment } from "./config.js";
import { Ed25519Key, HmacKey, type SignedFields, type VersionTwoKey } from "./keys.js";
import * as protocol from "./protocol.js";
import type { Body, SignatureHeaders } from "./protocol.js";

const INSPECT = Symbol.for("nodejs.util.inspect.custom");

/** A value to sign (method, target, timestamp or nonce) is malformed; `field` names it. */
export class SigningInputError extends Error {
  override readonly name = "SigningInputError";

  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
  }
}

/** Unix seconds, as a number or as the exact decimal text to send. */
export type Timestamp = number | string;

/** Per-request values that are normally generated: for reproducible output and tests. */
export interface SignOptions {
  /** Unix seconds; now when absent. */
  timestamp?: Timestamp;
  /** 16-128 chars of `A-Z a-z 0-9 _ -`; 16 random bytes (22 URL-safe chars) when absent. */
  nonce?: string;
}

/**
 * Version 1 settings passed in code; each one left out comes from its environment variable.
 * Passing any of them while the environment selects version 2 is an error.
 */
export interface FromEnvOptions {
  /** The environment to read (default `process.env`). */
  env?: Environment;
  /** `INTERSERVICE_HMAC_SECRET`: text (used as UTF-8) or bytes. */
  secret?: string | Uint8Array;
  /** `INTERSERVICE_HMAC_KEY_ID`. */
  keyId?: string;
  /** `INTERSERVICE_HMAC_SECRET_PREV`. */
  prevSecret?: string | Uint8Array;
  /** `INTERSERVICE_HMAC_KEY_ID_PREV`. */
  prevKeyId?: string;
  /** `TOOL_GATE_DUAL_SIGN`. */
  dualSign?: boolean;
}

/**
 * Signs requests, in version 1 or version 2. Build it once (usually with
 * {@link GateSigner.fromEnv}) and reuse it: configuration errors surface at start-up instead of
 * on the first request, and signing reads no environment and no file.
 */
export class GateSigner {
  readonly #key: VersionTwoKey;
  readonly #dualWith: HmacKey | undefined;
  readonly #audience: string | undefined;
  readonly #observe: Ed25519Key | undefined;

  private constructor(
    key: VersionTwoKey,
    dualWith: HmacKey | undefined,
    audience: string | undefined,
    observe: Ed25519Key | undefined,
  ) {
    this.#key = key;
    this.#dualWith = dualWith;
    this.#audience = audience;
    this.#observe = observe;
  }

  /**
   * Version 1: the shared secret's key and, when dual-signing during a rotation, the previous
   * one, whose signature goes beside the current one in `X-Gate-Signatures`.
   */
  static version1(current: HmacKey, dualWith?: HmacKey): GateSigner {
    if (!(current instanceof HmacKey) || (dualWith !== undefined && !(dualWith instanceof HmacKey))) {
      throw new TypeError("version 1 signs with HmacKey keys");
    }
    if (dualWith !== undefined && dualWith.keyId === current.keyId) {
      throw new GateConfigError(
        config.KEY_ID_PREV,
        `equals ${config.KEY_ID} (${JSON.stringify(current.keyId)}): each secret needs its own key id`,
      );
    }
    return new GateSigner(current, dualWith, undefined, undefined);
  }

  /**
   * Version 2: the caller's own key for the gate named `audience`, and optionally an Ed25519 key
   * whose signature is sent beside the first for the gate to observe (the migration's observe
   * stage).
   */
  static version2(key: VersionTwoKey, audience: string, observe?: Ed25519Key): GateSigner {
    if (!(key instanceof HmacKey || key instanceof Ed25519Key)) {
      throw new TypeError("version 2 signs with an HmacKey or an Ed25519Key");
    }
    if (typeof audience !== "string" || !protocol.isKeyId(audience)) {
      throw new GateConfigError(
        "audience",
        `${JSON.stringify(audience)} is not an audience (1-64 chars of A-Z a-z 0-9 . _ : -)`,
      );
    }
    if (observe !== undefined) {
      if (!(observe instanceof Ed25519Key)) {
        throw new TypeError("observe must be an Ed25519Key");
      }
      if (observe.keyId === key.keyId) {
        throw new GateConfigError(
          config.OBSERVE_KEY_ID,
          `equals ${config.SIGNING_KEY_ID} (${JSON.stringify(key.keyId)}): the observed key needs its own key id`,
        );
      }
    }
    return new GateSigner(key, undefined, audience, observe);
  }

  /**
   * Resolve every setting from the environment, by the gate's rules (see `config.ts`); each
   * error names the variable or option at fault.
   *
   * Version 2 when any of `GATE_SIGNING_KEY_ID`, `GATE_SIGNING_KEY_FILE`, `GATE_SIGNING_ALG`,
   * `GATE_OBSERVE_KEY_ID` or `GATE_OBSERVE_KEY_FILE` is set (then the first two and
   * `GATE_AUDIENCE` are required and the version 1 variables are not read); version 1 otherwise.
   */
  static fromEnv(options: FromEnvOptions = {}): GateSigner {
    const env: Environment = options.env ?? process.env;
    const allowWeak = config.envBool(env, config.ALLOW_WEAK_SECRET, false);

    const version2 = config.VERSION_2_SETTINGS.filter((name) => config.envText(env, name) !== undefined);
    if (version2.length > 0) {
      const passed = (["secret", "keyId", "prevSecret", "prevKeyId", "dualSign"] as const).filter(
        (name) => options[name] !== undefined,
      );
      if (passed.length > 0) {
        throw new GateConfigError(
          version2[0] as string,
          "is set, which selects signature version 2, but version 1 settings were passed in code " +
            `(${passed.join(", ")}): configure one version`,
        );
      }
      return GateSigner.#version2FromEnv(env, allowWeak);
    }

    let current: Uint8Array;
    let currentSource: string;
    if (options.secret !== undefined) {
      current = config.secretFromOption("secret", options.secret);
      currentSource = "secret";
    } else {
      const loaded = config.secretFromEnv(env, config.SECRET, config.SECRET_FILE);
      if (loaded === undefined) {
        throw new GateConfigError(
          config.SECRET,
          `required (set it, or ${config.SECRET_FILE} to a file holding it; or, for signature ` +
            `version 2, ${config.SIGNING_KEY_ID}, ${config.SIGNING_KEY_FILE} and ${config.AUDIENCE})`,
        );
      }
      current = loaded;
      currentSource = config.SECRET;
    }
    config.checkSecretStrength(currentSource, current, allowWeak);

    let previous: Uint8Array | undefined;
    let previousSource: string;
    if (options.prevSecret !== undefined) {
      previous = config.secretFromOption("prevSecret", options.prevSecret);
      previousSource = "prevSecret";
    } else {
      previous = config.secretFromEnv(env, config.SECRET_PREV, config.SECRET_PREV_FILE);
      previousSource = config.SECRET_PREV;
    }
    if (previous !== undefined) {
      config.checkSecretStrength(previousSource, previous, allowWeak);
    }

    const currentId = keyIdSetting(options.keyId, "keyId", env, config.KEY_ID, config.DEFAULT_KEY_ID);
    const previousId = keyIdSetting(
      options.prevKeyId,
      "prevKeyId",
      env,
      config.KEY_ID_PREV,
      config.DEFAULT_KEY_ID_PREV,
    );
    const currentKey = new HmacKey(currentId, current);
    const previousKey = previous === undefined ? undefined : new HmacKey(previousId, previous);
    if (previousKey !== undefined) {
      // The gate refuses both at start-up; a signer that accepted them would send signatures
      // that cannot tell the two secrets apart.
      if (previousKey.sameSecret(currentKey)) {
        throw new GateConfigError(previousSource, `equals ${currentSource}: a rotation needs a new secret`);
      }
      if (previousId === currentId) {
        throw new GateConfigError(
          config.KEY_ID_PREV,
          `equals ${config.KEY_ID} (${JSON.stringify(currentId)}): each secret needs its own key id`,
        );
      }
    }

    let dualSign = options.dualSign;
    if (dualSign === undefined) {
      dualSign = config.envBool(env, config.DUAL_SIGN, false);
    } else if (typeof dualSign !== "boolean") {
      throw new TypeError("dualSign must be a boolean");
    }
    if (dualSign && previousKey === undefined) {
      throw new GateConfigError(
        config.DUAL_SIGN,
        `${config.DUAL_SIGN}=true needs ${config.SECRET_PREV} (or ${config.SECRET_PREV_FILE}): ` +
          "there is no previous secret to sign with",
      );
    }
    return GateSigner.version1(currentKey, dualSign ? previousKey : undefined);
  }

  /** Version 2 from `GATE_SIGNING_*`, `GATE_AUDIENCE` and `GATE_OBSERVE_*`. */
  static #version2FromEnv(env: Environment, allowWeak: boolean): GateSigner {
    const missing = config.VERSION_2_REQUIRED.filter((name) => config.envText(env, name) === undefined);
    if (missing.length > 0) {
      throw new GateConfigError(
        missing[0] as string,
        `required for signature version 2 (${config.VERSION_2_REQUIRED.join(", ")} go together; ` +
          `missing: ${missing.join(", ")})`,
      );
    }
    const signingId = keyIdSetting(undefined, config.SIGNING_KEY_ID, env, config.SIGNING_KEY_ID, "");
    const audience = keyIdSetting(undefined, config.AUDIENCE, env, config.AUDIENCE, "");
    const alg = config.envText(env, config.SIGNING_ALG) ?? protocol.ALG_HMAC_SHA256;
    const path = config.envText(env, config.SIGNING_KEY_FILE) as string;

    let key: VersionTwoKey;
    if (alg === protocol.ALG_HMAC_SHA256) {
      const secret = config.readSecretFile(config.SIGNING_KEY_FILE, path);
      if (new TextDecoder().decode(secret).trimStart().startsWith("-----BEGIN")) {
        throw new GateConfigError(
          config.SIGNING_KEY_FILE,
          `${path} holds a PEM key, not an HMAC secret: for an Ed25519 key set ` +
            `${config.SIGNING_ALG}=${protocol.ALG_ED25519}`,
        );
      }
      config.checkSecretStrength(config.SIGNING_KEY_FILE, secret, allowWeak);
      key = new HmacKey(signingId, secret);
    } else if (alg === protocol.ALG_ED25519) {
      const pem = config.readKeyFile(config.SIGNING_KEY_FILE, path);
      key = Ed25519Key.fromPem(signingId, pem, config.SIGNING_KEY_FILE, path);
    } else {
      throw new GateConfigError(
        config.SIGNING_ALG,
        `${JSON.stringify(alg)} is not ${protocol.ALGORITHMS.join(" or ")}`,
      );
    }

    const observeId = config.envText(env, config.OBSERVE_KEY_ID);
    const observePath = config.envText(env, config.OBSERVE_KEY_FILE);
    if (observeId === undefined && observePath !== undefined) {
      throw new GateConfigError(config.OBSERVE_KEY_ID, `required with ${config.OBSERVE_KEY_FILE}`);
    }
    if (observeId !== undefined && observePath === undefined) {
      throw new GateConfigError(config.OBSERVE_KEY_FILE, `required with ${config.OBSERVE_KEY_ID}`);
    }
    let observe: Ed25519Key | undefined;
    if (observeId !== undefined && observePath !== undefined) {
      const id = keyIdSetting(undefined, config.OBSERVE_KEY_ID, env, config.OBSERVE_KEY_ID, "");
      if (id === signingId) {
        throw new GateConfigError(
          config.OBSERVE_KEY_ID,
          `equals ${config.SIGNING_KEY_ID} (${JSON.stringify(signingId)}): the observed key needs its own key id`,
        );
      }
      const pem = config.readKeyFile(config.OBSERVE_KEY_FILE, observePath);
      observe = Ed25519Key.fromPem(id, pem, config.OBSERVE_KEY_FILE, observePath);
    }
    return GateSigner.version2(key, audience, observe);
  }

  /** The signature version sent: 1 (shared secret) or 2 (`X-Gate-Version: 2`). */
  get version(): 1 | 2 {
    return this.#audience === undefined ? 1 : 2;
  }

  /** Key id of the signing key (sent in `X-Gate-Key-Id`). */
  get keyId(): string {
    return this.#key.keyId;
  }

  /** The gate audience version 2 signs for; `undefined` in version 1. */
  get audience(): string | undefined {
    return this.#audience;
  }

  /** Key id of the observed Ed25519 key (version 2), or `undefined`. */
  get observeKeyId(): string | undefined {
    return this.#observe?.keyId;
  }

  /** Version 1: whether `X-Gate-Signatures` carries the current and the previous signature. */
  get dualSign(): boolean {
    return this.#dualWith !== undefined;
  }

  /**
   * The signature headers for one request, in the order a signer sends them. `method` and
   * `target` (raw path plus optional `?query`) must be exactly what goes on the wire, and `body`
   * exactly the bytes sent: the gate checks what it receives, not what the caller meant.
   */
  sign(method: string, target: string, body?: Body, options: SignOptions = {}): SignatureHeaders {
    if (typeof method !== "string" || !protocol.isMethod(method)) {
      throw new SigningInputError("method", `${JSON.stringify(method)} is not an HTTP method token`);
    }
    if (typeof target !== "string" || !protocol.isRequestTarget(target)) {
      throw new SigningInputError(
        "target",
        `${JSON.stringify(target)} is not a request target as sent: it must start with '/', hold ` +
          "only printable ASCII (percent-encode the rest) and carry no scheme or host",
      );
    }
    const fields: SignedFields = {
      timestamp: timestampText(options.timestamp),
      nonce: nonceText(options.nonce),
      method,
      target,
      bodyDigest: protocol.bodySha256(protocol.bodyBytes(body)),
    };
    if (this.#audience !== undefined) {
      return this.#signV2(this.#audience, fields);
    }
    const key = this.#key as HmacKey; // version1() admits HmacKey only
    const signature = key.signV1(fields);
    const headers: SignatureHeaders = {
      [protocol.HEADER_KEY_ID]: key.keyId,
      [protocol.HEADER_TIMESTAMP]: fields.timestamp,
      [protocol.HEADER_NONCE]: fields.nonce,
      [protocol.HEADER_SIGNATURE]: signature,
    };
    if (this.#dualWith !== undefined) {
      // Canonical form, as every signer writes it: compact, current first, fields in this order.
      headers[protocol.HEADER_SIGNATURES] = JSON.stringify([
        { key_id: key.keyId, signature },
        { key_id: this.#dualWith.keyId, signature: this.#dualWith.signV1(fields) },
      ]);
    }
    return headers;
  }

  /** Version 2: `X-Gate-Version: 2`, then version 1's headers, each signature over the ten-line
   * string with its own key's algorithm and id. */
  #signV2(audience: string, fields: SignedFields): SignatureHeaders {
    const signature = this.#key.signV2(audience, fields);
    const headers: SignatureHeaders = {
      [protocol.HEADER_VERSION]: "2",
      [protocol.HEADER_KEY_ID]: this.#key.keyId,
      [protocol.HEADER_TIMESTAMP]: fields.timestamp,
      [protocol.HEADER_NONCE]: fields.nonce,
      [protocol.HEADER_SIGNATURE]: signature,
    };
    if (this.#observe !== undefined) {
      // As dual-signing in version 1: the header pair first, then the observed key's entry.
      headers[protocol.HEADER_SIGNATURES] = JSON.stringify([
        { key_id: this.#key.keyId, signature },
        { key_id: this.#observe.keyId, signature: this.#observe.signV2(audience, fields) },
      ]);
    }
    return headers;
  }

  toString(): string {
    if (this.#audience !== undefined) {
      const observe = this.#observe === undefined ? "" : `, observe=${this.#observe.toString()}`;
      return `GateSigner(version=2, audience=${this.#audience}, key=${this.#key.toString()}${observe})`;
    }
    const previous = this.#dualWith === undefined ? "" : `, dualSignWith=${this.#dualWith.toString()}`;
    return `GateSigner(version=1, key=${this.#key.toString()}${previous})`;
  }

  toJSON(): object {
    return {
      version: this.version,
      key: this.#key.toJSON(),
      ...(this.#dualWith === undefined ? {} : { dualSignWith: this.#dualWith.toJSON() }),
      ...(this.#audience === undefined ? {} : { audience: this.#audience }),
      ...(this.#observe === undefined ? {} : { observe: this.#observe.toJSON() }),
    };
  }

  [INSPECT](): string {
    return this.toString();
  }
}

/**
 * The `X-Gate-*` headers for one request, in order, with every setting from the environment
 * (or the version 1 options given). Builds a {@link GateSigner} on every call: keep one with
 * `GateSigner.fromEnv()` where requests are many.
 */
export function signGateRequest(
  method: string,
  target: string,
  body?: Body,
  options: FromEnvOptions & SignOptions = {},
): SignatureHeaders {
  const { timestamp, nonce, ...fromEnv } = options;
  const sign: SignOptions = {};
  if (timestamp !== undefined) {
    sign.timestamp = timestamp;
  }
  if (nonce !== undefined) {
    sign.nonce = nonce;
  }
  return GateSigner.fromEnv(fromEnv).sign(method, target, body, sign);
}

/** 16 bytes from the OS CSPRNG as URL-safe base64 without padding (22 chars). */
export function newNonce(): string {
  return randomBytes(16).toString("base64url");
}

/** A key id from its option, else its variable, else the fallback; checked for syntax. */
function keyIdSetting(
  option: string | undefined,
  optionName: string,
  env: Environment,
  variable: string,
  fallback: string,
): string {
  const [value, source] = option !== undefined ? [option, optionName] : [config.envText(env, variable) ?? fallback, variable];
  if (typeof value !== "string" || !protocol.isKeyId(value)) {
    throw new GateConfigError(source, `${JSON.stringify(value)} is not a key id (1-64 chars of A-Z a-z 0-9 . _ : -)`);
  }
  return value;
}

/** The `X-Gate-Timestamp` value: now, or the given Unix seconds as 1-12 digits. */
function timestampText(timestamp: Timestamp | undefined): string {
  if (timestamp === undefined) {
    return String(Math.floor(Date.now() / 1000));
  }
  if (typeof timestamp === "number") {
    if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
      throw new SigningInputError("timestamp", `${timestamp} is not whole Unix seconds`);
    }
  } else if (typeof timestamp !== "string") {
    throw new TypeError("timestamp must be a number or a string");
  }
  const text = String(timestamp);
  if (!protocol.isTimestamp(text)) {
    throw new SigningInputError("timestamp", `${JSON.stringify(text)} is not Unix seconds as 1-12 decimal digits`);
  }
  return text;
}

/** The `X-Gate-Nonce` value: a fresh one, or the given one if well-formed. */
function nonceText(nonce: string | undefined): string {
  if (nonce === undefined) {
    return newNonce();
  }
  if (typeof nonce !== "string" || !protocol.isNonce(nonce)) {
    throw new SigningInputError("nonce", `${JSON.stringify(nonce)} is not valid (16-128 chars of A-Z a-z 0-9 _ -)`);
  }
  return nonce;
}
