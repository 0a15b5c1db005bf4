/**
 * Reading the signer's settings from the environment, by the gate's own rules.
 *
 * A calling service and sig-gate are configured from the same variables (the gate's README,
 * "Configuration"), often from the same Kubernetes Secret, so this module follows the gate:
 * an empty value counts as unset, `<VAR>_FILE` may replace a secret (one trailing `\n` or
 * `\r\n` stripped), giving both is an error, booleans accept `true/false/1/0/yes/no` in any
 * case, and secrets shorter than 32 bytes are refused unless `GATE_ALLOW_WEAK_SECRET=true`. A
 * configuration the gate would refuse is refused here too, when the signer is built, rather
 * than producing signatures that fail at run time.
 *
 * Every error is a {@link GateConfigError} naming the variable (or option) at fault; no
 * message ever contains a secret.
 */

import { readFileSync } from "node:fs";

/** Version 1: the shared secret in force. */
export const SECRET = "INTERSERVICE_HMAC_SECRET";
/** Version 1: a file holding the shared secret. */
export const SECRET_FILE = "INTERSERVICE_HMAC_SECRET_FILE";
/** Version 1: the previous shared secret (dual-signing during a rotation). */
export const SECRET_PREV = "INTERSERVICE_HMAC_SECRET_PREV";
/** Version 1: a file holding the previous shared secret. */
export const SECRET_PREV_FILE = "INTERSERVICE_HMAC_SECRET_PREV_FILE";
/** Version 1: key id of the shared secret (default `current`). */
export const KEY_ID = "INTERSERVICE_HMAC_KEY_ID";
/** Version 1: key id of the previous secret (default `previous`). */
export const KEY_ID_PREV = "INTERSERVICE_HMAC_KEY_ID_PREV";
/** Version 1: send the current and the previous signature. */
export const DUAL_SIGN = "TOOL_GATE_DUAL_SIGN";
/** Accept secrets shorter than 32 bytes (tests only). */
export const ALLOW_WEAK_SECRET = "GATE_ALLOW_WEAK_SECRET";
/** Version 2: the caller's own key id. */
export const SIGNING_KEY_ID = "GATE_SIGNING_KEY_ID";
/** Version 2: a file holding the caller's HMAC secret or Ed25519 private key (PKCS#8 PEM). */
export const SIGNING_KEY_FILE = "GATE_SIGNING_KEY_FILE";
/** Version 2: `hmac-sha256` (default) or `ed25519`. */
export const SIGNING_ALG = "GATE_SIGNING_ALG";
/** Version 2: the audience of the gate the requests are for. */
export const AUDIENCE = "GATE_AUDIENCE";
/** Version 2: key id of an Ed25519 key whose signature the gate observes. */
export const OBSERVE_KEY_ID = "GATE_OBSERVE_KEY_ID";
/** Version 2: a file holding the observed Ed25519 private key (PKCS#8 PEM). */
export const OBSERVE_KEY_FILE = "GATE_OBSERVE_KEY_FILE";

/**
 * Any of these set asks for version 2. `GATE_AUDIENCE` alone does not: a service may hold it for
 * other reasons (it is also the gate's own variable), and it says nothing about keys.
 */
export const VERSION_2_SETTINGS = [
  SIGNING_KEY_ID,
  SIGNING_KEY_FILE,
  SIGNING_ALG,
  OBSERVE_KEY_ID,
  OBSERVE_KEY_FILE,
] as const;
/** The variables version 2 cannot do without. */
export const VERSION_2_REQUIRED = [SIGNING_KEY_ID, SIGNING_KEY_FILE, AUDIENCE] as const;

/** Default version 1 key id of the current secret. */
export const DEFAULT_KEY_ID = "current";
/** Default version 1 key id of the previous secret. */
export const DEFAULT_KEY_ID_PREV = "previous";
/** Shortest secret accepted without `GATE_ALLOW_WEAK_SECRET=true`. */
export const MIN_SECRET_BYTES = 32;

/** The environment to read: `process.env` by default; tests pass a plain object. */
export type Environment = Readonly<Record<string, string | undefined>>;

