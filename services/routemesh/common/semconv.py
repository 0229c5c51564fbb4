"""Span and attribute names: OpenTelemetry semantic conventions first, routemesh.* for our own."""

# OpenTelemetry RPC conventions.
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"

# OpenTelemetry GenAI conventions (client spans of provider calls).
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"

# routemesh's own.
DECISION_ID = "routemesh.decision.id"
DECISION_MODEL = "routemesh.decision.model"
DECISION_PROVIDER = "routemesh.decision.provider"
DECISION_STRATEGY = "routemesh.decision.strategy"
DECISION_ROUTE = "routemesh.decision.route"
DECISION_RULE = "routemesh.decision.rule"
DECISION_REASON = "routemesh.decision.reason"
DECISION_FALLBACKS = "routemesh.decision.fallbacks"
DECISION_POLICY_VERSION = "routemesh.policy.version"
REQUEST_TASK_TYPE = "routemesh.request.task_type"
REQUEST_INPUT_TOKENS = "routemesh.request.input_tokens"
REQUEST_LANGUAGE = "routemesh.request.language"
REQUEST_COMPLEXITY = "routemesh.request.complexity"
FEATURES_SOURCE = "routemesh.features.source"
QUALITY_PREDICTOR = "routemesh.quality.predictor_sha256"  # the artifact that predicted per-model success
PREDICTED_SUCCESS = "routemesh.quality.predicted_success"  # of the chosen model, when it has a prediction
HEALTH_SOURCE = "routemesh.health.source"  # watch: pushed, read in-process; query: asked per request
HEALTH_AGE_MS = "routemesh.health.age_ms"  # how old the health snapshot the decision used was
FINISH_STATUS = "routemesh.finish.status"
COST_USD = "routemesh.cost.usd"
ATTEMPT_INDEX = "routemesh.attempt.index"
ATTEMPT_OUTCOME = "routemesh.attempt.outcome"
ATTEMPTS = "routemesh.attempts"
TTFT_MS = "routemesh.ttft_ms"

# Span names of the router's pipeline stages, in request order (RPC spans are named "package.Service/Method").
SPAN_CLASSIFY = "routemesh.classify"
SPAN_DECIDE = "routemesh.decide"
SPAN_ADMIT = "routemesh.admit"
SPAN_EXECUTE = "routemesh.execute"
SPAN_SETTLE = "routemesh.settle"
ROUTER_STAGES = (SPAN_CLASSIFY, SPAN_DECIDE, SPAN_ADMIT, SPAN_EXECUTE, SPAN_SETTLE)
SPAN_CHAT_PREFIX = "chat"  # provider call: "chat {model}", as the GenAI conventions name it
EXPERIMENT = "routemesh.experiment"
VARIANT = "routemesh.experiment.variant"
BUDGET_SOFT_LIMITED = "routemesh.budget.soft_limited"
ESTIMATED_COST_USD = "routemesh.cost.estimated_usd"
ATTEMPT_HEDGE = "routemesh.attempt.hedge"
ATTEMPT_TRY = "routemesh.attempt.try"
ADMISSION_SKIPPED = "routemesh.admission.skipped"  # models admission took out of the plan
ADMISSION_UNCHECKED = "routemesh.admission.unchecked"  # checks that failed open (rate_limits, budgets)
ADMISSION_RESERVED = "routemesh.admission.budget_reserved"
