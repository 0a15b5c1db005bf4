/**
 * The axios adapter: a request interceptor that signs what axios will send.
 *
 * An axios request interceptor runs before axios serialises the body and builds the URL, so
 * the interceptor does both itself, the way axios would, and hands axios the results to send
 * unchanged: the body runs through the request's own `transformRequest` functions (JSON,
 * forms, custom ones) and becomes the exact bytes signed; the URL becomes `instance.getUri()`'s
 * absolute URL with the `params` already in it, and the signed target is that URL's path and
 * query as the WHATWG URL parser (which axios's Node and fetch adapters use) serialises them.
 *
 * axios is not imported: the types below describe the parts of it used here, so the package
 * has no runtime dependency, and TypeScript checks them against the real axios types wherever
 * an axios instance is passed in.
 */

import { Buffer } from "node:buffer";

import { describe } from "./protocol.js";
import { GateSigner } from "./signer.js";

/** The header object of an axios request config (`AxiosHeaders`). */
export interface AxiosHeadersLike {
  set(name: string, value: string): unknown;
}

/** The parts of an axios request config the interceptor reads and rewrites. */
export interface AxiosConfigLike {
  method?: string | undefined;
  url?: string | undefined;
  baseURL?: string | undefined;
  params?: unknown;
  data?: unknown;
  headers: AxiosHeadersLike;
  transformRequest?: unknown;
}

/** The parts of an axios instance (`axios.create()`, or `axios` itself) the adapter uses. */
export interface AxiosInstanceLike<C extends AxiosConfigLike> {
  // axios types this parameter as the public `AxiosRequestConfig`, whose fields are typed apart
  // from the config an interceptor receives; what is passed is the config axios handed over.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  getUri(config?: any): string;
  interceptors: {
    request: {
      use(onFulfilled: (config: C) => C | Promise<C>): number;
    };
  };
}

/** A request transform as axios calls it: `this` is the config, then data and headers. */
type Transform = (this: unknown, data: unknown, headers: unknown) => unknown;

/**
 * Sign every request `instance` sends, from now on; returns the interceptor's id (for
 * `instance.interceptors.request.eject`). The signer is resolved once, here, so a
 * configuration error surfaces when the client is built.
 *
 * ```ts
 * const client = axios.create({ baseURL: "http://tool-gate:8080" });
 * signAxiosRequests(client);
 * await client.post("/tools/search", { query: "café" }, { params: { q: "a b" } });
 * ```
 *
 * Bodies must serialise to text or bytes (axios's defaults do so for objects, strings,
 * `URLSearchParams` and buffers; `FormData` is serialised here with its boundary); a stream
 * cannot be signed without reading it, and is refused. A redirect that axios follows is sent
 * to its new URL with the first URL's signature, which the gate refuses: gates answer without
 * redirects, so set `maxRedirects: 0` if something in between might redirect.
 */
export function signAxiosRequests<C extends AxiosConfigLike>(
  instance: AxiosInstanceLike<C>,
  signer: GateSigner = GateSigner.fromEnv(),
): number {
  return instance.interceptors.request.use(async (config) => {
    const url = absoluteUrl(instance.getUri(config));
    // From here on axios sends the absolute URL as it is: the parameters are in it already.
    config.url = url.href;
    config.baseURL = undefined;
    config.params = undefined;

    const body = await serialisedBody(config);
    config.transformRequest = [];
    if (body !== undefined) {
      config.data = body;
    }
    const method = (config.method ?? "get").toUpperCase();
    for (const [name, value] of Object.entries(signer.sign(method, url.pathname + url.search, body))) {
      config.headers.set(name, value);
    }
    return config;
  });
}

/** The request's URL, which must be absolute (a `baseURL`, or an absolute `url`). */
function absoluteUrl(uri: string): URL {
  try {
    return new URL(uri);
  } catch {
    throw new TypeError(
      `cannot sign a request to ${JSON.stringify(uri)}: give the axios instance a baseURL or the request an absolute URL`,
    );
  }
}

/**
 * The body as axios would send it, after the request's own transforms, as a Buffer (what
 * axios's Node adapter sends as is); `undefined` for no body.
 */
async function serialisedBody(config: AxiosConfigLike): Promise<Buffer | undefined> {
  const transforms = config.transformRequest;
  let data = config.data;
  for (const transform of (Array.isArray(transforms) ? transforms : transforms ? [transforms] : []) as Transform[]) {
    data = transform.call(config, data, config.headers);
  }
  if (data === undefined || data === null) {
    return undefined;
  }
  if (typeof data === "string") {
    return Buffer.from(data, "utf8");
  }
  if (Buffer.isBuffer(data)) {
    return data;
  }
  if (data instanceof ArrayBuffer) {
    return Buffer.from(data);
  }
  if (ArrayBuffer.isView(data)) {
    return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }
  if (data instanceof URLSearchParams) {
    return Buffer.from(data.toString(), "utf8");
  }
  if (data instanceof FormData || data instanceof Blob) {
    // The WHATWG serialisation, with its boundary in the Content-Type it comes with.
    const response = new Response(data);
    const type = response.headers.get("content-type");
    if (type !== null) {
      config.headers.set("Content-Type", type);
    }
    return Buffer.from(await response.arrayBuffer());
  }
  throw new TypeError(
    `the request body serialises to ${describe(data)}, which cannot be signed without reading it: ` +
      "send a string, bytes, an object (JSON), URLSearchParams or FormData",
  );
}
