export { Countersign, type CountersignOptions, type Introspection } from "./client.js";
export * from "./ciba.js";
export * from "./guard.js";
export * from "./errors.js";
export { canonicalize, canonicalSha256 } from "./canonical.js";
export { verifyGrant, type VerifyGrantOptions, type VerifiedGrant, type GrantClaims, type AuthorizationDetail } from "./grants.js";
export type { FetchLike, RetryOptions, RequestOptions } from "./http.js";
export type { WaitOptions } from "./wait.js";
