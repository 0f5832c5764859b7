// The reviewer dashboard in a real browser: Debian's Chromium, driven by playwright-core,
// against the real `countersign` binary on a free port with a temporary SQLite store.
// Passkeys use a CDP virtual authenticator. Screenshots go to e2e/artifacts/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, copyFileSync, existsSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import http from "node:http";
import { createHmac } from "node:crypto";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const binary = process.env.COUNTERSIGN_BIN || join(root, "target", "debug", "countersign");
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const artifacts = join(root, "e2e", "artifacts");
const ADMIN_KEY = "csk_e2e-admin-key-0123456789-abcdefghijklmnopq";

let server, dataDir, base, browser, smtp, serverLog = "";

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/// A real SMTP server (aiosmtpd, which scripts/test installs) keeping every message in a
/// maildir, so email notifications and test sends really go out.
async function startSmtp() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "countersign-e2e-mail-"));
  const proc = spawn("python3", ["-m", "aiosmtpd", "-n", "-l", `127.0.0.1:${port}`,
    "-c", "aiosmtpd.handlers.Mailbox", join(dir, "mail")], { stdio: "ignore" });
  const deadline = Date.now() + 15_000;
  for (;;) {
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => { socket.end(); resolve(true); });
      socket.on("error", () => resolve(false));
    });
    if (up) { break; }
    if (Date.now() > deadline) { throw new Error("aiosmtpd did not start (python3 -m pip install aiosmtpd)"); }
    await new Promise((r) => setTimeout(r, 50));
  }
  const messages = () => ["new", "cur"].flatMap((d) => {
    const path = join(dir, "mail", d);
    return existsSync(path) ? readdirSync(path).map((f) => readFileSync(join(path, f), "utf8")) : [];
  });
  const close = () => { proc.kill(); rmSync(dir, { recursive: true, force: true }); };
  return { port, messages, close };
}

