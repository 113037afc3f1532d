// The official `openai` package for Node against `companion serve` (argv[2] is the base URL).
// Prints one JSON object with what each call returned; the Python test checks it.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "none" });
const ask = [{ role: "user", content: "Describe a lighthouse keeper as JSON with a name and an age." }];
const schema = {
  type: "object",
  properties: { name: { type: "string" }, age: { type: "integer" } },
  required: ["name", "age"],
  additionalProperties: false,
};
const out = { models: [], json: 0, schema: 0, schemaKeys: [], logprobs: null, streamed: "", errors: [] };

const models = await client.models.list();
for await (const m of models) out.models.push(m.id);

for (let seed = 0; seed < 20; seed++) {
  const a = await client.chat.completions.create({
    model: "companion-chat", messages: ask, seed, max_tokens: 120, response_format: { type: "json_object" },
  });
  try { if (typeof JSON.parse(a.choices[0].message.content) === "object") out.json++; } catch (e) { out.errors.push(String(e)); }
  const b = await client.chat.completions.create({
    model: "companion-chat", messages: ask, seed, max_tokens: 120,
    response_format: { type: "json_schema", json_schema: { name: "keeper", schema, strict: true } },
  });
  try {
    const v = JSON.parse(b.choices[0].message.content);
    if (typeof v.name === "string" && Number.isInteger(v.age)) out.schema++;
    out.schemaKeys = Object.keys(v);
  } catch (e) { out.errors.push(String(e)); }
}

const lp = await client.chat.completions.create({
  model: "companion-chat", messages: [{ role: "system", content: "Be brief." }, ...ask], seed: 1, max_tokens: 8,
  logprobs: true, top_logprobs: 2,
});
out.logprobs = lp.choices[0].logprobs.content.map((t) => [t.token, t.logprob, t.top_logprobs.length]);
out.completionTokens = lp.usage.completion_tokens;

const stream = await client.chat.completions.create({
  model: "companion-chat", messages: ask, seed: 4, max_tokens: 120, stream: true,
  response_format: { type: "json_object" },
});
for await (const chunk of stream) out.streamed += chunk.choices[0]?.delta?.content || "";

try {
  await client.chat.completions.create({ model: "companion-chat", messages: ask, tools: [{ type: "function", function: { name: "f" } }] });
} catch (e) { out.toolsStatus = e.status; out.toolsMessage = e.message; }

console.log(JSON.stringify(out));
