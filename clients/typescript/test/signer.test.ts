/** The signer's configuration and input rules: each refusal names its variable (or option) and
 * never shows a secret; version 1 and version 2 are chosen by the environment as in the Python
 * client; nonces and timestamps are generated or checked. */

import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { inspect } from "node:util";
import { after, describe, test } from "node:test";

import { Ed25519Key, GateConfigError, GateSigner, HmacKey, SigningInputError, newNonce, signGateRequest } from "../src/index.js";
import { tempDir, writeKeyFile } from "./harness.js";

const SECRET = "ts-signer-secret-0123456789abcdefghijklmn";
const OLD = "ts-signer-old-secret-0123456789abcdefghijk";
const files = tempDir("sig-gate-ts-signer-");
after(() => files.remove());

const edPem = generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString();
const edFile = writeKeyFile(files.path, "ed.pem", edPem);
const otherEdFile = writeKeyFile(
  files.path,
  "other.pem",
  generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
);
const hmacFile = writeKeyFile(files.path, "hmac.key", `${SECRET}\r\n`);

/** The variable a configuration is refused for. */
function refusedFor(env: Record<string, string>, options: Parameters<typeof GateSigner.fromEnv>[0] = {}): string {
  try {
    GateSigner.fromEnv({ ...options, env });
  } catch (err) {
    assert.ok(err instanceof GateConfigError, `a GateConfigError, got ${String(err)}`);
    for (const secret of [SECRET, OLD, edPem.split("\n")[1] ?? "?"]) {
      assert.ok(!err.message.includes(secret), `the message shows a secret: ${err.message}`);
    }
    assert.ok(err.message.startsWith(`${err.variable}: `));
    return err.variable;
  }
  assert.fail(`accepted ${JSON.stringify(Object.keys(env))}`);
}

describe("version 1 configuration", () => {
  test("defaults: key id current, single signature", () => {
    const signer = GateSigner.fromEnv({ env: { INTERSERVICE_HMAC_SECRET: SECRET } });
    assert.equal(signer.version, 1);
    assert.equal(signer.keyId, "current");
    assert.equal(signer.dualSign, false);
    const headers = signer.sign("GET", "/x");
    assert.deepEqual(Object.keys(headers), ["X-Gate-Key-Id", "X-Gate-Timestamp", "X-Gate-Nonce", "X-Gate-Signature"]);
  });

  test("a secret file with its trailing CRLF stripped signs as the secret itself", () => {
    const fromFile = GateSigner.fromEnv({ env: { INTERSERVICE_HMAC_SECRET_FILE: hmacFile } });
    const direct = GateSigner.fromEnv({ env: { INTERSERVICE_HMAC_SECRET: SECRET } });
    const fixed = { timestamp: 1764000000, nonce: "fixed-nonce-000000001" };
    assert.deepEqual(fromFile.sign("POST", "/a?b", "{}", fixed), direct.sign("POST", "/a?b", "{}", fixed));
  });

  test("every refusal names its variable", () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{}, "INTERSERVICE_HMAC_SECRET"],
      [{ INTERSERVICE_HMAC_SECRET: "short" }, "INTERSERVICE_HMAC_SECRET"],
      [{ INTERSERVICE_HMAC_SECRET: SECRET, INTERSERVICE_HMAC_SECRET_FILE: hmacFile }, "INTERSERVICE_HMAC_SECRET"],
      [{ INTERSERVICE_HMAC_SECRET_FILE: `${files.path}/missing` }, "INTERSERVICE_HMAC_SECRET_FILE"],
      [{ INTERSERVICE_HMAC_SECRET: SECRET, INTERSERVICE_HMAC_KEY_ID: "bad id" }, "INTERSERVICE_HMAC_KEY_ID"],
      [{ INTERSERVICE_HMAC_SECRET: SECRET, INTERSERVICE_HMAC_SECRET_PREV: "short" }, "INTERSERVICE_HMAC_SECRET_PREV"],
      [{ INTERSERVICE_HMAC_SECRET: SECRET, INTERSERVICE_HMAC_SECRET_PREV: SECRET }, "INTERSERVICE_HMAC_SECRET_PREV"],
      [
        { INTERSERVICE_HMAC_SECRET: SECRET, INTERSERVICE_HMAC_SECRET_PREV: OLD, INTERSERVICE_HMAC_KEY_ID: "k", INTERSERVICE_HMAC_KEY_ID_PREV: "k" },
        "INTERSERVICE_HMAC_KEY_ID_PREV",
      ],
      [{ INTERSERVICE_HMAC_SECRET: SECRET, TOOL_GATE_DUAL_SIGN: "true" }, "TOOL_GATE_DUAL_SIGN"],
      [{ INTERSERVICE_HMAC_SECRET: SECRET, TOOL_GATE_DUAL_SIGN: "maybe" }, "TOOL_GATE_DUAL_SIGN"],
      [{ INTERSERVICE_HMAC_SECRET: "short", GATE_ALLOW_WEAK_SECRET: "2" }, "GATE_ALLOW_WEAK_SECRET"],
    ];
    for (const [env, variable] of cases) {
      assert.equal(refusedFor(env), variable, JSON.stringify(Object.keys(env)));
    }
  });

  test("empty values count as unset; booleans take the gate's spellings in any case", () => {
    const signer = GateSigner.fromEnv({
      env: { INTERSERVICE_HMAC_SECRET: SECRET, INTERSERVICE_HMAC_KEY_ID: "", INTERSERVICE_HMAC_SECRET_PREV: OLD, TOOL_GATE_DUAL_SIGN: "YES" },
    });
    assert.equal(signer.keyId, "current");
    assert.equal(signer.dualSign, true);
    assert.equal(GateSigner.fromEnv({ env: { INTERSERVICE_HMAC_SECRET: "short", GATE_ALLOW_WEAK_SECRET: "True" } }).version, 1);
  });

  test("options passed in code win over the environment", () => {
    const signer = GateSigner.fromEnv({ env: { INTERSERVICE_HMAC_SECRET: OLD }, secret: SECRET, keyId: "k-2026" });
    const reference = GateSigner.version1(new HmacKey("k-2026", new TextEncoder().encode(SECRET)));
    const fixed = { timestamp: "1", nonce: "fixed-nonce-000000002" };
    assert.deepEqual(signer.sign("GET", "/", undefined, fixed), reference.sign("GET", "/", undefined, fixed));
  });
});

