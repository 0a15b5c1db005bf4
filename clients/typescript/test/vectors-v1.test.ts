/** tests/vectors/hmac-v1.json, which every implementation must reproduce: the signed string,
 * the body digest and the signature of each vector, and the exact headers of the dual-sign
 * cases, from the environment as a calling service configures it. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { GateSigner, HmacKey, protocol } from "../src/index.js";
import { fromBase64, readVectors } from "./harness.js";

interface Vector {
  name: string;
  secret: string;
  key_id: string;
  timestamp: string;
  nonce: string;
  method: string;
  target: string;
  body_base64: string;
  body_sha256: string;
  signed_string: string;
  signature: string;
}

interface DualSign {
  name: string;
  secret: string;
  key_id: string;
  prev_secret: string;
  prev_key_id: string;
  timestamp: string;
  nonce: string;
  method: string;
  target: string;
  body_base64: string;
  headers: Array<[string, string]>;
}

const file = readVectors<{ version: number; algorithm: string; vectors: Vector[]; dual_sign: DualSign[] }>("hmac-v1.json");

test("the file is version 1's, with vectors and dual-sign cases", () => {
  assert.equal(file.version, 1);
  assert.equal(file.algorithm, protocol.ALGORITHM_V1);
  assert.ok(file.vectors.length >= 10 && file.dual_sign.length >= 2);
});

describe("hmac-v1.json vectors", () => {
  for (const v of file.vectors) {
    test(v.name, () => {
      const body = fromBase64(v.body_base64);
      const digest = protocol.bodySha256(body);
      assert.equal(digest, v.body_sha256);
      const signed = protocol.signedStringV1(v.key_id, v.timestamp, v.nonce, v.method, v.target, digest);
      assert.equal(signed, v.signed_string);
      const secret = new TextEncoder().encode(v.secret);
      assert.equal(protocol.hmacSignature(secret, signed), v.signature);
      if (v.key_id === "") {
        return; // a request without X-Gate-Key-Id: no signer sends one
      }
      // The whole signer, configured from the environment as a calling service is.
      const signer = GateSigner.fromEnv({
        env: { INTERSERVICE_HMAC_SECRET: v.secret, INTERSERVICE_HMAC_KEY_ID: v.key_id },
      });
      const headers = signer.sign(v.method, v.target, body, { timestamp: v.timestamp, nonce: v.nonce });
      assert.deepEqual(Object.entries(headers), [
        ["X-Gate-Key-Id", v.key_id],
        ["X-Gate-Timestamp", v.timestamp],
        ["X-Gate-Nonce", v.nonce],
        ["X-Gate-Signature", v.signature],
      ]);
      const key = new HmacKey(v.key_id, secret);
      assert.equal(key.signV1({ timestamp: v.timestamp, nonce: v.nonce, method: v.method, target: v.target, bodyDigest: digest }), v.signature);
    });
  }
});

describe("hmac-v1.json dual-sign cases: the exact headers, in order", () => {
  for (const v of file.dual_sign) {
    test(v.name, () => {
      const signer = GateSigner.fromEnv({
        env: {
          INTERSERVICE_HMAC_SECRET: v.secret,
          INTERSERVICE_HMAC_KEY_ID: v.key_id,
          INTERSERVICE_HMAC_SECRET_PREV: v.prev_secret,
          INTERSERVICE_HMAC_KEY_ID_PREV: v.prev_key_id,
          TOOL_GATE_DUAL_SIGN: "true",
        },
      });
      const headers = signer.sign(v.method, v.target, fromBase64(v.body_base64), { timestamp: v.timestamp, nonce: v.nonce });
      assert.deepEqual(Object.entries(headers), v.headers);
    });
  }
});