/**
 * The signer's configuration was refused. `variable` names the environment variable (or the
 * option, for values passed in code) at fault, so callers can point at it without parsing the
 * message.
 */
export class GateConfigError extends Error {
  override readonly name = "GateConfigError";

  constructor(
    readonly variable: string,
    readonly problem: string,
  ) {
    super(`${variable}: ${problem}`);
  }
}

/** The gate's boolean spellings (any case), or `undefined` for anything else. */
export function parseBool(value: string): boolean | undefined {
  const lowered = value.toLowerCase();
  if (lowered === "true" || lowered === "1" || lowered === "yes") {
    return true;
  }
  if (lowered === "false" || lowered === "0" || lowered === "no") {
    return false;
  }
  return undefined;
}

/** The value of `name`, with empty treated as unset (how manifests "unset" a variable). */
export function envText(env: Environment, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === "" ? undefined : value;
}

/** A boolean variable; an unknown spelling is an error naming the variable. */
export function envBool(env: Environment, name: string, fallback: boolean): boolean {
  const value = envText(env, name);
  if (value === undefined) {
    return fallback;
  }
  const parsed = parseBool(value);
  if (parsed === undefined) {
    throw new GateConfigError(name, `${JSON.stringify(value)} is not a boolean (true/false/1/0/yes/no)`);
  }
  return parsed;
}

/** The bytes of a key file, or an error naming the variable and the path. */
export function readKeyFile(variable: string, path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new GateConfigError(variable, `cannot read ${path}: ${code}`);
  }
}

/**
 * Read a secret file, stripping one trailing `\n` or `\r\n` (editors and `echo` add one;
 * Kubernetes Secret volumes usually do not). The content must be UTF-8 text, as the gate's is.
 */
export function readSecretFile(variable: string, path: string): Uint8Array {
  let data = readKeyFile(variable, path);
  if (endsWith(data, [13, 10])) {
    data = data.subarray(0, data.length - 2);
  } else if (endsWith(data, [10])) {
    data = data.subarray(0, data.length - 1);
  }
  if (!isUtf8(data)) {
    throw new GateConfigError(variable, `${path} is not UTF-8 text`);
  }
  return data;
}

/** A secret given directly or through `<VAR>_FILE` (never both), or `undefined` if unset. */
export function secretFromEnv(
  env: Environment,
  variable: string,
  fileVariable: string,
): Uint8Array | undefined {
  const direct = envText(env, variable);
  const path = envText(env, fileVariable);
  if (direct !== undefined && path !== undefined) {
    throw new GateConfigError(variable, `given both directly and as ${fileVariable}: keep one`);
  }
  if (direct !== undefined) {
    return new TextEncoder().encode(direct);
  }
  return path === undefined ? undefined : readSecretFile(fileVariable, path);
}

/** A secret passed in code, as bytes: text as UTF-8. Only the type is reported on error. */
export function secretFromOption(option: string, value: unknown): Uint8Array {
  if (typeof value === "string") {
    return new TextEncoder().encode(value);
  }
  if (value instanceof Uint8Array) {
    return Uint8Array.from(value);
  }
  throw new TypeError(`${option} must be a string or a Uint8Array`);
}

/**
 * Refuse empty secrets, and short ones unless weak secrets are allowed: the gate refuses to
 * start with a short secret, so a signer holding one is a misconfiguration worth reporting
 * before the first request.
 */
export function checkSecretStrength(variable: string, secret: Uint8Array, allowWeak: boolean): void {
  if (secret.length === 0) {
    throw new GateConfigError(variable, "is empty");
  }
  if (secret.length < MIN_SECRET_BYTES && !allowWeak) {
    throw new GateConfigError(
      variable,
      `is ${secret.length} bytes, shorter than ${MIN_SECRET_BYTES} (generate one with ` +
        `\`sig-gate keygen\`, or set ${ALLOW_WEAK_SECRET}=true to accept it)`,
    );
  }
}

function endsWith(data: Uint8Array, suffix: number[]): boolean {
  return data.length >= suffix.length && suffix.every((b, i) => data[data.length - suffix.length + i] === b);
}

function isUtf8(data: Uint8Array): boolean {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(data);
    return true;
  } catch {
    return false;
  }
}
