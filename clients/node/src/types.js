// JSDoc shapes of the routemesh.v1 messages as @grpc/proto-loader decodes them (camelCase fields,
// enums as names, int64 as Number; see LOADER_OPTIONS in protos.js). Only types, no code.

/**
 * @typedef {'system' | 'user' | 'assistant' | 'tool'} Role
 * @typedef {{role: Role, content: string, name?: string}} ChatMessage
 * @typedef {string | Array<string | ChatMessage>} Prompt  a user message, or a conversation oldest first
 */

/**
 * Per-request routing control (routemesh.v1.RoutingOptions); unset fields follow the policy.
 * @typedef {object} RoutingOptions
 * @property {string} [strategy]  hybrid, cost, latency, quality, ordered, weighted_random, round_robin, ...
 * @property {number} [maxCostUsd]
 * @property {number} [latencyTargetMs]
 * @property {boolean} [allowFallback]
 * @property {string} [provider]
 * @property {string[]} [requiredCapabilities]  "tools", "json", "vision"
 */

/**
 * @typedef {object} ChatOptions
 * @property {string} [model]  "auto" (default), a route name, or a model name to pin
 * @property {number} [maxTokens]  0 = the policy default
 * @property {Record<string, string>} [metadata]  request context the policy's rules and limits read (tenant, user, tier...)
 * @property {RoutingOptions} [routing]
 * @property {number} [temperature]
 * @property {string} [system]  a system message put before the prompt
 * @property {number} [timeoutMs]  deadline of the whole call; the client's default when unset
 * @property {AbortSignal} [signal]  aborting it cancels the call (and the provider request behind it)
 */

/**
 * @typedef {{inputTokens: number, outputTokens: number, estimated: boolean}} Usage
 * @typedef {object} Candidate
 * @property {string} model
 * @property {string} provider
 * @property {boolean} eligible
 * @property {number} rank  1-based plan position; 0 when rejected
 * @property {string} rejectionReason
 * @property {number} score
 * @property {number} estimatedCostUsd
 * @property {Record<string, number>} factors
 */

/**
 * @typedef {object} Decision
 * @property {string} decisionId
 * @property {string} model
 * @property {string} provider
 * @property {string} strategy
 * @property {string} reason
 * @property {string} route
 * @property {string[]} fallbacks
 * @property {number} policyVersion
 * @property {string} traceId
 * @property {string} rule
 * @property {string} experiment
 * @property {string} variant
 * @property {number} estimatedCostUsd
 * @property {boolean} budgetSoftLimited
 * @property {Candidate[]} candidates
 * @property {string[]} degraded
 */

/**
 * @typedef {object} Attempt
 * @property {string} model
 * @property {string} provider
 * @property {string} outcome  e.g. "ATTEMPT_OUTCOME_SUCCESS"
 * @property {number} httpStatus
 * @property {string} error
 * @property {number} ttftMs
 * @property {number} durationMs
 * @property {Usage} usage
 * @property {number} costUsd
 * @property {boolean} hedge
 * @property {number} tryNumber
 */

/**
 * @typedef {object} Final
 * @property {string} status  e.g. "FINISH_STATUS_COMPLETE"
 * @property {Usage} usage
 * @property {number} costUsd
 * @property {string} model
 * @property {string} provider
 * @property {Attempt[]} attempts
 * @property {string} decisionId
 * @property {string} traceId
 * @property {string} error
 * @property {string} experiment
 * @property {string} variant
 */

/**
 * One event of a chat stream: a decision first, then deltas, always a final last.
 * `status` is the final's status without its prefix ("COMPLETE", "LENGTH", "TRUNCATED_UPSTREAM", ...).
 * @typedef {{type: 'decision', decision: Decision}
 *   | {type: 'delta', text: string}
 *   | {type: 'final', final: Final, status: string}} ChatEvent
 */

/**
 * @typedef {object} ChatResult
 * @property {Decision} decision
 * @property {string} text  the whole answer
 * @property {Final} final
 * @property {string} status  as in ChatEvent
 * @property {number} deltas  how many delta events carried the text
 */

/** @typedef {{decision: Decision}} ExplainResponse */

export {};
