// Drives Countersign's CIBA provider with openid-client (v6): discovery, backchannel
// authentication, approval through the reviewer API, polling, and ID token verification
// against the published JWKS. Configuration comes as JSON in COUNTERSIGN_E2E.
// Exits non-zero on the first failure.
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import * as jose from 'jose';

const cfg = JSON.parse(process.env.COUNTERSIGN_E2E);
const issuer = new URL(cfg.issuer);

async function approveWhenPending(bindingMessage) {
  // The reviewer finds the request by its binding message and approves it by public id.
  for (let i = 0; i < 200; i++) {
    const res = await fetch(`${cfg.issuer}/v1/approvals?status=pending`, {
      headers: { authorization: `Bearer ${cfg.reviewerKey}` },
    });
    assert.equal(res.status, 200);
    const { approvals } = await res.json();
    const mine = approvals.find((a) => a.binding_message === bindingMessage);
    if (mine) {
      assert.equal(mine.kind, 'oidc');
      const decided = await fetch(`${cfg.issuer}/v1/approvals/${mine.id}/approve`, {
        method: 'POST',
        headers: { authorization: `Bearer ${cfg.reviewerKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ comment: 'approved by the openid-client test' }),
      });
      assert.equal(decided.status, 200);
      return mine.id;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no pending request with binding message ${bindingMessage}`);
}

async function flow(c) {
  const auth = c.secret
    ? client.ClientSecretBasic(c.secret)
    : client.PrivateKeyJwt({
        key: await jose.importPKCS8(c.privateKeyPem, 'ES256'),
        kid: c.kid,
      });
  const config = await client.discovery(issuer, c.clientId, undefined, auth, {
    execute: [client.allowInsecureRequests],
  });
  const meta = config.serverMetadata();
  assert.equal(meta.issuer, cfg.issuer);
  assert.ok(meta.backchannel_token_delivery_modes_supported.includes('poll'));

  const bindingMessage = `E2E-${c.method}-${Date.now() % 100000}`;
  const started = await client.initiateBackchannelAuthentication(config, {
    scope: 'openid',
    login_hint: cfg.userId,
    binding_message: bindingMessage,
    authorization_details: JSON.stringify([
      { type: 'tool_call', tool: 'payments.refund', arguments: { amount: 500 } },
    ]),
  });
  assert.ok(started.auth_req_id.length >= 27);
  const approvalId = await approveWhenPending(bindingMessage);
  const tokens = await client.pollBackchannelAuthenticationGrant(config, started);
  assert.equal(tokens.token_type.toLowerCase(), 'bearer');

  // Verify the ID token and the access token against the published keys.
  const jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
  const { payload: idToken } = await jose.jwtVerify(tokens.id_token, jwks, {
    issuer: cfg.issuer,
    audience: c.clientId,
  });
  assert.equal(idToken.sub, cfg.userId);
  assert.equal(tokens.claims().sub, cfg.userId);
  // The access token is for the tenant's resource audience (no `resource` was asked for).
  const { payload: access } = await jose.jwtVerify(tokens.access_token, jwks, {
    issuer: cfg.issuer,
    audience: `urn:countersign:tenant:${cfg.tenant}`,
  });
  assert.equal(access.tid, cfg.tenant);
  assert.equal(access.approval_id, approvalId);
  assert.equal(access.authorization_details[0].tool, 'payments.refund');

  // Redeemed once: polling again is refused with invalid_grant.
  await assert.rejects(
    client.pollBackchannelAuthenticationGrant(config, { ...started, interval: 0 }),
    (err) => err.error === 'invalid_grant',
  );
  console.log(`ok ${c.method}: ${approvalId}`);
}

for (const c of cfg.clients) {
  await flow(c);
}
console.log(`all ${cfg.clients.length} flows passed`);
