/**
 * Real processes and sockets for the tests, and an independent verifier.
 *
 * Nothing here is mocked: the upstream is a `node:http` server on 127.0.0.1 port 0 that records
 * every request exactly as it arrived, and the gate is the real `sig-gate serve` binary, started
 * with its own environment and found through its `listening` log line. The verifier recomputes
 * signatures from docs/protocol.md with `node:crypto` alone, sharing no code with the package,
 * so a bug in the package's own signed strings cannot make the adapter tests pass.
 */

import { spawn, type ChildProcessByStdio } from "node:child_process";
import { createHash, createHmac, createPublicKey, verify as cryptoVerify } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";

/** The repository root (this file runs from clients/typescript/build/test/). */
export const REPO = fileURLToPath(new URL("../../../../", import.meta.url));

/**
 * A vector file of tests/vectors, parsed. A missing file fails the test that asked for it:
 * every language's suite reads the same files, and a suite that skipped them would pass
 * without checking anything.
 */
export function readVectors<T>(name: string): T {
  const path = join(REPO, "tests", "vectors", name);
  if (!existsSync(path)) {
    throw new Error(`tests/vectors/${name} is missing: the TypeScript client is checked against it (${path})`);
  }
  return JSON.parse(readFileSync(path, "utf8")) as T;
}

/** Standard base64 to bytes. */
export function fromBase64(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, "base64"));
}

/** A directory under the OS temp dir, removed by the returned function. */
export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Write `content` to `dir/name` (mode 0600) and return the path. */
export function writeKeyFile(dir: string, name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content, { mode: 0o600 });
  return path;
}

// ------------------------------------------------------------------------ the verifier

/** The parts of a received request a signature covers. */
export interface Received {
  method: string;
  /** The request target exactly as it arrived: raw path plus optional `?query`. */
  target: string;
  /** Header lines as they arrived, names lowercased. */
  headers: Array<[string, string]>;
  body: Uint8Array;
}

/** The one value of header `name` (lowercase); fails on duplicates. */
export function header(received: Received, name: string): string | undefined {
  const values = received.headers.filter(([n]) => n === name).map(([, v]) => v);
  if (values.length > 1) {
    throw new Error(`${name} arrived ${values.length} times`);
  }
  return values[0];
}

function independentLines(received: Received): [string, string, string, string, string, string] {
  const at = received.target.indexOf("?");
  const path = at < 0 ? received.target : received.target.slice(0, at);
  const query = at < 0 ? "" : received.target.slice(at + 1);
  const digest = createHash("sha256").update(received.body).digest("hex");
  return [header(received, "x-gate-timestamp") ?? "", header(received, "x-gate-nonce") ?? "", received.method, path, query, digest];
}

/** The version 1 HMAC a verifier computes for `keyId` over what arrived. */
export function expectedV1(received: Received, secret: string, keyId: string): string {
  const [timestamp, nonce, method, path, query, digest] = independentLines(received);
  const message = ["GATE-HMAC-SHA256", keyId, timestamp, nonce, method, path, query, digest].join("\n");
  return createHmac("sha256", Buffer.from(secret, "utf8")).update(Buffer.from(message, "utf8")).digest("hex");
}

function messageV2(received: Received, alg: string, keyId: string, audience: string): Buffer {
  const [timestamp, nonce, method, path, query, digest] = independentLines(received);
  return Buffer.from(["GATE-SIG-V2", alg, keyId, audience, timestamp, nonce, method, path, query, digest].join("\n"), "utf8");
}

/** The version 2 HMAC a verifier computes over what arrived. */
export function expectedV2Hmac(received: Received, secret: string, keyId: string, audience: string): string {
  return createHmac("sha256", Buffer.from(secret, "utf8"))
    .update(messageV2(received, "hmac-sha256", keyId, audience))
    .digest("hex");
}

/** Whether `signatureHex` is a valid Ed25519 signature over what arrived, for the public key
 * given in the registry's form (base64url of 32 bytes). */
export function verifiesEd25519(
  received: Received,
  publicKey: string,
  keyId: string,
  audience: string,
  signatureHex: string,
): boolean {
  const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: publicKey }, format: "jwk" });
  return cryptoVerify(null, messageV2(received, "ed25519", keyId, audience), key, Buffer.from(signatureHex, "hex"));
}

// -------------------------------------------------------------------- recording upstream

