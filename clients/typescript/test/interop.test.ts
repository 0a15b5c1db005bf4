/** Live interop: the fetch and axios adapters against the real `sig-gate serve` on loopback, in
 * front of a recording upstream. Accepted requests must arrive byte for byte with the gate's
 * verified key id; refused ones get the gate's 401 and never reach the upstream. Version 2 runs
 * against a gate that reads a key registry (GATE_KEYS_FILE); a gate built without one is
 * reported and the version 2 cases are skipped. */

import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import axios from "axios";

import { Ed25519Key, GateSigner, HmacKey, gateFetch, signAxiosRequests } from "../src/index.js";
import { GateProcess, RecordingUpstream, gateBinary, header, runGate, tempDir, writeKeyFile, type Received } from "./harness.js";

const NEW = "ts-interop-new-secret-0123456789abcdefghij";
const OLD = "ts-interop-old-secret-0123456789abcdefghij";
const encoder = new TextEncoder();
const UNICODE_JSON = JSON.stringify({ query: "café ☕ 東京", tags: ["naïve", "résumé"] });

/** Request shapes the vectors cover, now over real sockets: [method, target as sent, body]. */
const SHAPES: Array<[string, string, string | Uint8Array | undefined]> = [
  ["POST", "/tools/search?q=a+b&r=c%20d&tag=x&tag=y&tag=x", UNICODE_JSON],
  ["GET", "/files/a%2Fb%20c", undefined],
  ["PATCH", "/tools/42", '{"enabled":false}'],
  ["PURGE", "/cache/tools", undefined],
  ["PUT", "/blobs/upload", Uint8Array.from({ length: 256 }, (_, i) => i)],
  ["GET", "/", undefined],
];

type Send = (method: string, target: string, body: string | Uint8Array | undefined) => Promise<{ status: number; body: string }>;

/** Senders through each adapter, signing with `signer`, to `gate`. */
function senders(signer: GateSigner, gate: GateProcess): Array<[string, Send]> {
  const fetch = gateFetch({ signer });
  const client = axios.create({ baseURL: gate.proxyUrl, proxy: false, validateStatus: () => true, transformResponse: (d: unknown) => d });
  signAxiosRequests(client, signer);
  return [
    [
      "fetch",
      async (method, target, body) => {
        const reply = await fetch(gate.proxyUrl + target, body === undefined ? { method } : { method, body });
        return { status: reply.status, body: await reply.text() };
      },
    ],
    [
      "axios",
      async (method, target, body) => {
        const data = body instanceof Uint8Array ? Buffer.from(body) : body;
        const reply = await client.request({ method, url: target, data, responseType: "text" });
        return { status: reply.status, body: String(reply.data) };
      },
    ],
  ];
}

function assertArrived(received: Received, method: string, target: string, body: string | Uint8Array | undefined): void {
  assert.equal(received.method, method);
  assert.equal(received.target, target);
  const expected = body === undefined ? new Uint8Array(0) : typeof body === "string" ? encoder.encode(body) : body;
  assert.deepEqual([...received.body], [...expected], `${method} ${target}: body`);
}

let upstream: RecordingUpstream;
const gates: GateProcess[] = [];
before(async () => {
  upstream = await RecordingUpstream.start();
});
after(async () => {
  for (const gate of gates) {
    assert.equal(await gate.stop(), 0, "the gate drains and exits 0");
  }
  await upstream.stop();
});

async function startGate(env: Record<string, string>): Promise<GateProcess> {
  const gate = await GateProcess.start(upstream.url, env);
  gates.push(gate);
  return gate;
}

