// RouterClient: chat() streams events, complete() collects a whole answer, explain() shows the decision.
import grpc from '@grpc/grpc-js';
import { RoutemeshError } from './errors.js';
import { DEFAULT_PROTO_DIR, loadRouterService } from './protos.js';

export { RoutemeshError, decodeStatusDetails } from './errors.js';
export { DEFAULT_PROTO_DIR } from './protos.js';

/** @typedef {import('./types.js').Prompt} Prompt */
/** @typedef {import('./types.js').ChatOptions} ChatOptions */
/** @typedef {import('./types.js').ChatEvent} ChatEvent */
/** @typedef {import('./types.js').ChatResult} ChatResult */
/** @typedef {import('./types.js').Decision} Decision */
/** @typedef {import('./types.js').Final} Final */
/** @typedef {import('./types.js').ExplainResponse} ExplainResponse */

export const DEFAULT_ADDRESS = '127.0.0.1:50051';
export const DEFAULT_TIMEOUT_MS = 120_000;

// The same channel policy as the Python client. A call is retried only on UNAVAILABLE and only before
// its first response: grpc-js commits a call once a message arrives, so a started answer is never
// replayed or duplicated. round_robin spreads calls over every address a DNS name resolves to
// (a headless Kubernetes Service, or compose's --scale).
export const SERVICE_CONFIG = Object.freeze({
  loadBalancingConfig: [{ round_robin: {} }],
  methodConfig: [{
    name: [{ service: 'routemesh.v1.RouterService' }],
    retryPolicy: {
      maxAttempts: 3, initialBackoff: '0.1s', maxBackoff: '1s', backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE'],
    },
  }],
});

// Keepalive notices a dead or frozen router within ~25 s even while a stream is idle; the servers
// accept pings every second, so 20 s never trips their ping-abuse limit.
export const CHANNEL_OPTIONS = Object.freeze({
  'grpc.service_config': JSON.stringify(SERVICE_CONFIG),
  'grpc.enable_retries': 1,
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
});

const ROLES = { system: 'ROLE_SYSTEM', user: 'ROLE_USER', assistant: 'ROLE_ASSISTANT', tool: 'ROLE_TOOL' };

/**
 * A prompt (or conversation) as routemesh.v1.Message objects.
 * @param {Prompt} prompt
 * @param {string} [system]
 */
export function toMessages(prompt, system) {
  const items = typeof prompt === 'string' ? [prompt] : prompt;
  if (!Array.isArray(items)) throw new TypeError('prompt must be a string or an array of messages');
  const messages = system ? [{ role: 'ROLE_SYSTEM', content: system, name: '' }] : [];
  for (const item of items) {
    if (typeof item === 'string') {
      messages.push({ role: 'ROLE_USER', content: item, name: '' });
      continue;
    }
    const role = ROLES[/** @type {keyof typeof ROLES} */ (item.role)];
    if (!role) throw new TypeError(`unknown role ${JSON.stringify(item.role)}: use ${Object.keys(ROLES).join(', ')}`);
    messages.push({ role, content: item.content, name: item.name ?? '' });
  }
  return messages;
}

/**
 * The routemesh.v1.ChatRequest for a prompt and options (ExplainRequest has the same fields but temperature).
 * @param {Prompt} prompt
 * @param {ChatOptions} options
 */
export function buildChatRequest(prompt, options = {}) {
  return {
    messages: toMessages(prompt, options.system),
    model: options.model ?? 'auto',
    maxTokens: options.maxTokens ?? 0,
    metadata: { ...options.metadata },
    temperature: options.temperature,
    routing: options.routing,
  };
}

/** @param {string} status  e.g. FINISH_STATUS_LENGTH → LENGTH */
const shortStatus = (status) => String(status).replace(/^FINISH_STATUS_/, '');

/**
 * @param {any} response  a decoded routemesh.v1.ChatResponse
 * @returns {ChatEvent}
 */
function toEvent(response) {
  switch (response.event) {
    case 'decision': return { type: 'decision', decision: response.decision };
    case 'delta': return { type: 'delta', text: response.delta.text };
    case 'final': return { type: 'final', final: response.final, status: shortStatus(response.final.status) };
    default: throw new RoutemeshError(grpc.status.INTERNAL, `unexpected chat event ${JSON.stringify(response.event)}`);
  }
}

/** A client of routemesh.v1.RouterService. Call close() when done. */
export class RouterClient {
  /** @type {any} */ #stub;
  /** @type {string} */ #apiKey;

