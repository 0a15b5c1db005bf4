/** The fetch and axios adapters sign what is actually sent: each request goes to a recording
 * upstream on loopback, and the signature that arrived is checked against the method, target
 * and body bytes that arrived, by a verifier that shares no code with the package. */

import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, test } from "node:test";

import axios from "axios";

import { Ed25519Key, GateSigner, HmacKey, gateFetch, signAxiosRequests } from "../src/index.js";
import { RecordingUpstream, expectedV1, expectedV2Hmac, header, verifiesEd25519, type Received } from "./harness.js";

const SECRET = "ts-adapter-secret-0123456789abcdefghijklm";
const encoder = new TextEncoder();
const v1 = GateSigner.version1(new HmacKey("k-2026", encoder.encode(SECRET)));

let upstream: RecordingUpstream;
before(async () => {
  upstream = await RecordingUpstream.start();
});
after(async () => {
  await upstream.stop();
});

/** The request that arrived carries a version 1 signature that verifies over what arrived. */
function assertSignedV1(received: Received): void {
  assert.equal(header(received, "x-gate-key-id"), "k-2026");
  assert.equal(header(received, "x-gate-signature"), expectedV1(received, SECRET, "k-2026"), `${received.method} ${received.target}`);
}

const decode = (received: Received): string => new TextDecoder().decode(received.body);

describe("fetch", () => {
  const fetch = gateFetch({ signer: v1 });

  test("JSON text, bytes, forms, multipart and blobs are signed as the bytes sent", async () => {
    const form = new FormData();
    form.append("field", "café ☕");
    form.append("file", new Blob([new Uint8Array([0, 255, 13, 10])], { type: "application/octet-stream" }), "b.bin");
    const bodies: Array<[string, NonNullable<RequestInit["body"]>, (r: Received) => void]> = [
      ["json", JSON.stringify({ query: "café ☕ 東京" }), (r) => assert.equal(decode(r), '{"query":"café ☕ 東京"}')],
      ["bytes", new Uint8Array([0, 1, 2, 255, 13, 10]), (r) => assert.deepEqual([...r.body], [0, 1, 2, 255, 13, 10])],
      ["urlencoded", new URLSearchParams({ q: "a b", x: "ü+" }), (r) => assert.equal(decode(r), "q=a+b&x=%C3%BC%2B")],
      ["multipart", form, (r) => assert.match(header(r, "content-type") ?? "", /^multipart\/form-data; boundary=/)],
      ["blob", new Blob(["blob body"], { type: "text/plain" }), (r) => assert.equal(header(r, "content-type"), "text/plain")],
    ];
    for (const [name, body, check] of bodies) {
      const reply = await fetch(`${upstream.url}/tools/${name}`, { method: "POST", body });
      assert.equal(reply.status, 200);
      await reply.arrayBuffer();
      const received = upstream.take();
      assertSignedV1(received);
      check(received);
    }
  });

  test("the path and query are signed as the URL parser sends them", async () => {
    const targets: Array<[string, string]> = [
      ["/files/a%2Fb%20c?x=1&x=2", "/files/a%2Fb%20c?x=1&x=2"],
      ["/search?q=a+b&r=c%20d", "/search?q=a+b&r=c%20d"],
      ["/caf\u00e9 menu?q=\u00fc \u00e9", "/caf%C3%A9%20menu?q=%C3%BC%20%C3%A9"],
      ["/a?", "/a"],
      ["/", "/"],
    ];
    for (const [given, sent] of targets) {
      const reply = await fetch(upstream.url + given);
      await reply.arrayBuffer();
      const received = upstream.take();
      assert.equal(received.target, sent);
      assertSignedV1(received);
    }
  });

  test("methods are signed as sent, extension methods included; a Request input keeps its body", async () => {
    // fetch upper-cases the six standard methods it knows (`delete` here) and sends the others
    // as given: the signature covers the method as sent.
    const methods: Array<[string, string]> = [["PUT", "PUT"], ["PATCH", "PATCH"], ["delete", "DELETE"], ["PURGE", "PURGE"]];
    for (const [method, sent] of methods) {
      await (await fetch(`${upstream.url}/m`, { method, body: sent === "DELETE" ? null : "{}" })).arrayBuffer();
      const received = upstream.take();
      assert.equal(received.method, sent);
      assertSignedV1(received);
    }
    const request = new Request(`${upstream.url}/from-request?x=1`, { method: "POST", body: "as a Request", headers: { "X-Custom": "kept" } });
    await (await fetch(request)).arrayBuffer();
    const received = upstream.take();
    assert.equal(decode(received), "as a Request");
    assert.equal(header(received, "x-custom"), "kept");
    assertSignedV1(received);
  });

  test("a stream body is read once, signed and sent whole", async () => {
    const chunks = ["first,", "second,", "third"];
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        const next = chunks.shift();
        if (next === undefined) {
          controller.close();
        } else {
          controller.enqueue(encoder.encode(next));
        }
      },
    });
    await (await fetch(`${upstream.url}/stream`, { method: "POST", body: stream, duplex: "half" } as RequestInit)).arrayBuffer();
    const received = upstream.take();
    assert.equal(decode(received), "first,second,third");
    assertSignedV1(received);
  });
});

