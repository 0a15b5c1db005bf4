/**
 * The `fetch` adapter: a function with `fetch`'s signature that signs every request as it will
 * be sent.
 *
 * What is signed is what goes on the wire: the request is first built as a WHATWG `Request`,
 * which serialises the body (a string as UTF-8, `URLSearchParams`, `FormData` with its
 * boundary, a `Blob`, a stream) and normalises the URL exactly as `fetch` sends it; the
 * signature then covers that `Request`'s method, its URL's path and query, and its body bytes,
 * and those very bytes are sent.
 */

import { GateSigner } from "./signer.js";

/** `fetch`'s own signature. */
export type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/** Options of {@link gateFetch}. */
export interface GateFetchOptions {
  /** The signer; `GateSigner.fromEnv()` when absent (read once, now). */
  signer?: GateSigner;
  /** The `fetch` to send with; the global one when absent. */
  fetch?: Fetch;
}

/**
 * A `fetch` that signs. The signer is resolved once, here, so a configuration error surfaces
 * when the client is built rather than on its first request.
 *
 * ```ts
 * const fetch = gateFetch();
 * await fetch("http://tool-gate:8080/tools/search?q=a%20b", { method: "POST", body: JSON.stringify(args) });
 * ```
 */
export function gateFetch(options: GateFetchOptions = {}): Fetch {
  const signer = options.signer ?? GateSigner.fromEnv();
  const send = options.fetch ?? globalThis.fetch;
  if (typeof send !== "function") {
    throw new TypeError("no fetch: pass options.fetch (the global fetch needs Node.js 18 or later)");
  }
  return async (input, init) => send(await signRequest(signer, new Request(input, init)));
}

/**
 * A copy of `request` carrying the signature headers, with its body read once and sent as the
 * exact bytes that were signed. Exported for callers who hold a `Request` already.
 */
export async function signRequest(signer: GateSigner, request: Request): Promise<Request> {
  const url = new URL(request.url);
  // `fetch` sends the path and the query as the parsed URL serialises them (a lone `?` drops).
  const target = url.pathname + url.search;
  const body = request.body === null ? undefined : new Uint8Array(await request.arrayBuffer());
  const headers = new Headers(request.headers);
  for (const [name, value] of Object.entries(signer.sign(request.method, target, body))) {
    headers.set(name, value);
  }
  const init: RequestInit = { headers };
  if (body !== undefined) {
    init.body = body;
  }
  return new Request(request, init);
}
