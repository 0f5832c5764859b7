// The SDKs' test harness, shared by every package: starts the real `countersign` binary on a
// free port with a temporary SQLite store, and creates, through the admin API, a reviewer, an
// agent and their keys.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..", "..");
export const binary = process.env.COUNTERSIGN_BIN || join(repo, "target", "debug", "countersign");

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

export interface TestServer {
  base: string;
  adminKey: string;
  agentKey: string;
  agentId: string;
  reviewerKey: string;
  reviewerId: string;
  reviewerEmail: string;
  executorKey: string;
  executorAudience: string;
  api<T = any>(path: string, options?: { method?: string; key?: string; body?: unknown }): Promise<T>;
  stop(): Promise<void>;
  log(): string;
}

export async function startServer(env: Record<string, string> = {}): Promise<TestServer> {
  if (!existsSync(binary)) throw new Error(`no countersign binary at ${binary}: build it or set COUNTERSIGN_BIN`);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dataDir = mkdtempSync(join(tmpdir(), "countersign-sdk-ts-"));
  const adminKey = `csk_sdk_test_admin_${randomBytes(16).toString("hex")}`;
  let log = "";
  const child: ChildProcess = spawn(binary, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir], {
    env: {
      // The server reads every COUNTERSIGN_* variable as configuration: pass none of ours.
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("COUNTERSIGN_"))),
      COUNTERSIGN_PUBLIC_URL: base,
      COUNTERSIGN_BOOTSTRAP_ADMIN_KEY: adminKey,
      COUNTERSIGN_DATABASE__SYNCHRONOUS: "normal",
      COUNTERSIGN_REQUESTS__SWEEP_INTERVAL_MS: "200",
      COUNTERSIGN_LOG__LEVEL: "warn",
      RUST_LOG: "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout!.on("data", (d) => (log += d));
  child.stderr!.on("data", (d) => (log += d));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited:\n${log}`);
    try {
      const r = await fetch(`${base}/readyz`);
      if (r.ok) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`the server did not become ready:\n${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }

  async function api<T = any>(path: string, options: { method?: string; key?: string; body?: unknown } = {}): Promise<T> {
    const res = await fetch(base + path, {
      method: options.method ?? (options.body === undefined ? "GET" : "POST"),
      headers: {
        Authorization: `Bearer ${options.key ?? adminKey}`,
        ...(options.body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${path} -> ${res.status}: ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  const reviewerEmail = "reviewer@example.com";
  const reviewer = await api("/v1/admin/users", { body: { email: reviewerEmail, name: "Rita Reviewer" } });
  const reviewerKey = (await api("/v1/admin/api-keys", { body: { role: "reviewer", user_id: reviewer.id } })).key;
  const agent = await api("/v1/admin/agents", { body: { name: "payments-bot", trust_level: "standard" } });
  const agentKey = (await api("/v1/admin/api-keys", { body: { role: "agent", agent_id: agent.id } })).key;
  const executorAudience = "https://payments.example.com";
  const executorKey = (await api("/v1/admin/api-keys", { body: { role: "executor", audiences: [executorAudience] } })).key;

  return {
    base,
    adminKey,
    agentKey,
    agentId: agent.id,
    reviewerKey,
    reviewerId: reviewer.id,
    reviewerEmail,
    executorKey,
    executorAudience,
    api,
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
