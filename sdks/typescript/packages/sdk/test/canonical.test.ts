// RFC 8785 canonical JSON and its SHA-256: the RFC's examples, the refusals, and the server's
// own digests of awkward arguments.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { CanonicalJsonError, Countersign, canonicalSha256, canonicalize } from "@countersign/sdk";
import { startServer, type TestServer } from "@countersign/test-server";

test("RFC 8785 §3.2.2: literals, numbers and string escapes", () => {
  const input = JSON.parse(
    '{"numbers":[333333333.33333329,4.50,2e-3,0.000000000000000000000000001],' +
      '"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","literals":[null,true,false]}',
  );
  assert.equal(
    canonicalize(input),
    '{"literals":[null,true,false],"numbers":[333333333.3333333,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
  );
});

test("RFC 8785 §3.2.3: keys sorted by UTF-16 code units", () => {
  const input = { "\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",
    "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis" };
  // (Object.keys would put the integer-like key "1" first: compare the text.)
  const out = canonicalize(input);
  const order = ["\\r", "1", "\u0080", "\u00f6", "\u20ac", "\ud83d\ude00", "\ufb33"].map((k) => out.indexOf(`"${k}":`));
  assert.ok(order.every((at) => at > 0), out);
  assert.deepEqual([...order].sort((a, b) => a - b), order, out);
});

test("numbers as ECMAScript writes them; -0 is 0; nested values sorted at every level", () => {
  assert.equal(canonicalize([1e-7, -0, 0.1, 100, 1.5e-300, 123.456e5, 0.000001]), "[1e-7,0,0.1,100,1.5e-300,12345600,0.000001]");
  assert.equal(canonicalize({ b: [{ z: 1, a: 2 }], a: { d: null, c: "x" } }), '{"a":{"c":"x","d":null},"b":[{"a":2,"z":1}]}');
  assert.equal(canonicalize({ skipped: undefined, kept: 1 }), '{"kept":1}');
});

test("what canonical JSON cannot keep is refused", () => {
  const refused = (value: unknown, code: string) =>
    assert.throws(() => canonicalize(value), (e: unknown) => e instanceof CanonicalJsonError && e.code === code);
  refused({ id: 2 ** 53 }, "invalid_number");
  refused({ id: -(2 ** 53) }, "invalid_number");
  refused({ id: 1e30 }, "invalid_number");
  refused({ id: 12345678901234567890n }, "invalid_number");
  refused({ x: NaN }, "invalid_number");
  refused({ x: Infinity }, "invalid_number");
  refused({ s: "\ud800" }, "invalid_json");
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  refused(cyclic, "invalid_json");
  assert.equal(canonicalize({ id: Number.MAX_SAFE_INTEGER, neg: -Number.MAX_SAFE_INTEGER }), '{"id":9007199254740991,"neg":-9007199254740991}');
});

let server: TestServer;
before(async () => {
  server = await startServer();
  const admin = new Countersign({ baseUrl: server.base, apiKey: server.adminKey }).guard("default");
  await admin.groups.create({ id: "g", name: "G", members: [{ email: server.reviewerEmail, role: "primary" }] });
  await admin.policies.create({ name: "Approve everything", tool_pattern: "*", action: "require_approval", approval_config: { approval_group_id: "g" } });
});
after(async () => {
  await server?.stop();
});

test("the SDK's digest equals the server's for awkward arguments", async () => {
  const agent = new Countersign({ baseUrl: server.base, apiKey: server.agentKey }).guard("default");
  const cases: Record<string, unknown>[] = [
    { amount: 500, customer_id: "cust_123" },
    { floats: [0.1, 1e-7, 123456789.125, -0.5, 5e-324, 2.5e-10, 1.5e-300], max: Number.MAX_SAFE_INTEGER },
    { "é": "\u00e9", "e\u0301": "combining", "\u20ac": "€", "😀": "\ud83d\ude00", "z": { "b": [true, false, null], "a": "" } },
    { text: "line\nbreak\ttab \"quoted\" \\ back / slash \u0001\u001f\u007f" },
    { nested: [[[]], {}, [{ k: [1, 2, { y: 3, x: 4 }] }]] },
  ];
  for (const [i, args] of cases.entries()) {
    const decision = await agent.tool({ sessionId: `canonical-${i}`, toolCall: { name: "check_digest", arguments: args } });
    const approval = await agent.approval(decision.approval_id!);
    assert.equal(approval.arguments_sha256, canonicalSha256(args), `case ${i}: ${JSON.stringify(args)}`);
    assert.deepEqual(approval.arguments, args);
  }
});