describe("version 1 against the real gate", () => {
  test("single secret: every request shape through fetch and axios arrives as signed", async () => {
    const gate = await startGate({ INTERSERVICE_HMAC_SECRET: NEW });
    const signer = GateSigner.fromEnv({ env: { INTERSERVICE_HMAC_SECRET: NEW } });
    for (const [adapter, send] of senders(signer, gate)) {
      for (const [method, target, body] of SHAPES) {
        const reply = await send(method, target, body);
        assert.equal(reply.status, 200, `${adapter} ${method} ${target}: ${reply.body}`);
        const received = upstream.take();
        assertArrived(received, method, target, body);
        assert.equal(header(received, "x-gate-verified-key-id"), "current");
      }
    }
  });

  test("dual-signing during a rotation passes gates on either side of it, strict key ids included", async () => {
    const signer = GateSigner.fromEnv({
      env: {
        INTERSERVICE_HMAC_SECRET: NEW,
        INTERSERVICE_HMAC_KEY_ID: "k-2026-12",
        INTERSERVICE_HMAC_SECRET_PREV: OLD,
        INTERSERVICE_HMAC_KEY_ID_PREV: "k-2026-09",
        TOOL_GATE_DUAL_SIGN: "true",
      },
    });
    const gates: Array<[string, Record<string, string>, string]> = [
      ["old gate", { INTERSERVICE_HMAC_SECRET: OLD, INTERSERVICE_HMAC_KEY_ID: "k-2026-09", INTERSERVICE_HMAC_STRICT_KEY_ID: "true" }, "k-2026-09"],
      ["new gate", { INTERSERVICE_HMAC_SECRET: NEW, INTERSERVICE_HMAC_KEY_ID: "k-2026-12", INTERSERVICE_HMAC_STRICT_KEY_ID: "true" }, "k-2026-12"],
    ];
    for (const [name, env, verified] of gates) {
      const gate = await startGate(env);
      for (const [adapter, send] of senders(signer, gate)) {
        const reply = await send("POST", "/tools/call?x=1", UNICODE_JSON);
        assert.equal(reply.status, 200, `${name} via ${adapter}: ${reply.body}`);
        assert.equal(header(upstream.take(), "x-gate-verified-key-id"), verified);
      }
    }
  });

  test("a wrong secret gets the gate's 401 and nothing reaches the upstream; a replay is refused", async () => {
    const gate = await startGate({ INTERSERVICE_HMAC_SECRET: NEW });
    const wrong = GateSigner.version1(new HmacKey("current", encoder.encode(OLD)));
    for (const [adapter, send] of senders(wrong, gate)) {
      const reply = await send("POST", "/tools/call", "{}");
      assert.equal(reply.status, 401, adapter);
      assert.equal(reply.body, '{"error":"invalid request signature","reason":"bad_signature"}');
      assert.equal(upstream.received.length, 0);
    }
    // The same signed headers twice: the nonce was used.
    const headers = GateSigner.fromEnv({ env: { INTERSERVICE_HMAC_SECRET: NEW } }).sign("GET", "/once");
    assert.equal((await fetch(`${gate.proxyUrl}/once`, { headers })).status, 200);
    upstream.take();
    const replayed = await fetch(`${gate.proxyUrl}/once`, { headers });
    assert.equal(replayed.status, 401);
    assert.equal(await replayed.text(), '{"error":"invalid request signature","reason":"replayed_nonce"}');
    assert.equal(upstream.received.length, 0);
  });
});

