import { createRemoteJWKSet, customFetch, errors as joseErrors, jwtVerify, type JWTPayload } from "jose";
import { canonicalSha256 } from "./canonical.js";
import { CountersignError, GrantVerificationError } from "./errors.js";
import type { FetchLike } from "./http.js";

/** One entry of a grant's `authorization_details` (RFC 9396). */
export type AuthorizationDetail =
  | {
      type: "countersign_tool_call";
      tool: string;
      arguments: Record<string, unknown>;
      arguments_sha256: string;
      [key: string]: unknown;
    }
  | {
      type: "countersign_approval";
      scope: string;
      binding_message: string;
      context?: Record<string, unknown>;
      context_sha256: string;
      [key: string]: unknown;
    }
  | { type: string; [key: string]: unknown };

/** A grant's claims. */
export interface GrantClaims extends JWTPayload {
  iss: string;
  aud: string | string[];
  exp: number;
  tid: string;
  jti: string;
  sub?: string;
  client_id?: string;
  scope?: string;
  approval_id: string;
  approved_by?: string;
  authorization_details?: AuthorizationDetail[];
}

export interface VerifyGrantOptions {
  /** The server's key set, e.g. `https://countersign.example.com/.well-known/jwks.json`. */
  jwksUrl: string;
  /** The server's public URL, exactly as in `iss`. */
  issuer: string;
  /** This executor's own resource (RFC 8707), or `urn:countersign:tenant:<tenant>`. */
  audience: string;
  /** The tenant this executor serves (`tid`). */
  tenant?: string;
  /**
   * What the executor is about to run: the tool call's arguments (a guard grant) or the CIBA
   * request's context. Its RFC 8785 SHA-256 must equal the grant's digest.
   */
  expectedArguments?: unknown;
  /** Seconds of clock skew tolerated for `exp` (default 0). */
  clockTolerance?: number;
  /** Fetch used for the key set (default: the global one). */
  fetch?: FetchLike;
}

export interface VerifiedGrant {
  claims: GrantClaims;
  /** The detail the digest was checked against (the last `authorization_details` entry). */
  detail?: AuthorizationDetail;
}

const keySets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();

function keySet(url: string, fetchImpl?: FetchLike) {
  const cacheKey = url;
  let set = fetchImpl ? undefined : keySets.get(cacheKey);
  if (!set) {
    set = createRemoteJWKSet(new URL(url), fetchImpl ? { [customFetch]: fetchImpl as typeof fetch } : {});
    if (!fetchImpl) keySets.set(cacheKey, set);
  }
  return set;
}

function fail(code: string, message: string, cause?: unknown): never {
  throw new GrantVerificationError({ status: 0, code, message, cause });
}

/**
 * Verifies a grant offline, as an executor must before it acts: the signature with the key its
 * `kid` names in the JWKS (ES256 or EdDSA), `typ` `at+jwt`, `iss`, `exp`, `aud`, `tid`, and the
 * RFC 8785 SHA-256 of `expectedArguments` against `arguments_sha256` / `context_sha256`.
 * Throws `GrantVerificationError` naming the failed check. It does not make the grant single-use:
 * remember `approval_id`s already acted on, or use `introspect(token, {consume: true})`.
 */
export async function verifyGrant(token: string, options: VerifyGrantOptions): Promise<VerifiedGrant> {
  if (!options.jwksUrl || !options.issuer || !options.audience) {
    throw new TypeError("verifyGrant needs jwksUrl, issuer and audience");
  }
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, keySet(options.jwksUrl, options.fetch), {
      issuer: options.issuer,
      audience: options.audience,
      typ: "at+jwt",
      algorithms: ["ES256", "EdDSA", "Ed25519"],
      requiredClaims: ["iss", "aud", "exp", "tid", "jti", "approval_id"],
      clockTolerance: options.clockTolerance ?? 0,
    }));
  } catch (error) {
    if (error instanceof joseErrors.JWTExpired) fail("expired", "the grant has expired", error);
    if (error instanceof joseErrors.JWTClaimValidationFailed) {
      const claim = error.claim;
      if (claim === "typ") fail("invalid_typ", "the grant's typ is not at+jwt", error);
      fail(`invalid_${claim}`, `the grant's \`${claim}\` claim fails: ${error.message}`, error);
    }
    if (error instanceof joseErrors.JWKSNoMatchingKey) fail("unknown_kid", "no key in the JWKS matches the grant's kid", error);
    if (error instanceof joseErrors.JWSSignatureVerificationFailed) fail("invalid_signature", "the grant's signature does not verify", error);
    if (error instanceof joseErrors.JOSEAlgNotAllowed) fail("invalid_alg", "the grant's algorithm is not ES256 or EdDSA", error);
    if (error instanceof joseErrors.JWKSTimeout || !(error instanceof joseErrors.JOSEError)) {
      fail("jwks_unavailable", `the key set could not be read: ${(error as Error).message}`, error);
    }
    fail("invalid_token", `the grant is not a valid JWT: ${(error as Error).message}`, error);
  }
  const claims = payload as GrantClaims;
  if (typeof claims.tid !== "string") fail("invalid_tid", "the grant has no tenant");
  if (options.tenant !== undefined && claims.tid !== options.tenant) {
    fail("invalid_tid", `the grant is for tenant \`${claims.tid}\`, not \`${options.tenant}\``);
  }
  const details = Array.isArray(claims.authorization_details) ? claims.authorization_details : [];
  const detail = details[details.length - 1];
  if (options.expectedArguments !== undefined) {
    if (!detail) fail("invalid_arguments", "the grant carries no authorization_details to compare with");
    const expected =
      detail.type === "countersign_tool_call"
        ? (detail as { arguments_sha256?: unknown }).arguments_sha256
        : (detail as { context_sha256?: unknown }).context_sha256;
    if (typeof expected !== "string") fail("invalid_arguments", "the grant carries no arguments digest");
    let actual: string;
    try {
      actual = canonicalSha256(options.expectedArguments);
    } catch (error) {
      if (error instanceof CountersignError) fail(error.code, `the arguments cannot be hashed: ${error.message}`, error);
      throw error;
    }
    if (actual !== expected) fail("arguments_mismatch", "the arguments differ from the ones approved");
  }
  return { claims, detail };
}