  /**
   * @param {string} [address]  host:port, or any gRPC target ("dns:///router.routemesh:50051")
   * @param {object} [options]
   * @param {number} [options.timeoutMs]  default deadline of each call
   * @param {grpc.ChannelCredentials} [options.credentials]  insecure by default (the mesh speaks plaintext)
   * @param {grpc.ChannelOptions} [options.channelOptions]  merged over CHANNEL_OPTIONS
   * @param {string} [options.protoDir]  where routemesh/v1/*.proto live (default: the repository's protos/)
   * @param {string} [options.apiKey]  sent as "authorization: Bearer <key>" on every call, for a router that
   *   requires keys (default: $ROUTEMESH_API_KEY)
   */
  constructor(address = process.env.ROUTEMESH_ROUTER_ADDR || DEFAULT_ADDRESS, options = {}) {
    const RouterService = loadRouterService(options.protoDir ?? DEFAULT_PROTO_DIR);
    this.address = address;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#apiKey = (options.apiKey ?? process.env.ROUTEMESH_API_KEY ?? '').trim();
    this.#stub = new RouterService(address, options.credentials ?? grpc.credentials.createInsecure(),
      { ...CHANNEL_OPTIONS, ...options.channelOptions });
  }

  /** The call's metadata: the API key, when there is one. */
  #metadata() {
    const metadata = new grpc.Metadata();
    if (this.#apiKey) metadata.set('authorization', `Bearer ${this.#apiKey}`);
    return metadata;
  }

  /** @param {ChatOptions} options */
  #callOptions(options) {
    return { deadline: Date.now() + (options.timeoutMs ?? this.timeoutMs) };
  }

  /**
   * Streams a chat: one decision event, then delta events, then one final event.
   * Breaking out of the loop cancels the call. Errors before the answer starts throw RoutemeshError.
   * @param {Prompt} prompt
   * @param {ChatOptions} [options]
   * @returns {AsyncGenerator<ChatEvent, void, undefined>}
   */
  async *chat(prompt, options = {}) {
    const call = this.#stub.Chat(buildChatRequest(prompt, options), this.#metadata(), this.#callOptions(options));
    const cancel = () => call.cancel();
    options.signal?.addEventListener('abort', cancel, { once: true });
    if (options.signal?.aborted) cancel();
    let ended = false;
    let sawFinal = false;
    try {
      for await (const response of call) {
        const event = toEvent(response);
        sawFinal ||= event.type === 'final';
        yield event;
      }
      ended = true;
    } catch (error) {
      throw RoutemeshError.fromServiceError(error);
    } finally {
      options.signal?.removeEventListener('abort', cancel);
      // The caller stopped reading early (or an event was malformed): cancel so the router closes the
      // provider call too. After the stream ended this is a no-op.
      if (!ended) call.cancel();
    }
    if (!sawFinal) throw new RoutemeshError(grpc.status.DATA_LOSS, 'stream ended without a final event');
  }

  /**
   * Runs a chat to its end and returns the decision, the whole text and the final summary.
   * @param {Prompt} prompt
   * @param {ChatOptions} [options]
   * @returns {Promise<ChatResult>}
   */
  async complete(prompt, options = {}) {
    /** @type {Decision | undefined} */ let decision;
    /** @type {Final | undefined} */ let final;
    const parts = [];
    let status = '';
    for await (const event of this.chat(prompt, options)) {
      if (event.type === 'decision') decision = event.decision;
      else if (event.type === 'delta') parts.push(event.text);
      else ({ final, status } = event);
    }
    return { decision: /** @type {Decision} */ (decision), text: parts.join(''), final: /** @type {Final} */ (final),
      status, deltas: parts.length };
  }

  /**
   * The decision Chat would make for the same request, with every candidate, without executing it.
   * @param {Prompt} prompt
   * @param {ChatOptions} [options]  temperature is ignored
   * @returns {Promise<ExplainResponse>}
   */
  explain(prompt, options = {}) {
    const { temperature: _unused, ...request } = buildChatRequest(prompt, options);
    return new Promise((resolve, reject) => {
      const call = this.#stub.Explain(request, this.#metadata(), this.#callOptions(options),
        (/** @type {any} */ error, /** @type {ExplainResponse} */ response) => {
          options.signal?.removeEventListener('abort', cancel);
          if (error) reject(RoutemeshError.fromServiceError(error));
          else resolve(response);
        });
      const cancel = () => call.cancel();
      options.signal?.addEventListener('abort', cancel, { once: true });
      if (options.signal?.aborted) cancel();
    });
  }

  /** Closes the channel; calls in flight are cancelled. */
  close() {
    this.#stub.close();
  }
}
