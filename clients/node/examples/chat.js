// Streams one prompt through routemesh: the decision and the final summary to stderr, the answer to stdout.
//   ROUTEMESH_ROUTER_ADDR=127.0.0.1:50051 node examples/chat.js "Write a haiku about gRPC"
import { RouterClient, RoutemeshError } from '../src/client.js';

const prompt = process.argv.slice(2).join(' ') || 'Translate into French: good morning';
const client = new RouterClient(process.env.ROUTEMESH_ROUTER_ADDR);
try {
  for await (const event of client.chat(prompt, { maxTokens: 128, metadata: { app: 'node-example' } })) {
    if (event.type === 'decision') {
      const { model, provider, strategy, reason } = event.decision;
      console.error(`decision: ${model} (${provider}) by ${strategy}: ${reason}`);
    } else if (event.type === 'delta') {
      process.stdout.write(event.text);
    } else {
      const { final } = event;
      console.error(`\nfinal: ${event.status} from ${final.model}, ${final.usage.inputTokens}+${final.usage.outputTokens} tokens,`
        + ` $${final.costUsd.toFixed(6)}, ${final.attempts.length} attempt(s)`);
    }
  }
} catch (error) {
  if (!(error instanceof RoutemeshError)) throw error;
  console.error(`error: ${error.message}${error.reason ? ` [${error.reason}]` : ''}`);
  process.exitCode = 1;
} finally {
  client.close();
}