describe("axios", () => {
  // `proxy: false`: a developer's HTTP_PROXY must not reroute loopback traffic.
  const client = axios.create({ proxy: false });

  before(() => {
    client.defaults.baseURL = upstream.url;
    signAxiosRequests(client, v1);
  });

  test("objects as JSON, strings, buffers, URLSearchParams and FormData are signed as sent", async () => {
    const form = new FormData();
    form.append("field", "naïve");
    const bodies: Array<[string, unknown, (r: Received) => void]> = [
      ["object", { query: "café ☕", n: 1 }, (r) => assert.equal(decode(r), '{"query":"café ☕","n":1}')],
      ["string", "plain text body", (r) => assert.equal(decode(r), "plain text body")],
      ["buffer", Buffer.from([0, 255, 10]), (r) => assert.deepEqual([...r.body], [0, 255, 10])],
      ["bytes", new Uint8Array([7, 8, 9]), (r) => assert.deepEqual([...r.body], [7, 8, 9])],
      ["urlencoded", new URLSearchParams({ q: "a b" }), (r) => assert.equal(decode(r), "q=a+b")],
      ["multipart", form, (r) => assert.match(header(r, "content-type") ?? "", /^multipart\/form-data; boundary=/)],
    ];
    for (const [name, body, check] of bodies) {
      const reply = await client.post(`/tools/${name}`, body);
      assert.equal(reply.status, 200);
      const received = upstream.take();
      assertSignedV1(received);
      check(received);
    }
  });

  test("params are signed as axios serialises them into the URL", async () => {
    await client.get("/search", { params: { q: "a b", tag: ["x", "y"], u: "ü+", empty: "" } });
    const received = upstream.take();
    // Whatever axios's serialiser makes of the brackets, the rest is fixed by its encoding.
    assert.match(received.target, /^\/search\?q=a\+b&tag(\[\]|%5B%5D)=x&tag(\[\]|%5B%5D)=y&u=%C3%BC%2B&empty=$/);
    assertSignedV1(received);
    await client.request({ method: "purge", url: "/cache?keep=1", params: { drop: "2" } });
    const purged = upstream.take();
    assert.equal(purged.method, "PURGE");
    assert.equal(purged.target, "/cache?keep=1&drop=2");
    assertSignedV1(purged);
  });

  test("an absolute URL bypasses baseURL and is signed as sent", async () => {
    await axios.create({ proxy: false }).get(`${upstream.url}/unsigned`);
    assert.equal(header(upstream.take(), "x-gate-signature"), undefined, "only instances given to signAxiosRequests sign");
    await client.get(`${upstream.url}/absolute%20path?x=%2F`);
    const received = upstream.take();
    assert.equal(received.target, "/absolute%20path?x=%2F");
    assertSignedV1(received);
  });

  test("a body that would be streamed is refused rather than sent unsigned", async () => {
    const { Readable } = await import("node:stream");
    await assert.rejects(client.post("/stream", Readable.from(["a", "b"])), /cannot be signed/);
    assert.equal(upstream.received.length, 0);
  });
});

describe("version 2 through both adapters", () => {
  const ed = Ed25519Key.fromPem("svc-ed-2026", generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }));
  const observed = Ed25519Key.fromPem("svc-ed-2027", generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }));
  const hmac = GateSigner.version2(new HmacKey("svc-hmac", encoder.encode(SECRET)), "tool-gate");
  const edSigner = GateSigner.version2(ed, "tool-gate", observed);

  test("HMAC and Ed25519 (with an observed key) signatures verify over what arrived", async () => {
    await (await gateFetch({ signer: hmac })(`${upstream.url}/v2?q=1`, { method: "POST", body: "{}" })).arrayBuffer();
    const received = upstream.take();
    assert.equal(header(received, "x-gate-version"), "2");
    assert.equal(header(received, "x-gate-signature"), expectedV2Hmac(received, SECRET, "svc-hmac", "tool-gate"));

    const client = axios.create({ baseURL: upstream.url, proxy: false });
    signAxiosRequests(client, edSigner);
    await client.put("/v2/ed", { x: "ü" }, { params: { a: "b c" } });
    const edReceived = upstream.take();
    const signature = header(edReceived, "x-gate-signature") ?? "";
    assert.ok(verifiesEd25519(edReceived, ed.publicKey, "svc-ed-2026", "tool-gate", signature));
    assert.ok(!verifiesEd25519(edReceived, ed.publicKey, "svc-ed-2026", "billing-gate", signature), "bound to the audience");
    const entries = JSON.parse(header(edReceived, "x-gate-signatures") ?? "[]") as Array<{ key_id: string; signature: string }>;
    assert.deepEqual(entries[0], { key_id: "svc-ed-2026", signature });
    assert.equal(entries[1]?.key_id, "svc-ed-2027");
    assert.ok(verifiesEd25519(edReceived, observed.publicKey, "svc-ed-2027", "tool-gate", entries[1]?.signature ?? ""));
  });
});