describe("version 2 configuration", () => {
  const base = { GATE_SIGNING_KEY_ID: "svc-ed-1", GATE_SIGNING_ALG: "ed25519", GATE_SIGNING_KEY_FILE: edFile, GATE_AUDIENCE: "tool-gate" };

  test("any GATE_SIGNING_* or GATE_OBSERVE_* variable selects version 2; GATE_AUDIENCE alone does not", () => {
    const signer = GateSigner.fromEnv({ env: { ...base, INTERSERVICE_HMAC_SECRET: SECRET } });
    assert.equal(signer.version, 2);
    assert.equal(signer.audience, "tool-gate");
    const headers = signer.sign("GET", "/x");
    assert.equal(headers["X-Gate-Version"], "2");
    assert.match(headers["X-Gate-Signature"] ?? "", /^[0-9a-f]{128}$/);
    assert.equal(GateSigner.fromEnv({ env: { INTERSERVICE_HMAC_SECRET: SECRET, GATE_AUDIENCE: "tool-gate" } }).version, 1);
  });

  test("an HMAC key file signs 64 hex chars; the algorithm defaults to hmac-sha256", () => {
    const signer = GateSigner.fromEnv({ env: { GATE_SIGNING_KEY_ID: "svc-1", GATE_SIGNING_KEY_FILE: hmacFile, GATE_AUDIENCE: "tool-gate" } });
    assert.match(signer.sign("GET", "/x")["X-Gate-Signature"] ?? "", /^[0-9a-f]{64}$/);
  });

  test("an observe key adds X-Gate-Signatures after the header pair", () => {
    const signer = GateSigner.fromEnv({ env: { ...base, GATE_OBSERVE_KEY_ID: "svc-ed-2", GATE_OBSERVE_KEY_FILE: otherEdFile } });
    const headers = signer.sign("GET", "/x");
    const entries = JSON.parse(headers["X-Gate-Signatures"] ?? "[]") as Array<{ key_id: string; signature: string }>;
    assert.deepEqual(
      entries.map((e) => e.key_id),
      ["svc-ed-1", "svc-ed-2"],
    );
    assert.equal(entries[0]?.signature, headers["X-Gate-Signature"]);
    assert.equal(signer.observeKeyId, "svc-ed-2");
  });

  test("every refusal names its variable", () => {
    const pemAsHmac = { GATE_SIGNING_KEY_ID: "svc", GATE_SIGNING_KEY_FILE: edFile, GATE_AUDIENCE: "tool-gate" };
    const cases: Array<[Record<string, string>, string]> = [
      [{ GATE_SIGNING_KEY_ID: "svc", GATE_AUDIENCE: "tool-gate" }, "GATE_SIGNING_KEY_FILE"],
      [{ GATE_SIGNING_KEY_FILE: edFile, GATE_SIGNING_ALG: "ed25519", GATE_AUDIENCE: "tool-gate" }, "GATE_SIGNING_KEY_ID"],
      [{ ...base, GATE_AUDIENCE: "" }, "GATE_AUDIENCE"],
      [{ ...base, GATE_AUDIENCE: "tool gate" }, "GATE_AUDIENCE"],
      [{ ...base, GATE_SIGNING_ALG: "rsa" }, "GATE_SIGNING_ALG"],
      [{ ...base, GATE_SIGNING_KEY_ID: "bad id" }, "GATE_SIGNING_KEY_ID"],
      [pemAsHmac, "GATE_SIGNING_KEY_FILE"],
      [{ ...base, GATE_SIGNING_KEY_FILE: hmacFile }, "GATE_SIGNING_KEY_FILE"],
      [{ ...base, GATE_SIGNING_KEY_FILE: `${files.path}/missing.pem` }, "GATE_SIGNING_KEY_FILE"],
      [{ ...base, GATE_OBSERVE_KEY_ID: "svc-ed-2" }, "GATE_OBSERVE_KEY_FILE"],
      [{ ...base, GATE_OBSERVE_KEY_FILE: otherEdFile }, "GATE_OBSERVE_KEY_ID"],
      [{ ...base, GATE_OBSERVE_KEY_ID: "svc-ed-1", GATE_OBSERVE_KEY_FILE: otherEdFile }, "GATE_OBSERVE_KEY_ID"],
      [{ ...base, GATE_OBSERVE_KEY_ID: "svc-ed-2", GATE_OBSERVE_KEY_FILE: hmacFile }, "GATE_OBSERVE_KEY_FILE"],
    ];
    for (const [env, variable] of cases) {
      assert.equal(refusedFor(env), variable, JSON.stringify(env));
    }
    assert.equal(refusedFor(base, { secret: SECRET }), "GATE_SIGNING_KEY_ID", "version 1 options with version 2 variables");
  });

  test("an encrypted key is refused by name, without asking for a passphrase", () => {
    const encrypted = generateKeyPairSync("ed25519").privateKey.export({
      format: "pem",
      type: "pkcs8",
      cipher: "aes-256-cbc",
      passphrase: "not-used-by-the-signer",
    });
    const file = writeKeyFile(files.path, "encrypted.pem", encrypted.toString());
    assert.throws(() => GateSigner.fromEnv({ env: { ...base, GATE_SIGNING_KEY_FILE: file } }), /encrypted/);
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({ format: "pem", type: "pkcs8" });
    const rsaFile = writeKeyFile(files.path, "rsa.pem", rsa.toString());
    assert.throws(() => GateSigner.fromEnv({ env: { ...base, GATE_SIGNING_KEY_FILE: rsaFile } }), /an rsa key, not an Ed25519/);
  });
});

