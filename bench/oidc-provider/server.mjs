// The peer of Countersign's CIBA benchmark: the npm package oidc-provider with CIBA (poll)
// enabled, everything in memory. `POST /bench/approve/{auth_req_id}` stands for the user's
// approval on their device (it grants `openid` and completes the request).
// Usage: PORT=4000 node server.mjs   (prints `ready` when listening)
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 4000);
const issuer = `http://127.0.0.1:${port}`;
const CIBA = 'urn:openid:params:grant-type:ciba';

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'bench-poll',
      client_secret: process.env.CLIENT_SECRET || 'bench-secret-0123456789-0123456789',
      grant_types: [CIBA],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      backchannel_token_delivery_mode: 'poll',
    },
  ],
  features: {
    devInteractions: { enabled: false },
    ciba: {
      enabled: true,
      deliveryModes: ['poll'],
      processLoginHint: async (ctx, loginHint) => loginHint,
      validateBindingMessage: async () => {},
      validateRequestContext: async () => {},
      verifyUserCode: async () => {},
      triggerAuthenticationDevice: async () => {},
    },
  },
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
});

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  if (req.method === 'POST' && req.url.startsWith('/bench/approve/')) {
    try {
      const id = decodeURIComponent(req.url.slice('/bench/approve/'.length));
      const request = await provider.BackchannelAuthenticationRequest.find(id);
      if (!request) {
        res.writeHead(404).end();
        return;
      }
      const grant = new provider.Grant({ accountId: request.accountId, clientId: request.clientId });
      grant.addOIDCScope(request.scope);
      await grant.save();
      await provider.backchannelResult(request, grant, { authTime: Math.floor(Date.now() / 1000) });
      res.writeHead(204).end();
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
    return;
  }
  callback(req, res);
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => console.log('ready'));