/** An HTTP/1.1 server on 127.0.0.1:0 standing in for tool-gate: 200 and a small JSON body for
 * every request, each recorded as it arrived. */
export class RecordingUpstream {
  readonly received: Received[] = [];
  readonly #server: Server;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(): Promise<RecordingUpstream> {
    const server = createServer();
    const upstream = new RecordingUpstream(server);
    server.on("request", (request: IncomingMessage, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const headers: Array<[string, string]> = [];
        for (let i = 0; i < request.rawHeaders.length; i += 2) {
          headers.push([(request.rawHeaders[i] ?? "").toLowerCase(), request.rawHeaders[i + 1] ?? ""]);
        }
        upstream.received.push({
          method: request.method ?? "",
          target: request.url ?? "",
          headers,
          body: new Uint8Array(Buffer.concat(chunks)),
        });
        const payload = JSON.stringify({ ok: true, method: request.method, target: request.url });
        response.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(payload) });
        response.end(payload);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return upstream;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** The one request received since the last call; fails if there is not exactly one. */
  take(): Received {
    if (this.received.length !== 1) {
      throw new Error(`expected one request at the upstream, got ${this.received.length}`);
    }
    return this.received.shift() as Received;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------- the gate

/** The gate binary: `SIG_GATE_BIN`, else the debug build of this checkout. */
export function gateBinary(): string {
  return process.env["SIG_GATE_BIN"] ?? join(REPO, "target", "debug", "sig-gate");
}

/** The environment a child gate starts from: this one without any setting of the gate's, so
 * nothing from the caller's shell changes it. */
function cleanEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !/^(GATE_|INTERSERVICE_|REQUIRE_SIGNATURE|TOOL_GATE_|LISTEN_)/.test(name)) {
      env[name] = value;
    }
  }
  return env;
}

/** Run `sig-gate ARGS` to completion with `env` added to a clean environment. */
export async function runGate(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(gateBinary(), args, { env: { ...cleanEnv(), ...env }, cwd: tmpdir(), stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  return { code, stdout, stderr };
}

/** A running `sig-gate serve` on 127.0.0.1 ports chosen by the OS. */
export class GateProcess {
  readonly log: string[] = [];

  private constructor(
    readonly proxyUrl: string,
    readonly adminUrl: string,
    readonly child: ChildProcessByStdio<null, null, Readable>,
    log: string[],
  ) {
    this.log = log;
  }

  /** Start the gate in front of `upstreamUrl` with `env` (contract names); waits for `listening`. */
  static async start(upstreamUrl: string, env: Record<string, string>): Promise<GateProcess> {
    const binary = gateBinary();
    if (!existsSync(binary)) {
      throw new Error(`${binary} does not exist: build it (cargo build --bin sig-gate) or set SIG_GATE_BIN`);
    }
    const child = spawn(binary, ["serve"], {
      env: {
        ...cleanEnv(),
        GATE_LISTEN: "127.0.0.1:0",
        GATE_ADMIN_LISTEN: "127.0.0.1:0",
        GATE_UPSTREAM: upstreamUrl,
        GATE_LOG_FORMAT: "json",
        GATE_SHUTDOWN_GRACE_SECS: "5",
        ...env,
      },
      cwd: tmpdir(),
      stdio: ["ignore", "ignore", "pipe"],
    });
    const log: string[] = [];
    const listening = new Promise<[string, string]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no \`listening\` line within 30 s:\n${log.join("\n")}`)), 30_000);
      createInterface({ input: child.stderr }).on("line", (line) => {
        log.push(line);
        try {
          const event = JSON.parse(line) as Record<string, unknown>;
          if (event["message"] === "listening") {
            clearTimeout(timer);
            resolve([String(event["proxy_addr"]), String(event["admin_addr"])]);
          }
        } catch {
          // not JSON: kept in the log for the failure message
        }
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`sig-gate exited ${code} before listening:\n${log.join("\n")}`));
      });
    });
    const [proxy, admin] = await listening;
    return new GateProcess(`http://${proxy}`, `http://${admin}`, child, log);
  }

  /** SIGTERM, and the exit code once the drain ends. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null) {
      return this.child.exitCode;
    }
    const exited = new Promise<number | null>((resolve) => this.child.on("exit", (code) => resolve(code)));
    this.child.kill("SIGTERM");
    return exited;
  }
}
