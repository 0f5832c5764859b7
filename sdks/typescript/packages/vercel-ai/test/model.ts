// A scripted AI SDK 6 model (`MockLanguageModelV3`): its first step calls one tool, its second
// answers with the tool results it was given, so tests see exactly what the model read.
import { MockLanguageModelV3 } from "ai/test";

const usage = {
  inputTokens: { total: 1, noCache: 1, cacheRead: undefined, cacheWrite: undefined },
  outputTokens: { total: 1, text: 1, reasoning: undefined },
};

export function scriptedModel(toolName: string, input: Record<string, unknown>, toolCallId: string) {
  const seen: unknown[] = [];
  const model = new MockLanguageModelV3({
    doGenerate: async (options) => {
      const results = options.prompt
        .filter((m) => m.role === "tool")
        .flatMap((m) => m.content)
        .filter((p) => p.type === "tool-result");
      if (results.length === 0) {
        return {
          content: [{ type: "tool-call", toolCallId, toolName, input: JSON.stringify(input) }],
          finishReason: { unified: "tool-calls", raw: "tool_calls" },
          usage,
          warnings: [],
        };
      }
      seen.push(...results.map((r) => (r as { output: unknown }).output));
      return {
        content: [{ type: "text", text: `done: ${JSON.stringify(seen)}` }],
        finishReason: { unified: "stop", raw: "stop" },
        usage,
        warnings: [],
      };
    },
  });
  return { model, seen };
}
