// The Node client against a running router (ROUTEMESH_ROUTER_ADDR), plus the error decoding offline.
// tests/integration/test_node_client.py starts a mesh and runs this file with `node --test test/`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import grpc from '@grpc/grpc-js';
import { RouterClient, RoutemeshError, decodeStatusDetails } from '../src/client.js';
import { googleRpcTypes, loadRouterService } from '../src/protos.js';

describe('decodeStatusDetails', () => {
  test('decodes ErrorInfo, BadRequest and RetryInfo and ignores unknown details', () => {
    const root = googleRpcTypes();
    const pack = (/** @type {string} */ name, /** @type {object} */ value) => {
      const type = root.lookupType(name);
      return { type_url: `type.googleapis.com/${name}`, value: type.encode(type.fromObject(value)).finish() };
    };
    const Status = root.lookupType('google.rpc.Status');
    const bytes = Status.encode(Status.fromObject({
      code: grpc.status.RESOURCE_EXHAUSTED,
      message: 'slow down',
      details: [
        pack('google.rpc.ErrorInfo', { reason: 'RATE_LIMITED', domain: 'routemesh.dev', metadata: { tenant: 'acme' } }),
        pack('google.rpc.BadRequest', { fieldViolations: [{ field: 'metadata', description: 'bad' }] }),
        pack('google.rpc.RetryInfo', { retryDelay: { seconds: 1, nanos: 500_000_000 } }),
        { type_url: 'type.googleapis.com/example.Unknown', value: new Uint8Array([1, 2]) },
      ],
    })).finish();
    assert.deepEqual(decodeStatusDetails(bytes), {
      reason: 'RATE_LIMITED', domain: 'routemesh.dev', metadata: { tenant: 'acme' },
      fieldViolations: [{ field: 'metadata', description: 'bad' }], retryDelayMs: 1500,
    });
  });
});

describe('apiKey', () => {
  test('goes out as "authorization: Bearer <key>" on every call', async () => {
    // A stand-in server that only records what the client sends: the wire format is what is tested here.
    /** @type {unknown[]} */
    const seen = [];
    const server = new grpc.Server();
    server.addService(/** @type {any} */ (loadRouterService()).service, {
      Explain: (/** @type {any} */ call, /** @type {any} */ done) => {
        seen.push(call.metadata.get('authorization'));
        done({ code: grpc.status.UNAUTHENTICATED, details: 'recorded' });
      },
    });
    const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0',
      grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
    try {
      for (const apiKey of ['rmk_0123456789abcdef_secret', '']) {
        const client = new RouterClient(`127.0.0.1:${port}`, { apiKey, timeoutMs: 5_000 });
        await assert.rejects(client.explain('hi'), (error) => error instanceof RoutemeshError);
        client.close();
      }
    } finally {
      server.forceShutdown();
    }
    assert.deepEqual(seen, [['Bearer rmk_0123456789abcdef_secret'], []]);
  });
});

describe('RouterClient against ROUTEMESH_ROUTER_ADDR', () => {
  /** @type {RouterClient} */
  let client;

  before(() => {
    const address = process.env.ROUTEMESH_ROUTER_ADDR;
    assert.ok(address, 'set ROUTEMESH_ROUTER_ADDR to a running router (for example `routemesh up`: 127.0.0.1:50051)');
    client = new RouterClient(address, { timeoutMs: 20_000 });
  });

  after(() => client?.close());

  test('chat streams a decision, then deltas, then a final', async () => {
    const events = [];
    for await (const event of client.chat('Translate into French: good morning', { metadata: { app: 'node-test' } })) {
      events.push(event);
    }
    const types = events.map((e) => e.type);
    assert.equal(types[0], 'decision');
    assert.equal(types.at(-1), 'final');
    assert.ok(types.slice(1, -1).length > 0 && types.slice(1, -1).every((t) => t === 'delta'), types.join(','));
    const [first, last] = [events[0], events.at(-1)];
    assert.ok(first?.type === 'decision' && last?.type === 'final');
    assert.ok(['COMPLETE', 'LENGTH'].includes(last.status), last.status);
    assert.equal(last.final.status, `FINISH_STATUS_${last.status}`);
    assert.ok(first.decision.model, 'the decision names a model');
    assert.equal(last.final.decisionId, first.decision.decisionId);
    // The decision's model served it, or one of its fallbacks when that model failed (failover is allowed).
    assert.ok([first.decision.model, ...first.decision.fallbacks].includes(last.final.model), last.final.model);
    assert.ok(last.final.usage.outputTokens > 0);
  });

  test('complete collects the text; max_tokens ends it with LENGTH', async () => {
    const result = await client.complete('Tell me a long story about a lighthouse keeper.', { maxTokens: 5 });
    assert.equal(result.status, 'LENGTH');
    assert.ok(result.text.length > 0 && result.deltas > 0);
    assert.ok(result.final.usage.outputTokens > 0 && result.final.usage.outputTokens <= 5);
  });

  test('an unknown model is NOT_FOUND with reason UNKNOWN_MODEL and the field named', async () => {
    const error = await client.complete('hi', { model: 'no-such-model' }).then(
      () => assert.fail('expected an error'), (/** @type {unknown} */ e) => e);
    assert.ok(error instanceof RoutemeshError, String(error));
    assert.equal(error.code, grpc.status.NOT_FOUND);
    assert.equal(error.codeName, 'NOT_FOUND');
    assert.equal(error.reason, 'UNKNOWN_MODEL');
    assert.equal(error.domain, 'routemesh.dev');
    assert.match(error.metadata.models, /\w/);
    assert.deepEqual(error.fieldViolations.map((v) => v.field), ['model']);
  });

  test('explain returns the ranked candidates without executing', async () => {
    const { decision } = await client.explain('Summarize this memo: the meeting moved to Friday.');
    assert.ok(decision.model);
    assert.ok(decision.candidates.length > 0);
    const eligible = decision.candidates.filter((c) => c.eligible);
    assert.equal(eligible[0]?.model, decision.model);
    assert.deepEqual(eligible.map((c) => c.rank), eligible.map((_, i) => i + 1));
  });

  test('breaking out of a stream cancels it and the client stays usable', async () => {
    let seen = 0;
    for await (const _event of client.chat('Tell me a long story about the sea.', { maxTokens: 400 })) {
      if (++seen === 2) break;
    }
    assert.equal(seen, 2);
    const { decision } = await client.explain('hi');
    assert.ok(decision.decisionId);
  });
});