async function api(path, { method = "GET", key = ADMIN_KEY, body } = {}) {
  const res = await fetch(base + path, {
    method,
    headers: {
      Authorization: `Bearer ${key}`,
      ...(body ? { "Content-Type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!res.ok) { throw new Error(`${method} ${path} -> ${res.status}: ${text}`); }
  return json;
}

async function waitReady() {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(base + "/readyz");
      if (r.ok) { return; }
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the server did not become ready:\n" + serverLog);
}

/// A browser context with its own virtual passkey authenticator.
async function personWithAuthenticator(viewport = { width: 1280, height: 860 }) {
  const context = await browser.newContext({ viewport, baseURL: base });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  page.on("pageerror", (e) => { page.__errors = (page.__errors || []).concat(String(e)); });
  return { context, page };
}

async function acceptInvitation(page, email, opts = {}) {
  const invitation = await api("/v1/admin/invitations", { method: "POST", body: { email, ...opts } });
  assert.match(invitation.url, /^http:\/\/localhost:\d+\/ui\/invite\?token=/);
  await page.goto(invitation.url);
  await page.getByRole("heading", { name: /Welcome/ }).waitFor();
  await page.getByLabel("Name this passkey").fill("Test device");
  await page.getByRole("button", { name: "Create a passkey" }).click();
  await page.waitForURL(/\/ui\/queue/);
  return invitation;
}

async function authorize(agentKey, userId, bindingMessage, context = { amount: 500, recipient: "Acme Corp", currency: "USD" }) {
  return api("/ciba/authorize", {
    method: "POST",
    key: agentKey,
    body: { userId, scope: "approve:payment", bindingMessage, requestedExpiry: 600, context },
  });
}

async function approvalIdFor(userKey, bindingMessage) {
  const list = await api("/v1/approvals?status=pending", { key: userKey });
  const found = list.approvals.find((a) => a.binding_message === bindingMessage);
  assert.ok(found, `no pending request "${bindingMessage}"`);
  return found.id;
}

async function shot(page, name) {
  mkdirSync(artifacts, { recursive: true });
  const file = join(artifacts, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

let agentKey, rita;

before(async () => {
  assert.ok(existsSync(binary), `build the binary first: ${binary}`);
  const port = await freePort();
  base = `http://localhost:${port}`;
  dataDir = mkdtempSync(join(tmpdir(), "countersign-e2e-"));
  smtp = await startSmtp();
  server = spawn(binary, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir], {
    env: {
      ...process.env,
      COUNTERSIGN_PUBLIC_URL: base,
      COUNTERSIGN_BOOTSTRAP_ADMIN_KEY: ADMIN_KEY,
      COUNTERSIGN_DATABASE__SYNCHRONOUS: "normal",
      COUNTERSIGN_REQUESTS__SWEEP_INTERVAL_MS: "200",
      COUNTERSIGN_NOTIFICATIONS__EMAIL__SMTP_URL: `smtp://127.0.0.1:${smtp.port}`,
      COUNTERSIGN_NOTIFICATIONS__EMAIL__FROM: "Countersign <countersign@example.com>",
      COUNTERSIGN_OUTBOUND__POLL_INTERVAL_MS: "100",
      // The webhook test sends to a receiver on 127.0.0.1.
      COUNTERSIGN_OUTBOUND__ALLOW_PRIVATE_NETWORKS: "true",
      COUNTERSIGN_OUTBOUND__ALLOW_HTTP: "true",
      RUST_LOG: "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  server.stdout.on("data", (d) => { serverLog += d; });
  server.stderr.on("data", (d) => { serverLog += d; });
  await waitReady();

  const agent = await api("/v1/admin/agents", { method: "POST", body: { name: "payments-bot", trust_level: "elevated" } });
  agentKey = (await api("/v1/admin/api-keys", { method: "POST", body: { role: "agent", agent_id: agent.id } })).key;

  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run",
    ],
  });
});

after(async () => {
  if (browser) { await browser.close(); }
  if (server) {
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
  }
  if (dataDir) { rmSync(dataDir, { recursive: true, force: true }); }
  if (smtp) { smtp.close(); }
});

test("an invited reviewer registers a passkey, signs out and signs in with it", async () => {
  const { context, page } = await personWithAuthenticator();
  const invitation = await acceptInvitation(page, "rita@example.com", { name: "Rita Reviewer" });
  rita = { context, page, userId: invitation.user_id };
  await page.getByRole("heading", { name: /Queue/ }).waitFor();

  // The invitation worked once.
  const again = await page.context().newPage();
  const res = await again.goto(invitation.url);
  assert.equal(res.status(), 400);
  assert.match(await again.textContent("body"), /invalid, expired or already used/);
  await again.close();

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(/\/ui\/sign-in/);
  await page.goto("/ui/queue");
  await page.waitForURL(/\/ui\/sign-in/);
  await page.getByLabel("Email").fill("rita@example.com");
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await page.waitForURL(/\/ui\/queue/);
  await page.getByText("rita@example.com").first().waitFor();
  assert.deepEqual(page.__errors || [], []);
});

test("a request appears in the open queue without a reload; approving wakes the long-polling agent with a token", async () => {
  const { page } = rita;
  await page.goto("/ui/queue");
  await page.waitForFunction(() => document.body.dataset.live === "on");
  const marker = await page.evaluate(() => { window.__notReloaded = true; return true; });
  assert.ok(marker);

  const message = "Approve payment of $500 to Acme Corp?";
  const { authReqId } = await authorize(agentKey, rita.userId, message);
  const id = await approvalIdFor(ADMIN_KEY, message);
  await page.locator(`li[data-request-id="${id}"]`).waitFor({ timeout: 10_000 });
  assert.equal(await page.evaluate(() => window.__notReloaded), true, "the page was not reloaded");
  assert.equal(await page.locator('[data-count="pending"]').textContent(), "1");
  await shot(page, "queue-desktop.png");

  // The agent long-polls while the reviewer decides.
  const poll = fetch(`${base}/ciba/token?authReqId=${encodeURIComponent(authReqId)}&waitSeconds=30`, {
    headers: { Authorization: `Bearer ${agentKey}` },
  }).then((r) => r.json());

  await page.locator(`li[data-request-id="${id}"] a`).click();
  await page.waitForURL(new RegExp(`/ui/requests/${id}`));
  await page.getByText("Acme Corp").first().waitFor();
  assert.match(await page.locator("[data-arguments]").textContent(), /"amount": 500/);
  assert.match(await page.textContent("body"), /trust level elevated/);
  await shot(page, "request-desktop.png");

  await page.getByLabel("Comment (optional)").fill("Checked the invoice");
  await page.getByRole("button", { name: "Approve" }).click();
  await page.locator('#decision [data-status="approved"]').waitFor();
  assert.match(await page.locator("#decision").textContent(), /Approved\. The agent learns it now/);
  assert.match(await page.locator("#decision").textContent(), /Checked the invoice/);

  const answer = await poll;
  assert.equal(answer.status, "approved");
  assert.ok(answer.accessToken, "the agent received its token");

  const view = await api(`/v1/approvals/${id}`);
  assert.equal(view.comment, "Checked the invoice");
  const audit = await api("/v1/audit?limit=500");
  const decided = audit.events.find((e) => e.action === "approval.approved" && e.subject === id);
  assert.equal(decided.details.channel, "dashboard");
  assert.equal(decided.actor_id, rita.userId);
});

test("rejecting needs a reason and records it", async () => {
  const { page } = rita;
  const message = "Delete customer cust_42? This cannot be undone.";
  const { authReqId } = await authorize(agentKey, rita.userId, message, { customerId: "cust_42" });
  const id = await approvalIdFor(ADMIN_KEY, message);
  await page.goto(`/ui/requests/${id}`);
  await page.getByLabel("Reason (required to reject)").fill("Customer asked to keep the record");
  await page.getByRole("button", { name: "Reject" }).click();
  await page.locator('#decision [data-status="rejected"]').waitFor();
  assert.match(await page.locator("#decision").textContent(), /Customer asked to keep the record/);
  const poll = await api(`/ciba/token?authReqId=${encodeURIComponent(authReqId)}`, { key: agentKey });
  assert.deepEqual(poll, { status: "denied", reason: "Customer asked to keep the record" });
});

test("a request decided elsewhere while its page is open shows the outcome instead of stale buttons", async () => {
  const { page } = rita;
  const message = "Send the quarterly report to press@example.org?";
  await authorize(agentKey, rita.userId, message, { to: "press@example.org" });
  const id = await approvalIdFor(ADMIN_KEY, message);
  await page.goto(`/ui/requests/${id}`);
  await page.waitForFunction(() => document.body.dataset.live === "on");
  await page.getByRole("button", { name: "Approve" }).waitFor();
  await api(`/v1/approvals/${id}/deny`, { method: "POST", body: { reason: "Embargoed until Monday" } });
  await page.locator('#decision [data-status="rejected"]').waitFor({ timeout: 10_000 });
  assert.equal(await page.getByRole("button", { name: "Approve" }).count(), 0);
  assert.match(await page.locator("#decision").textContent(), /Embargoed until Monday/);
});

test("agent-supplied text is shown as text, never run", async () => {
  const { page } = rita;
  const message = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">';
  await authorize(agentKey, rita.userId, message, { note: "<b>bold?</b>" });
  const id = await approvalIdFor(ADMIN_KEY, message);
  await page.goto("/ui/queue");
  await page.locator(`li[data-request-id="${id}"]`).waitFor();
  await page.goto(`/ui/requests/${id}`);
  const shown = await page.locator("[data-binding-message]").textContent();
  assert.equal(shown, message);
  assert.match(await page.locator("[data-arguments]").textContent(), /<b>bold\?<\/b>/);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  assert.equal(await page.locator("[data-binding-message] img").count(), 0);
  assert.match(await page.locator(".agent-words .label").first().textContent(), /agent's words/);
});

test("an argument value with a right-to-left override shows the override as a mark and cannot reorder the text", async () => {
  const { page } = rita;
  const message = "Refund the invoice attachment";
  const memo = "invoice \u202Efdp.exe";
  await authorize(agentKey, rita.userId, message, { memo, payee: "שלום", amount: 5 });
  const id = await approvalIdFor(ADMIN_KEY, message);
  await page.goto(`/ui/requests/${id}`);
  const args = page.locator("[data-arguments]");
  const text = await args.textContent();
  assert.ok(!text.includes("\u202E"), "the override itself never reaches the page");
  assert.match(text, /"memo": "invoice ⟨U\+202E⟩fdp\.exe"/);
  // Each value sits in its own isolating element.
  const value = args.locator("bdi", { hasText: "fdp.exe" });
  assert.equal(await value.getAttribute("dir"), "auto");
  assert.equal(await value.evaluate((e) => getComputedStyle(e).unicodeBidi), "isolate");
  assert.equal(await args.locator("bdi", { hasText: "שלום" }).count(), 1);
  // As rendered, left to right: "invoice", the mark, then "fdp.exe" (not reversed), and the
  // right-to-left payee does not move the keys around it.
  const order = await value.evaluate((e) => {
    const node = e.firstChild;
    const x = (needle) => {
      const r = document.createRange();
      const at = node.textContent.indexOf(needle);
      r.setStart(node, at);
      r.setEnd(node, at + 1);
      return r.getBoundingClientRect().left;
    };
    return [x("invoice"), x("⟨U+202E⟩"), x("fdp"), x(".exe")];
  });
  for (let i = 1; i < order.length; i++) {
    assert.ok(order[i - 1] < order[i], `rendered out of order: ${order}`);
  }
  const lines = text.split("\n").map((l) => l.trim());
  assert.deepEqual(lines.slice(1, 4), ['"amount": 5,', '"memo": "invoice ⟨U+202E⟩fdp.exe",', '"payee": "שלום"']);
  await shot(page, "bidi-arguments.png");
});

test("a form posted without its anti-forgery token is refused and changes nothing", async () => {
  const { page } = rita;
  const message = "Publish the draft blog post?";
  await authorize(agentKey, rita.userId, message, { post: "draft-7" });
  const id = await approvalIdFor(ADMIN_KEY, message);
  await page.goto(`/ui/requests/${id}`);
  // A plain form post, as another page would make it: no token, no htmx.
  const [response] = await Promise.all([
    page.waitForNavigation(),
    page.evaluate((action) => {
      const f = document.createElement("form");
      f.method = "post";
      f.action = action;
      const c = document.createElement("input");
      c.name = "comment";
      c.value = "forged";
      f.appendChild(c);
      document.body.appendChild(f);
      f.submit();
    }, `/ui/requests/${id}/approve`),
  ]);
  assert.equal(response.status(), 403);
  assert.match(await page.textContent("body"), /anti-forgery token/);
  assert.equal((await api(`/v1/approvals/${id}`)).status, "pending");
});

test("an admin manages people and agents; keys and links are shown once", async () => {
  const { context, page } = await personWithAuthenticator();
  await acceptInvitation(page, "ada@example.com", { name: "Ada Admin", is_admin: true });
  await page.getByRole("link", { name: "People" }).click();
  await page.getByLabel("Email").fill("sam@example.com");
  await page.getByLabel("Name", { exact: true }).fill("Sam");
  await page.getByRole("button", { name: "Create invitation link" }).click();
  const link = await page.locator("[data-secret]").textContent();
  assert.match(link, /\/ui\/invite\?token=[A-Za-z0-9_-]{43}$/);
  await page.getByRole("link", { name: "Done" }).click();
  await page.getByRole("cell", { name: "sam@example.com" }).first().waitFor();

  await page.getByRole("link", { name: "Agents" }).click();
  await page.getByLabel("Name").fill("mailer-bot");
  await page.getByLabel("Trust level").selectOption("restricted");
  await page.getByRole("button", { name: "Create agent" }).click();
  const row = page.locator("tr", { hasText: "mailer-bot" });
  await row.getByRole("button", { name: "New API key" }).click();
  const key = await page.locator("[data-secret]").textContent();
  assert.match(key, /^csk_/);
  const agents = await api("/v1/admin/agents");
  assert.equal(agents.agents.find((a) => a.name === "mailer-bot").trust_level, "restricted");
  await page.getByRole("link", { name: "Done" }).click();
  assert.doesNotMatch(await page.textContent("body"), new RegExp(key));

  await page.getByRole("link", { name: "Audit" }).click();
  await page.locator('[data-chain="ok"]').waitFor();

  // Policies: a group, a policy with a bad CEL condition (refused with the error), then a
  // good one, tried against a sample call without creating anything.
  await page.getByRole("link", { name: "Policies" }).click();
  await page.getByLabel("Id (optional; an existing id replaces that group)").fill("group_finance");
  await page.getByLabel("Name", { exact: true }).last().fill("Finance");
  await page.getByLabel(/Members: one per line/).fill("rita@example.com primary");
  await page.getByRole("button", { name: "Save group" }).click();
  await page.getByText('Group "Finance" saved.').waitFor();

  const policyForm = page.locator("form[action='/ui/admin/policies']");
  await policyForm.getByLabel("Name").fill("Approve refunds");
  await policyForm.getByLabel("Tool pattern (glob)").fill("payment_*");
  await policyForm.getByLabel("Condition (CEL, optional)").fill("args.amount > ");
  await page.locator("[data-condition-error]").waitFor();
  assert.match(await page.locator("[data-condition-error]").textContent(), /not valid CEL/);
  await policyForm.getByRole("button", { name: "Create policy" }).click();
  await page.locator("[data-policy-error]").waitFor();
  assert.match(await page.locator("[data-policy-error]").textContent(), /not valid CEL/);
  assert.equal((await api("/v1/guard/default/policies")).policies.length, 0);

  // The form kept what was typed; fix the condition.
  const form = page.locator("form[action='/ui/admin/policies']");
  assert.equal(await form.getByLabel("Tool pattern (glob)").inputValue(), "payment_*");
  await form.getByLabel("Condition (CEL, optional)").fill("args.amount > 100");
  await page.locator("[data-condition-ok]").waitFor();
  await form.getByLabel("Approval group").selectOption("group_finance");
  await form.getByRole("button", { name: "Create policy" }).click();
  await page.getByText('Policy "Approve refunds" created.').waitFor();

  await page.getByLabel("Tool call (JSON)").fill('{"name": "payment_refund", "arguments": {"amount": 500}}');
  await page.getByRole("button", { name: "Evaluate" }).click();
  await page.locator('[data-try-action="require_approval"]').waitFor();
  assert.match(await page.locator("#try-result").textContent(), /Approve refunds/);
  await page.getByLabel("Tool call (JSON)").fill('{"name": "payment_refund", "arguments": {"amount": 5}}');
  await page.getByRole("button", { name: "Evaluate" }).click();
  await page.locator('[data-try-action="allow"]').waitFor();
  const history = await api("/v1/approvals?status=all&limit=200");
  assert.ok(!history.approvals.some((a) => a.kind === "tool"), "trying created no request");
  await context.close();
});

test("a guard tool call routed to the reviewer's group shows its tool, arguments, risk, policy and group", async () => {
  const { page } = rita;
  await page.goto("/ui/queue");
  await page.waitForFunction(() => document.body.dataset.live === "on");
  const res = await fetch(`${base}/v1/guard/default/tool`, {
    method: "POST",
    headers: { Authorization: `Bearer ${agentKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      session_id: "session_123",
      tool_call: { name: "payment_refund", arguments: { amount: 500, customer_id: "cust_123" } },
      reason: "Customer says the order never arrived",
    }),
  });
  const decision = await res.json();
  assert.equal(decision.action, "require_approval", JSON.stringify(decision));
  const id = decision.approval_id;
  await page.locator(`li[data-request-id="${id}"]`).waitFor({ timeout: 10_000 });
  await page.locator(`li[data-request-id="${id}"] a`).click();
  await page.waitForURL(new RegExp(`/ui/requests/${id}`));
  const body = await page.textContent("body");
  assert.match(body, /payment_refund/);
  assert.match(body, /Customer says the order never arrived/);
  assert.match(body, /Approve refunds/);
  assert.match(await page.locator("[data-routing]").textContent(), /Finance/);
  assert.match(await page.locator("[data-arguments]").textContent(), /"customer_id": "cust_123"/);
  await page.getByRole("button", { name: "Approve" }).click();
  await page.locator('#decision [data-status="approved"]').waitFor();
  const view = await api(`/v1/guard/default/approvals/${id}`, { key: agentKey });
  assert.equal(view.status, "approved");
  assert.equal(view.decisions[0].channel, "dashboard");
});

test("a reviewer sees and ends their other sessions", async () => {
  const { page } = rita;
  const other = await browser.newContext({ baseURL: base });
  const link = await api("/v1/admin/sign-in-links", { method: "POST", body: { email: "rita@example.com" } });
  const otherPage = await other.newPage();
  await otherPage.goto(link.url);
  await otherPage.getByRole("button", { name: "Sign in" }).click();
  await otherPage.waitForURL(/\/ui\/queue/);

  await page.goto("/ui/account");
  assert.equal(await page.locator("tr[data-session]").count(), 2);
  await page.getByRole("button", { name: "Sign out all other sessions" }).click();
  await page.waitForURL(/done=revoked-others/);
  assert.equal(await page.locator("tr[data-session]").count(), 1);
  await otherPage.goto("/ui/queue");
  await otherPage.waitForURL(/\/ui\/sign-in/);
  await other.close();
});

test("every page works at phone size", async () => {
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    baseURL: base,
  });
  const link = await api("/v1/admin/sign-in-links", { method: "POST", body: { email: "rita@example.com" } });
  const page = await phone.newPage();
  await page.goto(link.url);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/ui\/queue/);
  const message = "Refund $120 to order #4411?";
  await authorize(agentKey, rita.userId, message, { order: 4411, amount: 120, currency: "USD" });
  const id = await approvalIdFor(ADMIN_KEY, message);
  await page.goto("/ui/queue");
  await page.locator(`li[data-request-id="${id}"]`).waitFor();
  await shot(page, "queue-phone.png");
  for (const path of ["/ui/queue", `/ui/requests/${id}`, "/ui/history", "/ui/account"]) {
    await page.goto(path);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - 390);
    assert.ok(overflow <= 1, `${path} scrolls sideways by ${overflow}px at 390 wide`);
  }
  await page.goto(`/ui/requests/${id}`);
  await shot(page, "request-phone.png");

  // The admin pages too, as the admin.
  const adminLink = await api("/v1/admin/sign-in-links", { method: "POST", body: { email: "ada@example.com" } });
  await page.goto(adminLink.url);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/ui\/queue/);
  for (const path of ["/ui/admin/users", "/ui/admin/agents", "/ui/admin/guard", "/ui/admin/notifications", "/ui/audit"]) {
    await page.goto(path);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - 390);
    assert.ok(overflow <= 1, `${path} scrolls sideways by ${overflow}px at 390 wide`);
  }
  await shot(page, "audit-phone.png");
  const manifest = await (await fetch(base + "/ui/manifest.webmanifest")).json();
  assert.equal(manifest.display, "standalone");
  assert.ok(manifest.icons.some((i) => i.sizes === "512x512"));
  await phone.close();

  // The README shows two of these.
  if (process.env.UPDATE_DOCS_SCREENSHOTS) {
    mkdirSync(join(root, "docs"), { recursive: true });
    copyFileSync(join(artifacts, "queue-desktop.png"), join(root, "docs", "dashboard-queue.png"));
    copyFileSync(join(artifacts, "request-desktop.png"), join(root, "docs", "dashboard-request.png"));
  }
});

/// An admin signed in with a one-time link, in a context of the given size.
async function signedInAdmin(email, viewport) {
  await api("/v1/admin/invitations", { method: "POST", body: { email, is_admin: true } });
  const link = await api("/v1/admin/sign-in-links", { method: "POST", body: { email } });
  const context = await browser.newContext({ viewport, baseURL: base, ...(viewport.width < 500 ? { isMobile: true, hasTouch: true } : {}) });
  const page = await context.newPage();
  page.on("pageerror", (e) => { page.__errors = (page.__errors || []).concat(String(e)); });
  await page.goto(link.url);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/ui\/queue/);
  return { context, page };
}

async function sidewaysOverflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

test("an admin sets up notifications on a phone; secrets are never shown again and test sends report back", async () => {
  const { context, page } = await signedInAdmin("nora@example.com", { width: 390, height: 844 });
  await page.getByRole("link", { name: "Notifications" }).click();
  await page.waitForURL(/\/ui\/admin\/notifications/);
  await page.getByRole("heading", { name: "Notifications", level: 1 }).waitFor();
  assert.ok(await sidewaysOverflow(page) <= 1, "the settings page scrolls sideways at 390 wide");
  // The Slack app manifest is built for this server.
  const manifest = JSON.parse(await page.locator("#slack-manifest").inputValue());
  assert.deepEqual(manifest.oauth_config.scopes.bot, ["chat:write", "chat:write.public", "users:read", "users:read.email", "im:write"]);
  assert.equal(manifest.settings.interactivity.is_enabled, true);
  assert.equal(manifest.settings.interactivity.request_url, `${base}/integrations/slack/default/interactivity`);
  assert.equal(await page.locator("[data-interactivity-url]").textContent(), manifest.settings.interactivity.request_url);
  await shot(page, "notifications-phone.png");

  // Email: a test send to a real SMTP server.
  const isTest = (m) => /Subject: Countersign test message/.test(m);
  const sent = smtp.messages().filter(isTest).length;
  await page.getByLabel("Send a test to").fill("ops@example.com");
  await page.getByRole("button", { name: "Send a test email" }).click();
  await page.locator('[data-test-result][data-delivered="true"]').waitFor();
  assert.match(await page.locator("[data-test-result]").textContent(), /Status 250/);
  assert.equal(smtp.messages().filter(isTest).length, sent + 1, "the test email arrived");

  // Slack: a bad channel is refused beside the form; then a good setup is saved.
  const slack = page.locator("form[action='/ui/admin/notifications/slack']");
  await slack.getByLabel(/Bot token/).fill("xoxb-e2e-secret-token");
  await slack.getByLabel(/Signing secret/).fill("e2e-signing-secret");
  await slack.getByLabel("Default channel").fill("not a channel!");
  await slack.getByRole("button", { name: "Save Slack settings" }).click();
  await page.locator('[data-notice="slack"]').waitFor();
  assert.match(await page.locator('[data-notice="slack"]').textContent(), /Slack channel id/);
  assert.equal(await slack.getByLabel("Default channel").inputValue(), "not a channel!");
  assert.equal(await slack.getByLabel(/Bot token/).inputValue(), "", "a typed secret is not sent back");
  await slack.getByLabel(/Bot token/).fill("xoxb-e2e-secret-token");
  await slack.getByLabel(/Signing secret/).fill("e2e-signing-secret");
  await slack.getByLabel("Default channel").fill("#approvals");
  await slack.getByRole("button", { name: "Save Slack settings" }).click();
  await page.getByText("Slack settings saved.").waitFor();
  await page.locator('[data-set="bot_token"]').waitFor();
  assert.equal(await slack.getByLabel(/Bot token/).inputValue(), "");
  assert.equal(await slack.getByLabel("Default channel").inputValue(), "#approvals");
  const html = await page.content();
  assert.doesNotMatch(html, /xoxb-e2e-secret-token|e2e-signing-secret/);
  assert.ok(await sidewaysOverflow(page) <= 1, "the saved settings page scrolls sideways");
  const channels = await api("/v1/admin/notification-channels");
  assert.equal(channels.slack.bot_token_set, true);
  assert.equal(channels.slack.channel, "#approvals");

  // Teams: the test reports its outcome, delivered or not.
  await page.getByRole("button", { name: "Send a test to Teams" }).click();
  await page.locator("#teams [data-test-result]").waitFor();
  assert.equal(await page.locator("#teams [data-test-result]").getAttribute("data-delivered"), "false", "Teams is not set up");

  // Slack is removed again, so the rest of the suite runs without it.
  await page.getByRole("button", { name: "Remove the Slack settings" }).click();
  await page.getByText("Slack settings removed.").waitFor();
  assert.deepEqual(page.__errors || [], []);
  await context.close();
});

test("an admin sees on the request page who was notified, and the log updates itself", async () => {
  const { context, page } = await signedInAdmin("nora@example.com", { width: 390, height: 844 });
  const message = "Wire $9,000 to Globex?";
  await authorize(agentKey, rita.userId, message, { amount: 9000, recipient: "Globex" });
  const id = await approvalIdFor(ADMIN_KEY, message);
  await page.goto(`/ui/requests/${id}`);
  await page.locator("[data-deliveries]").waitFor();
  // Delivered within moments; the log reloads itself while the request is open.
  const row = page.locator('[data-delivery][data-channel="email"]');
  await page.locator('[data-delivery][data-channel="email"][data-state="delivered"]').waitFor({ timeout: 15_000 });
  assert.match(await row.locator("[data-to]").textContent(), /rita@example\.com/);
  assert.equal((await row.locator("[data-status-code]").textContent()).trim(), "250");
  assert.match(await row.textContent(), /requested/);
  assert.ok(await sidewaysOverflow(page) <= 1, "the request page scrolls sideways with its log");
  await shot(page, "deliveries-phone.png");

  // The reviewer it was addressed to sees the same log.
  await rita.page.goto(`/ui/requests/${id}`);
  await rita.page.locator("[data-deliveries]").waitFor();
  assert.deepEqual(page.__errors || [], []);
  await context.close();
});

/// A webhook receiver on 127.0.0.1 that keeps every message it gets and answers 200.
async function startReceiver() {
  const got = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk) => { body += chunk; });
    req.on("end", () => {
      got.push({ headers: req.headers, body });
      res.writeHead(200);
      res.end();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}/hook`;
  return { url, got, close: () => new Promise((resolve) => server.close(resolve)) };
}

/// Whether a message carries a Standard Webhooks signature made with `secret`: base64 of
/// HMAC-SHA256 over `id.timestamp.body`, keyed with the secret's base64 part.
function signedWith(message, secret) {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const content = `${message.headers["webhook-id"]}.${message.headers["webhook-timestamp"]}.${message.body}`;
  const expected = "v1," + createHmac("sha256", key).update(content).digest("base64");
  return (message.headers["webhook-signature"] || "").split(" ").includes(expected);
}

test("an admin adds a webhook endpoint on a phone, sees its secret once and sends a signed test", async () => {
  const receiver = await startReceiver();
  const { context, page } = await signedInAdmin("wes@example.com", { width: 390, height: 844 });
  await page.goto("/ui/admin/notifications#webhooks");
  await page.getByRole("heading", { name: "Webhooks" }).waitFor();
  assert.ok(await sidewaysOverflow(page) <= 1, "the page scrolls sideways at 390 wide");

  const add = page.locator("form[action='/ui/admin/notifications/webhooks#webhooks']");
  await add.getByLabel("Endpoint URL").fill(receiver.url);
  await add.getByLabel("approval.requested").check();
  await add.getByLabel("approval.approved").check();
  await add.getByLabel("Description (optional)").fill("<b>Ops</b> hook");
  await add.getByRole("button", { name: "Add endpoint" }).click();

  // The secret, on the page that answers the form, once, and never in its address.
  await page.locator("[data-webhook-secret]").waitFor();
  const secret = (await page.locator("[data-webhook-secret]").textContent()).trim();
  assert.match(secret, /^whsec_[A-Za-z0-9+/]+=*$/);
  assert.equal((await page.content()).split(secret).length - 1, 1, "the secret is on the page once");
  assert.doesNotMatch(page.url(), /whsec_/);
  assert.ok(await sidewaysOverflow(page) <= 1, "the page with the secret scrolls sideways");
  await shot(page, "webhook-secret-phone.png");
  const hook = (await api("/v1/admin/webhooks")).webhooks.find((h) => h.url === receiver.url);
  assert.deepEqual(hook.events, ["approval.approved", "approval.requested"]);
  const card = page.locator(`[data-webhook="${hook.id}"]`);
  assert.equal(await card.locator("[data-webhook-description]").textContent(), "<b>Ops</b> hook");

  // A test event arrives at once, signed with that secret, and the page says how it went.
  await card.getByRole("button", { name: "Send a test" }).click();
  const result = page.locator(`[data-webhook="${hook.id}"] [data-test-result]`);
  await result.waitFor();
  assert.equal(await result.getAttribute("data-delivered"), "true");
  assert.match(await result.textContent(), /Status 200/);
  assert.equal(receiver.got.length, 1);
  assert.ok(signedWith(receiver.got[0], secret), "the test event is signed with the secret");
  assert.equal(JSON.parse(receiver.got[0].body).type, "webhook.test");
  assert.doesNotMatch(await page.content(), /whsec_/, "the secret is not shown again");
  assert.ok(await sidewaysOverflow(page) <= 1, "the page with the test outcome scrolls sideways");

  await page.goto("/ui/admin/notifications");
  assert.doesNotMatch(await page.content(), /whsec_/);

  // Deleted again (after a confirmation), so the rest of the suite sends no webhooks.
  await page.locator(`[data-webhook="${hook.id}"]`).getByRole("button", { name: "Delete…" }).click();
  await page.getByRole("button", { name: "Yes, delete this endpoint" }).click();
  await page.getByText("Webhook endpoint deleted.").waitFor();
  assert.equal((await api("/v1/admin/webhooks")).webhooks.length, 0);
  assert.deepEqual(page.__errors || [], []);
  await context.close();
  await receiver.close();
});
