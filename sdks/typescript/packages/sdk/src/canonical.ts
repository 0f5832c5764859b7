import { createHash } from "node:crypto";
import { CanonicalJsonError } from "./errors.js";

const MAX_SAFE = Number.MAX_SAFE_INTEGER; // 2^53 − 1

function fail(code: string, message: string): never {
  throw new CanonicalJsonError({ status: 0, code, message });
}

function serializeString(s: string, path: string): string {
  // I-JSON (RFC 7493), which RFC 8785 requires: no lone surrogates.
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        i++;
        continue;
      }
      fail("invalid_json", `\`${path}\` holds a lone surrogate, which canonical JSON cannot represent`);
    }
    if (c >= 0xdc00 && c <= 0xdfff) {
      fail("invalid_json", `\`${path}\` holds a lone surrogate, which canonical JSON cannot represent`);
    }
  }
  // ECMAScript's JSON.stringify escapes exactly as RFC 8785 §3.2.2.2 prescribes.
  return JSON.stringify(s);
}

function serializeNumber(n: number, path: string): string {
  if (!Number.isFinite(n)) fail("invalid_number", `\`${path}\` is ${n}, which JSON cannot represent`);
  if (Number.isInteger(n) && Math.abs(n) > MAX_SAFE) {
    fail(
      "invalid_number",
      `\`${path}\` is ${n}, beyond ±${MAX_SAFE}: canonical JSON (IEEE doubles) cannot keep it exactly; send it as a string`,
    );
  }
  // ECMAScript's Number-to-string is RFC 8785 §3.2.2.3's serialization (and -0 becomes 0).
  return JSON.stringify(n);
}

function serialize(value: unknown, path: string, seen: Set<object>): string | undefined {
  if (value === null) return "null";
  if (value !== undefined && typeof value === "object" && typeof (value as { toJSON?: unknown }).toJSON === "function") {
    value = (value as { toJSON(): unknown }).toJSON();
  }
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number":
      return serializeNumber(value, path);
    case "string":
      return serializeString(value, path);
    case "bigint": {
      if (value > BigInt(MAX_SAFE) || value < -BigInt(MAX_SAFE)) {
        fail("invalid_number", `\`${path}\` is ${value}, beyond ±${MAX_SAFE}: send it as a string`);
      }
      return value.toString();
    }
    case "undefined":
    case "function":
    case "symbol":
      return undefined;
    case "object": {
      if (value === null) return "null";
      if (seen.has(value)) fail("invalid_json", `\`${path}\` is circular`);
      seen.add(value);
      try {
        if (Array.isArray(value)) {
          const items = value.map((item, i) => serialize(item, `${path}[${i}]`, seen) ?? "null");
          return `[${items.join(",")}]`;
        }
        // Keys sorted by their UTF-16 code units (RFC 8785 §3.2.3): the default string sort.
        const keys = Object.keys(value).sort();
        const members: string[] = [];
        for (const key of keys) {
          const member = serialize((value as Record<string, unknown>)[key], path ? `${path}.${key}` : key, seen);
          if (member !== undefined) members.push(`${serializeString(key, path ? `${path}.${key}` : key)}:${member}`);
        }
        return `{${members.join(",")}}`;
      } finally {
        seen.delete(value);
      }
    }
  }
  return undefined;
}

/**
 * RFC 8785 (JSON Canonicalization Scheme) serialization of `value`. Refuses what canonical JSON
 * cannot keep exactly: integers beyond ±(2^53 − 1), NaN and infinities, lone surrogates, cycles.
 */
export function canonicalize(value: unknown): string {
  const out = serialize(value, "", new Set());
  if (out === undefined) fail("invalid_json", "the value has no JSON representation");
  return out;
}

/** Hex SHA-256 of the RFC 8785 canonical JSON of `value`, as in `arguments_sha256` and `context_sha256`. */
export function canonicalSha256(value: unknown): string {
  return createHash("sha256").update(canonicalize(value), "utf8").digest("hex");
}
