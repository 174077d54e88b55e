// Perplexity with llama.cpp (through npm's node-llama-cpp), following
// llama-perplexity's protocol: BOS + text, chunks of CTX tokens with BOS first,
// second half of each chunk scored. F32 KV cache, no flash attention.
// Usage: node ppl.mjs MODEL TEXTFILE CTX
import {getLlama} from "node-llama-cpp";
import fs from "fs";

const [modelPath, textPath, ctxArg] = process.argv.slice(2);
const nCtx = parseInt(ctxArg);
const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath});
const tokens = [model.tokens.bos, ...model.tokenize(fs.readFileSync(textPath, "utf8"))];
const context = await model.createContext({
  contextSize: nCtx, batchSize: nCtx, threads: 2, flashAttention: false,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
const seq = context.getSequence();
const scoreOptions = {generateNext: {probabilities: true, options: {temperature: 1, topK: 0, topP: 1, minP: 0}}};
let nll = 0, count = 0;
const nChunks = Math.floor(tokens.length / nCtx);
for (let c = 0; c < nChunks; ++c) {
  const chunk = tokens.slice(c * nCtx, (c + 1) * nCtx);
  chunk[0] = model.tokens.bos;
  await seq.clearHistory();
  const first = nCtx / 2 - 1;
  const out = await seq.controlledEvaluate(chunk.map((t, i) => (i >= first && i < nCtx - 1 ? [t, scoreOptions] : t)));
  for (let i = first; i < nCtx - 1; ++i) {
    nll -= Math.log(out[i].next.probabilities.get(chunk[i + 1]) ?? 1e-30);
    ++count;
  }
}
console.log(`llama.cpp PPL ${Math.exp(nll / count).toFixed(4)} over ${count} tokens (${nChunks} chunks of ${nCtx})`);
process.exit(0);