describe("no secret is ever shown", () => {
  test("inspect, String and JSON give key ids and fingerprints only", () => {
    const v1 = GateSigner.fromEnv({ env: { INTERSERVICE_HMAC_SECRET: SECRET, INTERSERVICE_HMAC_SECRET_PREV: OLD, TOOL_GATE_DUAL_SIGN: "1" } });
    const ed = Ed25519Key.fromPem("svc-ed-1", edPem);
    const v2 = GateSigner.version2(ed, "tool-gate");
    for (const shown of [inspect(v1), String(v1), JSON.stringify(v1), inspect(v2), JSON.stringify(v2), inspect(ed), inspect(v1, { showHidden: true, depth: 10 })]) {
      for (const secret of [SECRET, OLD, edPem.split("\n")[1] ?? "?"]) {
        assert.ok(!shown.includes(secret), `shown: ${shown}`);
      }
      assert.match(shown, /fingerprint/);
    }
    assert.match(inspect(v2), new RegExp(ed.publicKey));
  });
});

describe("request values", () => {
  const signer = GateSigner.fromEnv({ env: { INTERSERVICE_HMAC_SECRET: SECRET } });

  test("nonces are 22 URL-safe chars and differ; timestamps default to now", () => {
    const nonces = new Set(Array.from({ length: 100 }, () => newNonce()));
    assert.equal(nonces.size, 100);
    for (const nonce of nonces) {
      assert.match(nonce, /^[A-Za-z0-9_-]{22}$/);
    }
    const stamped = Number(signer.sign("GET", "/")["X-Gate-Timestamp"]);
    assert.ok(Math.abs(stamped - Date.now() / 1000) < 600);
  });

  test("malformed method, target, timestamp and nonce are refused by field", () => {
    const cases: Array<[() => unknown, string]> = [
      [() => signer.sign("GE T", "/"), "method"],
      [() => signer.sign("GET", "http://h/x"), "target"],
      [() => signer.sign("GET", "/caf\u00e9"), "target"],
      [() => signer.sign("GET", "/", undefined, { timestamp: -1 }), "timestamp"],
      [() => signer.sign("GET", "/", undefined, { timestamp: "1e9" }), "timestamp"],
      [() => signer.sign("GET", "/", undefined, { nonce: "short" }), "nonce"],
    ];
    for (const [call, field] of cases) {
      assert.throws(call, (err: unknown) => err instanceof SigningInputError && err.field === field);
    }
    assert.throws(() => signer.sign("POST", "/", { json: true } as never), TypeError);
  });

  test("signGateRequest reads the environment it is given", () => {
    const fixed = { timestamp: 1764000000, nonce: "fixed-nonce-000000003" };
    assert.deepEqual(
      signGateRequest("GET", "/x", "", { env: { INTERSERVICE_HMAC_SECRET: SECRET }, ...fixed }),
      signer.sign("GET", "/x", "", fixed),
    );
  });
});
