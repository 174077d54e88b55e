// Greedy continuation with llama.cpp (through npm's node-llama-cpp).
// Usage: node greedy.mjs MODEL PROMPT [--f16-kv]   (default: F32 KV cache, no flash attention)
import {getLlama} from "node-llama-cpp";

const [modelPath, prompt, kvFlag] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath});
const f32 = kvFlag !== "--f16-kv";
const context = await model.createContext({
  contextSize: 128, batchSize: 128, threads: 2,
  ...(f32 ? {flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"} : {})});
const seq = context.getSequence();
const out = [];
for await (const t of seq.evaluate([model.tokens.bos, ...model.tokenize(prompt)], {temperature: 0})) {
  out.push(t);
  if (out.length >= 24) break;
}
console.log(JSON.stringify(model.detokenize(out)));
process.exit(0);