describe("version 2 against the real gate", () => {
  const files = tempDir("sig-gate-ts-interop-");
  after(() => files.remove());
  const ed = generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString();
  const next = generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString();
  const hmacSecret = "ts-interop-registry-secret-0123456789abcdef";
  const registry = join(files.path, "keys.toml");
  writeKeyFile(files.path, "agent.secret", `${hmacSecret}\n`);
  writeKeyFile(
    files.path,
    "keys.toml",
    [
      "[[key]]",
      'id = "agent-hmac-2026-12"',
      'caller = "agent"',
      'alg = "hmac-sha256"',
      'secret_file = "agent.secret"',
      "",
      "[[key]]",
      'id = "agent-ed-2026-12"',
      'caller = "agent"',
      'alg = "ed25519"',
      `public_key = "${Ed25519Key.fromPem("agent-ed-2026-12", ed).publicKey}"`,
      "",
      "[[key]]",
      'id = "agent-ed-2027-03"',
      'caller = "agent"',
      'alg = "ed25519"',
      `public_key = "${Ed25519Key.fromPem("agent-ed-2027-03", next).publicKey}"`,
      "observe = true",
      "",
    ].join("\n"),
  );
  const gateEnv = { GATE_KEYS_FILE: registry, GATE_AUDIENCE: "tool-gate" };

  /** Why the version 2 cases cannot run against this binary, or undefined when they can. */
  async function unsupported(): Promise<string | undefined> {
    const checked = await runGate(["check-config"], gateEnv);
    if (checked.code === 0) {
      return undefined;
    }
    // A gate without a key registry ignores GATE_KEYS_FILE and asks for the shared secret.
    if (checked.code === 2 && /INTERSERVICE_HMAC_SECRET: required/.test(checked.stderr)) {
      return `${gateBinary()} does not read GATE_KEYS_FILE yet (check-config: ${checked.stderr.trim()})`;
    }
    assert.fail(`check-config refused the test registry: exit ${checked.code}\n${checked.stdout}${checked.stderr}`);
  }

  test("HMAC and Ed25519 keys from GATE_SIGNING_*, with an observed key, through fetch and axios", async (t) => {
    const reason = await unsupported();
    if (reason !== undefined) {
      console.log(`SKIP version 2 live interop: ${reason}`);
      t.skip(reason);
      return;
    }
    const gate = await startGate(gateEnv);
    const hmacFile = join(files.path, "agent.secret");
    const edFile = writeKeyFile(files.path, "agent-ed.pem", ed);
    const nextFile = writeKeyFile(files.path, "agent-next.pem", next);
    const signers: Array<[string, Record<string, string>, string]> = [
      ["hmac", { GATE_SIGNING_KEY_ID: "agent-hmac-2026-12", GATE_SIGNING_KEY_FILE: hmacFile }, "agent-hmac-2026-12"],
      ["ed25519", { GATE_SIGNING_KEY_ID: "agent-ed-2026-12", GATE_SIGNING_ALG: "ed25519", GATE_SIGNING_KEY_FILE: edFile }, "agent-ed-2026-12"],
      [
        "ed25519 + observed",
        { GATE_SIGNING_KEY_ID: "agent-ed-2026-12", GATE_SIGNING_ALG: "ed25519", GATE_SIGNING_KEY_FILE: edFile, GATE_OBSERVE_KEY_ID: "agent-ed-2027-03", GATE_OBSERVE_KEY_FILE: nextFile },
        "agent-ed-2026-12",
      ],
    ];
    for (const [name, env, keyId] of signers) {
      const signer = GateSigner.fromEnv({ env: { ...env, GATE_AUDIENCE: "tool-gate" } });
      for (const [adapter, send] of senders(signer, gate)) {
        for (const [method, target, body] of SHAPES) {
          const reply = await send(method, target, body);
          assert.equal(reply.status, 200, `${name} via ${adapter}, ${method} ${target}: ${reply.body}`);
          const received = upstream.take();
          assertArrived(received, method, target, body);
          assert.equal(header(received, "x-gate-verified-key-id"), keyId);
          assert.equal(header(received, "x-gate-verified-caller"), "agent");
        }
      }
    }
    // Signed for another gate's audience: refused, and nothing arrives.
    const elsewhere = GateSigner.fromEnv({
      env: { GATE_SIGNING_KEY_ID: "agent-ed-2026-12", GATE_SIGNING_ALG: "ed25519", GATE_SIGNING_KEY_FILE: edFile, GATE_AUDIENCE: "billing-gate" },
    });
    const refused = await gateFetch({ signer: elsewhere })(`${gate.proxyUrl}/tools/call`, { method: "POST", body: "{}" });
    assert.equal(refused.status, 401);
    assert.equal(upstream.received.length, 0);
  });
});
