/**
 * sig-gate-client: sign requests for sig-gate, the proxy that verifies request signatures in
 * front of an internal service.
 *
 * - {@link GateSigner}: build once (`GateSigner.fromEnv()`), then `signer.sign(method, target,
 *   body)` gives the `X-Gate-*` headers. Version 1 (the shared HMAC secret) or version 2 (the
 *   caller's own HMAC-SHA256 or Ed25519 key, bound to one gate's audience), chosen by the same
 *   environment variables as the gate and the Python client.
 * - {@link gateFetch}: a `fetch` that signs every request.
 * - {@link signAxiosRequests}: an axios request interceptor that signs every request.
 * - {@link signGateRequest}: the one-call form.
 *
 * The wire format is docs/protocol.md of the sig-gate repository.
 */

export * as protocol from "./protocol.js";
export {
  ALG_ED25519,
  ALG_HMAC_SHA256,
  type Algorithm,
  type Body,
  type SignatureHeaders,
} from "./protocol.js";
export { GateConfigError, type Environment } from "./config.js";
export { Ed25519Key, HmacKey, type VersionTwoKey } from "./keys.js";
export {
  GateSigner,
  SigningInputError,
  newNonce,
  signGateRequest,
  type FromEnvOptions,
  type SignOptions,
  type Timestamp,
} from "./signer.js";
export { gateFetch, signRequest, type Fetch, type GateFetchOptions } from "./fetch.js";
export {
  signAxiosRequests,
  type AxiosConfigLike,
  type AxiosHeadersLike,
  type AxiosInstanceLike,
} from "./axios.js";
