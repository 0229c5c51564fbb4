// Errors from routemesh with their google.rpc details decoded (ErrorInfo, BadRequest, RetryInfo).
import grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { googleRpcTypes } from './protos.js';

const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, value]) => [value, name]));

/**
 * @typedef {object} FieldViolation
 * @property {string} field        the request field, e.g. "model" or "messages[0].role"
 * @property {string} description  what is wrong with it
 */

/** An error status from routemesh: `code`/`codeName` from gRPC, `reason` etc. from google.rpc details. */
export class RoutemeshError extends Error {
  /**
   * @param {number} code  a grpc.status value
   * @param {string} message  the status message
   * @param {object} [fields]
   * @param {string} [fields.reason]  stable UPPER_SNAKE reason, e.g. "UNKNOWN_MODEL"
   * @param {string} [fields.domain]  "routemesh.dev" for routemesh's own errors
   * @param {Record<string, string>} [fields.metadata]  ErrorInfo metadata
   * @param {FieldViolation[]} [fields.fieldViolations]  BadRequest field violations
   * @param {number} [fields.retryDelayMs]  RetryInfo delay, when the server sent one
   * @param {unknown} [fields.cause]  the underlying grpc-js error
   */
  constructor(code, message, { reason = '', domain = '', metadata = {}, fieldViolations = [], retryDelayMs, cause } = {}) {
    super(`${CODE_NAMES[code] ?? code}: ${message}`, { cause });
    this.name = 'RoutemeshError';
    /** @type {number} */ this.code = code;
    /** @type {string} */ this.codeName = CODE_NAMES[code] ?? String(code);
    /** @type {string} */ this.details = message;
    /** @type {string} */ this.reason = reason;
    /** @type {string} */ this.domain = domain;
    /** @type {Record<string, string>} */ this.metadata = metadata;
    /** @type {FieldViolation[]} */ this.fieldViolations = fieldViolations;
    /** @type {number | undefined} */ this.retryDelayMs = retryDelayMs;
  }

  /**
   * Wraps a grpc-js error, decoding the `grpc-status-details-bin` trailer when present.
   * @param {any} error  a grpc-js ServiceError (or anything thrown by a call)
   * @returns {RoutemeshError}
   */
  static fromServiceError(error) {
    if (error instanceof RoutemeshError) return error;
    if (typeof error?.code !== 'number') {
      return new RoutemeshError(grpc.status.UNKNOWN, String(error?.message ?? error), { cause: error });
    }
    const raw = error.metadata?.get?.('grpc-status-details-bin')?.[0];
    let fields = {};
    try {
      if (raw) fields = decodeStatusDetails(/** @type {Buffer} */ (raw));
    } catch {
      // A malformed trailer must not hide the status itself: keep code and message, drop the details.
    }
    return new RoutemeshError(error.code, error.details ?? error.message, { ...fields, cause: error });
  }
}

/**
 * The fields of a serialized google.rpc.Status that RoutemeshError carries; unknown detail types are ignored.
 * @param {Uint8Array} bytes
 */
export function decodeStatusDetails(bytes) {
  const root = googleRpcTypes();
  const status = /** @type {any} */ (root.lookupType('google.rpc.Status').decode(bytes));
  /** @type {{reason?: string, domain?: string, metadata?: Record<string, string>, fieldViolations?: FieldViolation[], retryDelayMs?: number}} */
  const fields = {};
  for (const any of status.details ?? []) {
    // protobufjs's bundled google/protobuf/any.proto keeps the proto field name (type_url).
    const typeUrl = String(any.type_url ?? any.typeUrl ?? '');
    const typeName = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
    const type = root.lookup(typeName);
    if (!(type instanceof protobuf.Type)) continue;
    const detail = /** @type {any} */ (type.toObject(type.decode(any.value), { longs: Number, defaults: true }));
    if (typeName === 'google.rpc.ErrorInfo') {
      Object.assign(fields, { reason: detail.reason, domain: detail.domain, metadata: detail.metadata ?? {} });
    } else if (typeName === 'google.rpc.BadRequest') {
      fields.fieldViolations = (detail.fieldViolations ?? []).map((/** @type {any} */ v) => ({ field: v.field, description: v.description }));
    } else if (typeName === 'google.rpc.RetryInfo' && detail.retryDelay) {
      fields.retryDelayMs = detail.retryDelay.seconds * 1000 + Math.round(detail.retryDelay.nanos / 1e6);
    }
  }
  return fields;
}
